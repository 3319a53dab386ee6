"""A signal's own time in force and bracket levels through `live_execution` with the real
ccxt client against the exchange emulator (Binance dialect) over HTTP, on a real Prefect
API, without a risk file: IOC / FOK limits below the market end at the venue; a market buy
with its own stop and target gets an emulated bracket (two plain orders at the venue)."""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest

from flows.live_execution import live_execution
from tasks.orders import client_order_id
from tests.emulated_venue import SYMBOL, canary, start_emulator, use_emulator
from tradpal.ledger import Ledger


@pytest.fixture
def venue(monkeypatch):
    secret = canary()
    handle = start_emulator(secret)
    use_emulator(monkeypatch, handle, secret)
    monkeypatch.delenv("TRADPAL_RISK_CONFIG", raising=False)
    yield handle
    handle.stop()


def signal(sid: str, **extra) -> dict:
    return {"timestamp": pd.Timestamp.now(tz="UTC").isoformat(), "symbol": SYMBOL, "side": "buy",
            "quantity": 0.1, "signal_id": sid, **extra}


def test_time_in_force_and_signal_levels_at_the_emulated_venue(prefect_api, venue, tmp_path) -> None:
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    summary = asyncio.run(live_execution([
        signal("cx-ioc", order_type="limit", limit_price=0.09, time_in_force="IOC"),  # the market is ~0.0995
        signal("cx-fok", order_type="limit", limit_price=0.09, time_in_force="FOK"),
        signal("cx-br", stop_loss=0.09, take_profit=0.11),
    ], quote="BTC", database_url=db))
    assert summary["n_fills"] == 1
    venue_orders = {o.client_order_id: o for o in venue.engine.orders.values()}
    for sid, tif in (("cx-ioc", "IOC"), ("cx-fok", "FOK")):
        at_venue = venue_orders[client_order_id(sid)]
        assert (at_venue.tif, at_venue.status) == (tif, "EXPIRED")
    stop, target = venue_orders[client_order_id("cx-br", 1)], venue_orders[client_order_id("cx-br", 2)]
    assert (stop.side, stop.status, float(stop.stop_price)) == ("sell", "NEW", 0.09)
    assert (target.side, target.status, float(target.price)) == ("sell", "NEW", 0.11)
    ledger = Ledger(db)
    try:
        orders = ledger.frame("orders").set_index("client_order_id")
        assert orders.loc[[client_order_id("cx-ioc"), client_order_id("cx-fok")], "time_in_force"].tolist() == [
            "IOC", "FOK"]
        assert orders.loc[[client_order_id("cx-ioc"), client_order_id("cx-fok")], "status"].tolist() == [
            "EXPIRED", "EXPIRED"]
        audit = ledger.frame("audit_log")
        [opened] = audit.loc[audit["event"] == "bracket.opened", "payload"].tolist()
        assert opened["native"] is False and opened["levels"] == {
            "stop_loss": {"source": "signal", "rule": "price 0.09"},
            "take_profit": {"source": "signal", "rule": "price 0.11"}}
    finally:
        ledger.close()
