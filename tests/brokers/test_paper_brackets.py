"""Paper broker, native brackets: a protective stop and a target attached to a buy entry,
as an OCO pair, optionally trailing; in replay (bars) and live (set_price).

Entries are market buys placed at T0, filled at the t(1) open (fees 0); the legs are
eligible from t(2)."""

from __future__ import annotations

import asyncio

import pytest

from brokers.base.errors import InvalidOrderError
from brokers.base.types import OrderStatus, OrderType, Side
from brokers.paper import PaperBroker
from tests.brokers.helpers import SYM, market, order, replay_broker, t

approx = pytest.approx
BUY = Side.BUY


def fixed(stop: float | None, target: float | None):
    return lambda entry: (stop, target)


def percent(stop_pct: float, target_pct: float):
    return lambda entry: (entry * (1 - stop_pct), entry * (1 + target_pct))


async def _bracket(broker, clock, levels, until, trailing=False):
    entry = await broker.place_order(market(BUY, 2.0, "e"))
    broker.attach_bracket(entry.order_id, SYM, levels=levels, stop_client_order_id="e-1",
                          target_client_order_id="e-2", trailing=trailing)
    await clock.sleep_until(until)
    stop = await broker.get_order_by_client_id("e-1", SYM)
    target = await broker.get_order_by_client_id("e-2", SYM)
    return stop, target


def run_bracket(rows, levels, trailing=False, **kw):
    broker, clock = replay_broker(rows, taker_fee=0.0, maker_fee=0.0, **kw)
    stop, target = asyncio.run(_bracket(broker, clock, levels, t(len(rows)), trailing))
    return broker, stop, target


def test_the_stop_fills_and_cancels_the_target() -> None:
    # entry 2 @ 100 (t1 open); stop 95 / target 110: t3's low 94 hits the stop at 95
    broker, stop, target = run_bracket([(100, 101, 99, 100), (100, 102, 98, 99), (99, 100, 94, 96)],
                                       fixed(95.0, 110.0))
    assert (stop.status, stop.executed_quantity, stop.executed_price) == (OrderStatus.FILLED, 2.0, 95.0)
    assert target.status is OrderStatus.CANCELED and "OCO: the other leg e-1 filled" in target.reason
    assert broker.position(SYM) == 0.0
    assert broker.cash == approx(10_000 - 200 + 190)


def test_the_target_fills_and_cancels_the_stop() -> None:
    broker, stop, target = run_bracket([(100, 101, 99, 100), (104, 111, 103, 108), (90, 90, 80, 85)],
                                       percent(0.05, 0.10))
    assert (target.status, target.executed_price, target.fills[0].is_maker) == (OrderStatus.FILLED, approx(110.0), True)
    assert target.timestamp == t(2)
    assert stop.status is OrderStatus.CANCELED and "e-2 filled" in stop.reason
    assert broker.position(SYM) == 0.0


def test_both_legs_reached_on_one_bar_the_stop_wins() -> None:
    # t2 spans 80..120: both 95 and 110 are inside; the order within the bar is unknown
    broker, stop, target = run_bracket([(100, 101, 99, 100), (100, 120, 80, 100)], fixed(95.0, 110.0))
    assert (stop.status, stop.executed_price) == (OrderStatus.FILLED, 95.0)
    assert target.status is OrderStatus.CANCELED


def test_legs_are_not_eligible_on_the_entry_bar() -> None:
    # the entry fills at the t1 open; t1's low 90 would hit the stop but the legs start at t2
    _, stop, target = run_bracket([(100, 101, 90, 100), (100, 101, 99, 100)], fixed(95.0, 110.0))
    assert stop.status is OrderStatus.NEW and target.status is OrderStatus.NEW
    assert stop.timestamp == t(1)


def test_a_gap_through_the_stop_fills_at_the_open() -> None:
    _, stop, _ = run_bracket([(100, 101, 99, 100), (90, 91, 85, 88)], fixed(95.0, 110.0))
    assert stop.executed_price == 90.0


