"""`live_execution` on a real Prefect API and the paper broker, without a risk file: a
signal's own bracket levels and time in force go through the flow (the event payload's
form) to the orders and legs in the ledger."""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest

from flows.live_execution import live_execution
from tasks.orders import client_order_id
from tradpal.ledger import Ledger


def signal(sid: str, **extra) -> dict:
    return {"timestamp": pd.Timestamp.now(tz="UTC").isoformat(), "symbol": "BTC/USDT", "side": "buy",
            "quantity": 0.1, "signal_id": sid, **extra}


def test_live_signal_levels_and_time_in_force_through_the_flow(prefect_api, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("TRADPAL_RISK_CONFIG", raising=False)
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    summary = asyncio.run(live_execution([
        signal("lv-1", stop_loss=47_000.0, take_profit=56_000.0, time_in_force="IOC"),
        signal("lv-2", order_type="limit", limit_price=49_000.0, time_in_force="FOK"),  # below the market: ends
        signal("lv-3", stop_loss=51_000.0),  # above the 50,000 reference: refused at step 1
    ], prices={"BTC/USDT": 50_000.0}, database_url=db))
    assert summary["n_fills"] == 1
    ledger = Ledger(db)
    try:
        orders = ledger.frame("orders").set_index("client_order_id")
        entry = orders.loc[client_order_id("lv-1")]
        assert (entry["time_in_force"], entry["status"]) == ("IOC", "FILLED")
        stop, target = orders.loc[client_order_id("lv-1", 1)], orders.loc[client_order_id("lv-1", 2)]
        assert (stop["order_type"], stop["stop_price"], stop["status"]) == ("stop", 47_000.0, "NEW")
        assert (target["order_type"], target["price"], target["status"]) == ("limit", pytest.approx(56_000.0), "NEW")
        fok = orders.loc[client_order_id("lv-2")]
        assert (fok["time_in_force"], fok["status"]) == ("FOK", "EXPIRED")
        rej = ledger.frame("rejections").set_index("signal_id")
        assert rej.loc["lv-3", "reason"] == ("stop_loss: the stop loss 51000 of a buy must be below its reference "
                                             "price 50000")
        audit = ledger.frame("audit_log")
        [opened] = audit.loc[audit["event"] == "bracket.opened", "payload"].tolist()
        assert opened["levels"]["stop_loss"]["source"] == "signal" and opened["native"] is True
    finally:
        ledger.close()
