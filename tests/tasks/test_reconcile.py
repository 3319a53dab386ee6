"""Reconciliation against the emulator, in both its dialects (real ccxt over HTTP): fills made while
the process was down are recorded, unsent orders rejected, our stray orders adopted."""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest

from brokers.base import Order, OrderType, Side
from brokers.factory import make_broker
from tasks.reconcile import NEVER_REACHED, reconcile
from tests.emulated_venue import SYMBOL, canary, start_emulator, use_emulator
from tradpal.config import Settings
from tradpal.ledger import Ledger, Provenance


@pytest.fixture(params=["binance", "bybit"])
def setup(request, monkeypatch, tmp_path):
    secret = canary()
    handle = start_emulator(secret, request.param)
    use_emulator(monkeypatch, handle, secret)
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield handle, ledger, make_broker(Settings(), quote="BTC")
    handle.stop()


def record(ledger: Ledger, venue: str, coid: str, status: str, quantity: float = 0.1) -> None:
    now = pd.Timestamp.now(tz="UTC")
    prov = Provenance()
    with ledger.transaction() as s:
        ledger.record_signals(s, pd.DataFrame([{"signal_id": f"sig-{coid}", "timestamp": now, "symbol": SYMBOL,
                                                "side": "buy", "order_type": "market", "quantity": quantity}]),
                              namespace="live", prov=prov)
        ledger.record_orders(s, pd.DataFrame([{"signal_id": f"sig-{coid}", "client_order_id": coid, "symbol": SYMBOL,
                                               "side": "buy", "order_type": "market", "quantity": quantity,
                                               "created_at": now, "status": status}]),
                             namespace="live", venue=venue, prov=prov)


def test_reconcile_catches_up_rejects_and_adopts(setup):
    handle, ledger, broker = setup

    async def scenario():
        async with broker:
            # filled at the venue while we were down; the ledger still says NEW
            await broker.place_order(Order(SYMBOL, Side.BUY, OrderType.MARKET, 0.1, "tp-filled-0"))
            record(ledger, broker.name, "tp-filled-0", "NEW")
            # created (or lost) but never received by the venue
            record(ledger, broker.name, "tp-unsent-0", "UNKNOWN")
            # ours, open at the venue, unknown to the ledger
            await broker.place_order(Order(SYMBOL, Side.BUY, OrderType.LIMIT, 1.0, "tp-stray-0", price=0.01))
            # not ours: left alone
            await broker.place_order(Order(SYMBOL, Side.BUY, OrderType.LIMIT, 1.0, "manual-1", price=0.01))
            first = await reconcile(ledger, broker)
            second = await reconcile(ledger, broker)
            return first, second

    first, second = asyncio.run(scenario())
    assert first.updated == ["tp-filled-0"] and first.rejected == ["tp-unsent-0"] and first.adopted == ["tp-stray-0"]
    assert first.fills == 1
    assert second.updated == second.rejected == second.adopted == [] and second.fills == 0  # idempotent
    orders = ledger.frame("orders").set_index("client_order_id")
    em = {o.client_order_id: o for o in handle.engine.orders.values()}
    assert orders.loc["tp-filled-0", "status"] == "FILLED"
    assert orders.loc["tp-filled-0", "filled_quantity"] == pytest.approx(float(em["tp-filled-0"].executed))
    fills = ledger.frame("fills")
    assert fills["trade_id"].tolist() == [str(t.trade_id) for t in em["tp-filled-0"].trades]
    assert orders.loc["tp-unsent-0", "status"] == "REJECTED" and orders.loc["tp-unsent-0", "reason"] == NEVER_REACHED
    assert orders.loc["tp-stray-0", "status"] == "NEW" and orders.loc["tp-stray-0", "quantity"] == pytest.approx(1.0)
    assert orders.loc["tp-stray-0", "broker_order_id"] == str(em["tp-stray-0"].order_id)
    assert "manual-1" not in orders.index
    signals = ledger.frame("signals").set_index("signal_id")
    assert signals.loc["adopted:tp-stray-0", "strategy"] == "adopted"
    assert signals.loc["adopted:tp-stray-0", "namespace"] == "live"
    audit = ledger.frame("audit_log")
    events = set(zip(audit["event"], audit["entity_id"], strict=True))
    assert {("order.reconciled", "tp-filled-0"), ("order.rejected", "tp-unsent-0"),
            ("order.adopted", "tp-stray-0")} <= events
    assert (audit["event"] == "reconcile.completed").sum() == 2
    rej = ledger.frame("rejections")
    assert rej["reason"].tolist() == [NEVER_REACHED] and rej["step"].tolist() == ["reconcile"]