def test_trailing_stop_follows_the_high_and_triggers() -> None:
    # entry 100, stop 95 (distance 5): 95 on t2; t2's high 108 lifts it to 103 from t3,
    # t3's high 112 to 107 from t4; t5's low 106 reaches 107: filled at 107.
    rows = [(100, 101, 99, 100), (101, 108, 100, 107), (107, 112, 104, 111), (110, 111, 108, 109),
            (109, 110, 106, 107)]
    broker, stop, target = run_bracket(rows, fixed(95.0, None), trailing=True)
    assert (stop.status, stop.executed_price, stop.timestamp) == (OrderStatus.FILLED, approx(107.0), t(5))
    assert target is None
    assert broker.cash == approx(10_000 - 200 + 214)


def test_trailing_stop_never_moves_down_and_respects_the_bar_order() -> None:
    # t2 rises to 108 and falls to 100 in the same bar: the stop (still 96 on t2) holds;
    # it is 103 from t3, whose low 102 reaches it
    rows = [(100, 101, 99, 100), (101, 108, 100, 104), (104, 104, 102, 103)]
    _, stop, _ = run_bracket(rows, fixed(95.0, None), trailing=True)
    assert (stop.executed_price, stop.timestamp) == (approx(103.0), t(3))


def test_cancelling_one_leg_cancels_the_pair() -> None:
    async def go():
        broker, clock = replay_broker([(100, 101, 99, 100), (100, 101, 99, 100)], taker_fee=0.0)
        stop, target = await _bracket(broker, clock, fixed(95.0, 110.0), t(2))
        await broker.cancel_order(stop.order_id, SYM)
        return await broker.get_order_status(target.order_id, SYM)

    target = asyncio.run(go())
    assert target.status is OrderStatus.CANCELED and "e-1 was canceled" in target.reason


def test_attaching_twice_places_the_legs_once() -> None:
    async def go():
        broker, clock = replay_broker([(100, 101, 99, 100), (100, 101, 99, 100)], taker_fee=0.0)
        stop, _ = await _bracket(broker, clock, fixed(95.0, 110.0), t(2))
        entry = await broker.get_order_by_client_id("e", SYM)
        broker.attach_bracket(entry.order_id, SYM, levels=fixed(90.0, 120.0), stop_client_order_id="e-1",
                              target_client_order_id="e-2")
        return stop, await broker.get_order_by_client_id("e-1", SYM)

    stop, again = asyncio.run(go())
    assert (again.order_id, again.status) == (stop.order_id, OrderStatus.NEW)


def test_an_entry_that_never_fills_places_no_legs() -> None:
    async def go():
        broker, clock = replay_broker([(100, 101, 99, 100)], taker_fee=0.0)
        entry = await broker.place_order(order(BUY, OrderType.LIMIT, 1.0, "e", price=50.0))
        broker.attach_bracket(entry.order_id, SYM, levels=fixed(45.0, 60.0), stop_client_order_id="e-1",
                              target_client_order_id="e-2")
        await broker.cancel_order(entry.order_id, SYM)
        return await broker.get_order_by_client_id("e-1", SYM)

    assert asyncio.run(go()) is None


def test_a_broker_without_native_brackets_refuses_them() -> None:
    broker, clock = replay_broker([(100, 101, 99, 100)], native_brackets=False)
    assert broker.supports_brackets is False
    with pytest.raises(InvalidOrderError, match="not supported natively"):
        asyncio.run(_bracket(broker, clock, fixed(95.0, 110.0), t(1)))


def test_live_bracket_target_then_trailing() -> None:
    broker = PaperBroker(cash=1_000.0, taker_fee=0.0, maker_fee=0.0)
    broker.set_price(SYM, 100.0)

    async def go():
        entry = await broker.place_order(market(BUY, 1.0, "e", at=None))
        broker.attach_bracket(entry.order_id, SYM, levels=fixed(95.0, 110.0), stop_client_order_id="e-1",
                              target_client_order_id="e-2", trailing=True)
        broker.set_price(SYM, 105.0)  # the trailing stop rises to 100
        broker.set_price(SYM, 100.5)
        mid = await broker.get_order_by_client_id("e-1", SYM)
        broker.set_price(SYM, 99.0)  # reaches 100: stop fills at the last price 99
        return mid, await broker.get_order_by_client_id("e-1", SYM), await broker.get_order_by_client_id("e-2", SYM)

    mid, stop, target = asyncio.run(go())
    assert mid.status is OrderStatus.NEW
    assert (stop.status, stop.executed_price) == (OrderStatus.FILLED, 99.0)
    assert target.status is OrderStatus.CANCELED
    assert broker.position(SYM) == 0.0 and broker.cash == approx(999.0)
