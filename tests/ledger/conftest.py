from __future__ import annotations

import pytest

from tradpal.ledger import Ledger, Provenance


@pytest.fixture
def run_id(ledger: Ledger) -> str:
    return ledger.start_run("replay", {"test": True}, flow_run_id="flow-1")


@pytest.fixture
def prov(run_id: str) -> Provenance:
    return Provenance(run_id=run_id, flow_run_id="flow-1", task_run_id="task-1")
