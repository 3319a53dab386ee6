"""Flows for tests/deployments/test_warm_worker.py (a module the warm worker imports by
entrypoint, as it imports flows/live_execution.py)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from prefect import flow
from prefect.runtime import flow_run


@flow(name="warm-probe", persist_result=False)
async def warm_probe(out: str, fail: bool = False) -> None:
    """Write where it ran (pid, thread, its flow run id) to ``out``; raise when ``fail``."""
    Path(out).write_text(f"{os.getpid()} {threading.current_thread() is threading.main_thread()} {flow_run.id}")
    if fail:
        raise RuntimeError("asked to fail")


@flow(name="not-a-warm-one")
def plain() -> None:
    pass


not_a_flow = 42
