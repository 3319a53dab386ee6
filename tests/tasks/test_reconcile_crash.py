"""What reconciliation settles after a crash (real ccxt over HTTP to the emulator): an
order the placement answer left FILLED whose fills were never recorded, and a signal a
dead run left without an order."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pandas as pd
import pytest

from brokers.base import Order, OrderType, Side
from brokers.factory import make_broker
from tasks.reconcile import INTERRUPTED, ORPHAN_AFTER_S, reconcile
from tests.emulated_venue import SYMBOL, canary, start_emulator, use_emulator
from tradpal.config import Settings
from tradpal.ledger import Ledger, Provenance


@pytest.fixture
def setup(monkeypatch, tmp_path):
    secret = canary()
    handle = start_emulator(secret)
    use_emulator(monkeypatch, handle, secret)
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    for run in ("dead-run", "this-run"):
        ledger.start_run("live", {}, run_id=run)
    yield handle, ledger, make_broker(Settings(), quote="BTC")
    handle.stop()


def signal(ledger: Ledger, sid: str, *, age_s: float, run: str = "dead-run") -> None:
    at = pd.Timestamp.now(tz="UTC") - timedelta(seconds=age_s)
    with ledger.transaction() as s:
        ledger.record_signals(s, pd.DataFrame([{"signal_id": sid, "timestamp": at, "received_at": at, "symbol": SYMBOL,
                                                "side": "buy", "order_type": "market", "quantity": 0.1}]),
                              namespace="live", prov=Provenance(run_id=run))


def test_a_filled_answer_never_followed_up_gets_its_fills(setup):
    handle, ledger, broker = setup

    async def scenario():
        async with broker:
            placed = await broker.place_order(Order(SYMBOL, Side.BUY, OrderType.MARKET, 0.1, "tp-answered-0"))
            signal(ledger, "answered", age_s=0)
            with ledger.transaction() as s:  # what step 5 records from the answer; then the process died
                ledger.record_orders(s, pd.DataFrame([{
                    "signal_id": "answered", "client_order_id": "tp-answered-0", "symbol": SYMBOL, "side": "buy",
                    "order_type": "market", "quantity": 0.1, "created_at": pd.Timestamp.now(tz="UTC")}]),
                    namespace="live", venue=broker.name, prov=Provenance())
                ledger.update_orders(s, pd.DataFrame([{"client_order_id": "tp-answered-0", "status": "FILLED",
                                                       "broker_order_id": placed.order_id}]),
                                     venue=broker.name, prov=Provenance())
            return await reconcile(ledger, broker), await reconcile(ledger, broker)

    first, second = asyncio.run(scenario())
    assert placed_fills(handle) == ledger.frame("fills")["trade_id"].tolist()
    assert first.updated == ["tp-answered-0"] and first.fills == 1
    assert second.checked == 0  # followed up now (audited): not looked up again
    order = ledger.frame("orders").iloc[0]
    assert order["status"] == "FILLED" and order["filled_quantity"] == pytest.approx(0.1)


def placed_fills(handle) -> list[str]:
    return [str(t.trade_id) for t in handle.engine.trades]


def test_a_signal_left_without_an_order_by_a_dead_run_is_settled_as_interrupted(setup):
    handle, ledger, broker = setup
    signal(ledger, "orphan", age_s=ORPHAN_AFTER_S + 5)
    signal(ledger, "in-flight", age_s=0)  # another worker's, between its claim and its order
    signal(ledger, "mine", age_s=ORPHAN_AFTER_S + 5, run="this-run")

    async def scenario():
        async with broker:
            return await reconcile(ledger, broker, prov=Provenance(run_id="this-run"))

    report = asyncio.run(scenario())
    assert report.interrupted == ["orphan"]
    rejections = ledger.frame("rejections")
    assert rejections[["signal_id", "step", "reason"]].values.tolist() == [["orphan", "reconcile", INTERRUPTED]]
    audit = ledger.frame("audit_log")
    assert ("signal.interrupted", "orphan") in set(zip(audit["event"], audit["entity_id"], strict=True))
    assert handle.engine.orders == {}  # nothing was sent
