"""The invariant checker itself: it passes an agreeing ledger and venue, and names each
kind of breach (a checker that cannot fail proves nothing)."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.reliability.invariants import InvariantViolation, VenueBook, check
from tradpal.ledger import Ledger, Provenance

NOW = pd.Timestamp("2026-01-01T00:00:00Z")
PROV = Provenance(run_id="r1")


def venue_order(coid: str, order_id: int, status: str = "FILLED", qty: str = "1.00000000") -> dict:
    return {"clientOrderId": coid, "orderId": order_id, "status": status, "origQty": "1.00000000",
            "executedQty": qty, "symbol": "ETH/BTC"}


def venue_trade(trade_id: int, order_id: int) -> dict:
    return {"id": trade_id, "orderId": order_id, "qty": "1.00000000", "price": "0.05000000", "symbol": "ETH/BTC"}


@pytest.fixture
def ledger(tmp_path):
    led = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    led.start_run("live", {}, run_id="r1")
    with led.transaction() as s:
        led.record_signals(s, pd.DataFrame({"signal_id": ["a", "b"], "timestamp": [NOW, NOW], "symbol": "ETH/BTC",
                                            "side": "buy", "order_type": "market", "quantity": 1.0}),
                           namespace="live", prov=PROV)
        led.record_orders(s, pd.DataFrame({"signal_id": ["a"], "client_order_id": ["tp-a-0"], "symbol": "ETH/BTC",
                                           "side": "buy", "order_type": "market", "quantity": 1.0,
                                           "created_at": NOW}), namespace="live", venue="v", prov=PROV)
        led.update_orders(s, pd.DataFrame({"client_order_id": ["tp-a-0"], "broker_order_id": ["1001"],
                                           "status": ["FILLED"], "filled_quantity": [1.0]}), venue="v", prov=PROV)
        led.record_fills(s, pd.DataFrame({"client_order_id": ["tp-a-0"], "trade_id": ["5001"], "timestamp": [NOW],
                                          "symbol": "ETH/BTC", "side": "buy", "quantity": [1.0], "price": [0.05]}),
                         venue="v", prov=PROV)
        led.record_rejections(s, pd.DataFrame({"signal_id": ["b"], "step": ["pre_checks"],
                                               "reason": ["insufficient funds"]}), namespace="live", prov=PROV)
    yield led
    led.close()


def good_book() -> VenueBook:
    return VenueBook([venue_order("tp-a-0", 1001)], [venue_trade(5001, 1001)], {"orders": 1})


def test_an_agreeing_ledger_passes_with_its_outcomes(ledger):
    outcomes = check(ledger, good_book(), expect_signals={"a", "b"})
    assert outcomes["filled"] == 1 and outcomes["rejected"] == 1 and outcomes["fills"] == 1


@pytest.mark.parametrize(("book", "expect", "breach"), [
    (VenueBook([venue_order("tp-a-0", 1001), venue_order("tp-a-0", 1002)], [venue_trade(5001, 1001)],
               {"orders": 2}), None, "placed 2 times"),
    (VenueBook([venue_order("tp-a-0", 1001, "PARTIALLY_FILLED", "0.50000000")], [venue_trade(5001, 1001)],
               {"orders": 1}), None, "ledger FILLED, venue PARTIALLY_FILLED"),
    (VenueBook([venue_order("tp-a-0", 1001), venue_order("tp-x-0", 1003)], [venue_trade(5001, 1001)],
               {"orders": 2}), None, "tp-x-0 (FILLED) is missing from the ledger"),
    (VenueBook([venue_order("tp-a-0", 1001)], [venue_trade(5001, 1001), venue_trade(5002, 1001)],
               {"orders": 1}), None, "missing from the ledger ['5002']"),
    (VenueBook([], [], {"orders": 0}), None, "the venue never had it"),
    (good_book(), {"a", "b", "lost"}, "signal lost: no order and no rejection"),
])
def test_each_breach_is_named(ledger, book, expect, breach):
    with pytest.raises(InvariantViolation) as found:
        check(ledger, book, expect_signals=expect or {"a", "b"})
    assert breach in str(found.value)
