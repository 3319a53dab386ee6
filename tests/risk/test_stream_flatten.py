"""The loss-limit breaker with ``flatten`` in streaming live mode (`tradpal live run`): the
flatten sells the pipeline raises itself go back into the stream's queue (the flow's
``on_batch``) and through the eight steps like any signal, on a real Prefect API.

Paper broker at BTC/USDT 50,000 with its default 0.1 % taker fee: buying 0.1 BTC (5,000)
costs 5 in fees, so equity is 9,995, 0.05 % below the starting 10,000 — past a loss
limit of 0.01 %. The breaker trips at step 7 of that batch; with ``flatten: true`` a
market sell of the 0.1 held is queued, runs as the next batch (sells reduce risk: the
halt lets them through) and fills. A buy sent after that is refused by the halt."""

from __future__ import annotations

import asyncio
import os
import signal as signals
import time

import pandas as pd
import pytest

from tradpal.ledger import Ledger

RISK = """portfolio: {max_drawdown: 0.5, max_daily_loss: 0.5, max_gross_exposure: 2}
breakers: {loss_limit: {threshold: 0.0001, flatten: true}}
"""


def signal(sid: str, side: str = "buy", qty: float = 0.1) -> dict:
    return {"timestamp": pd.Timestamp.now(tz="UTC").isoformat(), "symbol": "BTC/USDT", "side": side,
            "quantity": qty, "signal_id": sid}


def flatten_orders(db: str) -> pd.DataFrame:
    ledger = Ledger(db)
    try:
        orders, sigs = ledger.frame("orders"), ledger.frame("signals")
    finally:
        ledger.close()
    flat = sigs.loc[sigs["signal_id"].str.startswith("flatten:"), ["id", "signal_id", "strategy", "side", "quantity"]]
    return flat.merge(orders[["signal_pk", "client_order_id", "status", "filled_quantity"]], left_on="id",
                      right_on="signal_pk", how="left")


def test_a_loss_limit_flatten_in_the_stream_sells_the_position_through_the_queue(
        prefect_api, tmp_path, monkeypatch) -> None:
    import httpx

    from tests.conftest import start_live_stream

    (tmp_path / "risk.yaml").write_text(RISK)
    monkeypatch.setenv("TRADPAL_RISK_CONFIG", str(tmp_path / "risk.yaml"))
    db = f"sqlite:///{tmp_path / 'ledger.db'}"

    async def go():
        run, url = await start_live_stream(tmp_path, db)
        try:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                buy = await client.post("/signals", json=signal("fl-buy"))
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:  # the flatten runs as a batch of its own, after the buy's
                    flat = await asyncio.to_thread(flatten_orders, db)
                    if len(flat) and (flat["status"] == "FILLED").all():
                        break
                    assert not run.done(), run.result()
                    await asyncio.sleep(0.2)
                after = await client.post("/signals", json=signal("fl-after"))
        finally:
            os.kill(os.getpid(), signals.SIGTERM)  # the flow's handler: drain and complete
        return buy, after, await run

    buy, after, summary = asyncio.run(go())
    assert buy.json()["results"][0]["status"] == "FILLED"
    flat = flatten_orders(db)
    assert len(flat) == 1, flat
    row = flat.iloc[0]
    assert row["signal_id"].startswith("flatten:BTC/USDT:") and row["strategy"] == "risk-flatten"
    assert (row["side"], row["quantity"], row["status"], row["filled_quantity"]) == ("sell", 0.1, "FILLED", 0.1)
    refused = after.json()["results"][0]
    assert refused["status"] == "REJECTED" and refused["step"] == "pre_checks" and "loss_limit" in refused["reason"]
    assert summary["ok"] and summary["n_fills"] == 2 and summary["acked"] == 2  # the buy and the flatten
    ledger = Ledger(db)
    try:
        audit = ledger.frame("audit_log")
        assert audit.loc[audit["event"] == "risk.flatten", "entity_id"].tolist() == [row["signal_id"]]
        positions = ledger.frame("positions")
        last = positions[positions["symbol"] == "BTC/USDT"].iloc[-1]
        assert last["quantity"] == pytest.approx(0.0, abs=1e-12)
        assert [b["name"] for b in ledger.active_breakers()] == ["loss_limit"]
    finally:
        ledger.close()


def test_a_flatten_raised_while_the_stream_drains_is_still_ordered(prefect_api, tmp_path, monkeypatch) -> None:
    import httpx

    from tests.conftest import start_live_stream

    (tmp_path / "risk.yaml").write_text(RISK)
    monkeypatch.setenv("TRADPAL_RISK_CONFIG", str(tmp_path / "risk.yaml"))
    db = f"sqlite:///{tmp_path / 'ledger.db'}"

    async def go():
        run, url = await start_live_stream(tmp_path, db)
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            buy = await client.post("/signals", json=signal("dr-buy"))
        os.kill(os.getpid(), signals.SIGTERM)  # at once: the buy's steps 6-8 (the trip) run during the drain
        return buy, await run

    buy, summary = asyncio.run(go())
    assert buy.json()["results"][0]["status"] == "FILLED" and summary["ok"]
    ledger = Ledger(db)
    try:
        audit = ledger.frame("audit_log")
        raised = audit.loc[audit["event"] == "risk.flatten", "entity_id"].tolist()
    finally:
        ledger.close()
    assert len(raised) == 1  # the breaker tripped and asked for the flatten
    flat = flatten_orders(db)
    assert len(flat) == 1 and flat["status"].tolist() == ["FILLED"]
