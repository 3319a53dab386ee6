"""Streaming live mode on a real Prefect API: one long-lived flow run serves the HTTP intake,
each batch of signals goes through the eight steps as task runs named after the signal,
and SIGTERM drains and completes the run."""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import pandas as pd

from tests.conftest import poll, start_live_stream
from tradpal.ledger import Ledger


def test_signals_over_http_through_one_long_lived_flow_run(prefect_api, prefect_client, tmp_path):
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    now = pd.Timestamp.now(tz="UTC").isoformat()

    async def go():
        run, url = await start_live_stream(tmp_path, db)
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            one = await client.post("/signals", json={"timestamp": now, "symbol": "BTC/USDT", "side": "buy",
                                                      "quantity": 0.1, "signal_id": "st-1", "strategy": "mom"})
            many = await client.post("/signals", json=[
                {"symbol": "BTC/USDT", "side": "buy", "quantity": 0.01, "signal_id": "st-2"},
                {"symbol": "BTC/USDT", "side": "buy", "quantity": 5, "signal_id": "st-big"}])
            bad = await client.post("/signals", json={"symbol": "BTC/USDT", "side": "hold", "quantity": 1})
            again = await client.post("/signals", json={"symbol": "BTC/USDT", "side": "buy", "quantity": 0.1,
                                                        "signal_id": "st-1"})
        os.kill(os.getpid(), signal.SIGTERM)  # the flow's handler: drain and complete
        return one, many, bad, again, await run

    one, many, bad, again, summary = asyncio.run(go())
    assert one.status_code == 202
    (r1,) = one.json()["results"]
    assert r1["accepted"] and r1["status"] == "FILLED" and r1["order_id"].startswith("paper")
    r2, big = many.json()["results"]
    assert r2["status"] == "FILLED"
    assert big["status"] == "REJECTED" and big["step"] == "pre_checks" and "insufficient funds" in big["reason"]
    assert bad.status_code == 400 and "side" in bad.json()["error"]
    assert again.json()["results"][0]["status"] == "REJECTED" and "already received" in again.json()["results"][0]["reason"]
    assert summary["ok"] and summary["acked"] == 2 and summary["rejected"] == 2 and summary["n_fills"] == 2

    ledger = Ledger(db)
    runs = ledger.frame("runs")
    run = runs[runs["id"] == summary["run_id"]].iloc[0]
    assert run["status"] == "completed"
    orders = ledger.frame("orders", run_id=summary["run_id"])
    assert orders["flow_run_id"].nunique() == 1 and orders["task_run_id"].notna().all()

    flow_run_id = run["flow_run_id"]

    async def states(client):
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        fr = await client.read_flow_run(flow_run_id)
        tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[fr.id])))
        return fr, tasks

    async def artifacts(client):
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        return await client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))

    by_key = {a.key: a for a in prefect_client(artifacts)}
    assert {"live-stream-summary", "live-stream-executions", "live-stream-risk-checks"} <= set(by_key)
    assert "st-big" not in str(by_key["live-stream-executions"].data)
    assert "insufficient funds" in str(by_key["live-stream-risk-checks"].data)

    def in_(tasks) -> bool:
        names = {t.name for t in tasks}
        return any(n.startswith("5-placement [st-1 mom BTC/USDT]") for n in names) and \
            any("st-2 live BTC/USDT; st-big live BTC/USDT" in n for n in names)

    # task runs reach the API as events, recorded a moment after the flow run's Completed
    fr, tasks = poll(lambda: prefect_client(states), lambda got: in_(got[1]))
    assert fr.state.is_completed()
    names = {t.name for t in tasks}
    assert any(n.startswith("5-placement [st-1 mom BTC/USDT]") for n in names), sorted(names)
    assert any("st-2 live BTC/USDT; st-big live BTC/USDT" in n for n in names), sorted(names)
