"""An event-like live run (one signal, its own reference price): the flow run and every
task run are named after the signal id, strategy and symbol."""

from __future__ import annotations

import asyncio
import time

import pandas as pd

from flows.live_execution import live_execution
from tradpal.ledger import Ledger


def test_one_signal_run_is_named_after_the_signal(prefect_api, prefect_client, tmp_path):
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )

    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    signal = {"timestamp": pd.Timestamp.now(tz="UTC").isoformat(), "symbol": "BTC/USDT", "side": "buy",
              "quantity": 0.01, "signal_id": "sig-name-1", "strategy": "momo", "reference_price": 100.0}
    summary = asyncio.run(live_execution([signal], database_url=db))  # no prices: the signal's own
    assert summary["n_fills"] == 1
    flow_run_id = Ledger(db).get_run(summary["run_id"])["flow_run_id"]
    [run] = prefect_client(lambda c: c.read_flow_runs(flow_run_filter=FlowRunFilter(
        id=FlowRunFilterId(any_=[flow_run_id]))))
    assert run.name == "live sig-name-1 momo BTC/USDT"
    steps: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # task runs reach the API through events: poll
        tasks = prefect_client(lambda c: c.read_task_runs(task_run_filter=TaskRunFilter(
            flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id]))))
        steps = sorted(t.name for t in tasks if t.name[0] in "12345678")
        if len(steps) == 8 and all("[" in n for n in steps):
            break
        time.sleep(0.5)
    assert len(steps) == 8 and all(n.endswith("[sig-name-1 momo BTC/USDT]") for n in steps), steps
