"""Paper broker: hand-checked fills, statuses, book-keeping and errors.

Bars are stamped t(1), t(2), ...; orders are placed at T0 = t(0) unless told, so the
first bar is their first eligible bar. Fees are 0.1% unless told.
"""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest

from brokers.base.clock import SimulatedClock
from brokers.base.errors import InsufficientFundsError, InvalidOrderError, OrderNotFoundError
from brokers.base.types import OrderStatus, OrderType, Side, TimeInForce
from brokers.paper import PaperBroker
from tests.brokers.helpers import SYM, T0, frame, market, order, place_and_run, replay, replay_broker, t

BUY, SELL = Side.BUY, Side.SELL
FLAT_100 = (100.0, 100.0, 100.0, 100.0)
approx = pytest.approx


# ---------------------------------------------------------------- market orders


def test_market_buy_fills_at_open_with_slippage() -> None:
    broker, [r] = replay([(100, 105, 95, 102)], market(BUY, 1.0, "m1"), slippage_bps=10)
    assert r.status is OrderStatus.FILLED
    assert r.executed_quantity == approx(1.0)
    assert r.executed_price == approx(100.1)
    assert r.fees == approx(0.1001)
    assert r.fee_currency == "USDT"
    assert r.timestamp == t(1)
    [fill] = r.fills
    assert (fill.price, fill.reference_price, fill.is_maker) == (approx(100.1), 100.0, False)
    assert fill.timestamp == t(1)
    assert broker.cash == approx(10_000 - 100.1 - 0.1001)
    assert broker.position(SYM) == approx(1.0)


def test_market_price_is_not_clamped_to_the_bar() -> None:
    _, [r] = replay([FLAT_100], market(BUY, 1.0, "m1"), slippage_bps=50)
    assert r.executed_price == approx(100.5)


def test_market_sell_fills_at_open_with_slippage() -> None:
    rows = [(100, 105, 95, 102), (110, 112, 108, 111)]
    broker, [buy, sell] = replay(
        rows, market(BUY, 2.0, "b"), market(SELL, 1.0, "s", at=t(1)), slippage_bps=10
    )
    assert buy.executed_price == approx(100.1)
    assert sell.status is OrderStatus.FILLED
    assert sell.executed_price == approx(109.89)
    assert sell.fills[0].reference_price == 110.0
    assert sell.fees == approx(0.10989)
    assert sell.timestamp == t(2)
    assert broker.cash == approx(10_000 - 200.2 - 0.2002 + 109.89 - 0.10989)
    assert broker.position(SYM) == approx(1.0)


# ---------------------------------------------------------------- limit orders

FEES = {"maker_fee": 0.0005, "taker_fee": 0.002, "slippage_bps": 10}


def test_limit_buy_gapped_below_fills_at_open_as_taker() -> None:
    _, [r] = replay([(100, 102, 99, 101)], order(BUY, OrderType.LIMIT, 1.0, "l1", price=101), **FEES)
    assert (r.status, r.executed_price, r.fees) == (OrderStatus.FILLED, approx(100.0), approx(0.2))
    assert r.fills[0].is_maker is False


def test_limit_buy_fills_at_limit_intrabar_as_maker_without_slippage() -> None:
    _, [r] = replay([(100, 101, 97, 99)], order(BUY, OrderType.LIMIT, 1.0, "l1", price=98), **FEES)
    assert (r.status, r.executed_price, r.fees) == (OrderStatus.FILLED, approx(98.0), approx(0.049))
    assert r.fills[0].is_maker is True
    assert r.fills[0].reference_price == 98.0


def test_limit_buy_stays_open_while_low_is_above_limit_then_fills() -> None:
    broker, clock = replay_broker([(100, 101, 97, 99), (99, 99, 95, 96)])
    limit = order(BUY, OrderType.LIMIT, 1.0, "l1", price=96)
    [r] = asyncio.run(place_and_run(broker, clock, [limit], t(1)))
    assert (r.status, r.executed_quantity, r.executed_price) == (OrderStatus.NEW, 0.0, None)
    asyncio.run(clock.sleep_until(t(2)))
    r = asyncio.run(broker.get_order_status(r.order_id, SYM))
    assert (r.status, r.executed_price, r.timestamp) == (OrderStatus.FILLED, approx(96.0), t(2))
    assert r.fills[0].is_maker is True


def test_limit_sell_mirror() -> None:
    rows = [FLAT_100, (100, 104, 99, 101), (101, 102, 100, 101)]
    _, [_, at_open, at_limit, resting] = replay(
        rows,
        market(BUY, 3.0, "b"),
        order(SELL, OrderType.LIMIT, 1.0, "s-open", price=99, at=t(1)),
        order(SELL, OrderType.LIMIT, 1.0, "s-limit", price=103, at=t(1)),
        order(SELL, OrderType.LIMIT, 1.0, "s-rest", price=105, at=t(1)),
        **FEES,
    )
    assert (at_open.executed_price, at_open.fills[0].is_maker, at_open.fees) == (
        approx(100.0),
        False,
        approx(0.2),
    )
    assert (at_limit.executed_price, at_limit.fills[0].is_maker) == (approx(103.0), True)
    assert at_limit.fees == approx(0.0515)
    assert (resting.status, resting.executed_quantity) == (OrderStatus.NEW, 0.0)


# ---------------------------------------------------------------- stop orders


@pytest.mark.parametrize(
    ("bar", "reference"),
    [((100, 103, 99, 101), 102.0), ((105, 106, 104, 105), 105.0)],
    ids=["touch", "gap-through"],
)
def test_stop_buy_fills_at_max_of_stop_and_open_with_slippage(bar: tuple, reference: float) -> None:
    _, [r] = replay([bar], order(BUY, OrderType.STOP, 1.0, "s1", stop=102), slippage_bps=10)
    assert r.status is OrderStatus.FILLED
    assert r.fills[0].reference_price == approx(reference)
    assert r.executed_price == approx(reference * 1.001)
    assert r.fees == approx(0.001 * reference * 1.001)
    assert r.fills[0].is_maker is False


def test_stop_buy_not_triggered_below_stop() -> None:
    _, [r] = replay([(100, 101.9, 99, 101)], order(BUY, OrderType.STOP, 1.0, "s1", stop=102))
    assert (r.status, r.executed_quantity) == (OrderStatus.NEW, 0.0)


@pytest.mark.parametrize(
    ("bar", "reference"),
    [((100, 101, 97, 99), 98.0), ((95, 96, 94, 95), 95.0)],
    ids=["touch", "gap-through"],
)
def test_stop_sell_fills_at_min_of_stop_and_open_with_slippage(bar: tuple, reference: float) -> None:
    stop = order(SELL, OrderType.STOP, 1.0, "s1", stop=98, at=t(1))
    _, [_, r] = replay([FLAT_100, bar], market(BUY, 2.0, "b"), stop, slippage_bps=10)
    assert r.status is OrderStatus.FILLED
    assert r.fills[0].reference_price == approx(reference)
    assert r.executed_price == approx(reference * 0.999)


# ---------------------------------------------------------------- stop-limit orders


def test_stop_limit_buy_triggers_and_fills_at_trigger_as_taker() -> None:
    stop_limit = order(BUY, OrderType.STOP_LIMIT, 1.0, "sl", price=103, stop=102)
    _, [r] = replay([(100, 104, 99, 103)], stop_limit, slippage_bps=10)
    assert (r.status, r.executed_price, r.fills[0].is_maker) == (OrderStatus.FILLED, approx(102.0), False)


def test_stop_limit_buy_triggers_above_limit_and_fills_at_limit_as_maker() -> None:
    stop_limit = order(BUY, OrderType.STOP_LIMIT, 1.0, "sl", price=101, stop=102)
    _, [r] = replay([(100, 103, 100.5, 101)], stop_limit, **FEES)
    assert (r.status, r.executed_price, r.fills[0].is_maker) == (OrderStatus.FILLED, approx(101.0), True)
    assert r.fees == approx(0.0505)


def test_stop_limit_buy_triggers_then_rests_as_limit_then_fills() -> None:
    # Bar 2 never reaches the stop again: only a resting LIMIT at 101 fills there (at its open).
    rows = [(100, 103, 101.5, 102), (100.8, 101.5, 100.5, 101)]
    broker, clock = replay_broker(rows, **FEES)
    stop_limit = order(BUY, OrderType.STOP_LIMIT, 1.0, "sl", price=101, stop=102)
    [r] = asyncio.run(place_and_run(broker, clock, [stop_limit], t(1)))
    assert (r.status, r.executed_quantity) == (OrderStatus.NEW, 0.0)
    asyncio.run(clock.sleep_until(t(2)))
    r = asyncio.run(broker.get_order_status(r.order_id, SYM))
    assert (r.status, r.executed_price, r.timestamp) == (OrderStatus.FILLED, approx(100.8), t(2))
    assert r.fills[0].is_maker is False


def test_stop_limit_buy_gap_past_limit_rests_then_fills_at_limit() -> None:
    rows = [(105, 106, 104, 105), (104, 104, 102, 103)]
    stop_limit = order(BUY, OrderType.STOP_LIMIT, 1.0, "sl", price=103, stop=102)
    broker, clock = replay_broker(rows)
    [r] = asyncio.run(place_and_run(broker, clock, [stop_limit], t(1)))
    assert r.status is OrderStatus.NEW
    asyncio.run(clock.sleep_until(t(2)))
    r = asyncio.run(broker.get_order_status(r.order_id, SYM))
    assert (r.status, r.executed_price, r.fills[0].is_maker) == (OrderStatus.FILLED, approx(103.0), True)


def test_stop_limit_sell_triggers_and_fills_at_trigger() -> None:
    stop_limit = order(SELL, OrderType.STOP_LIMIT, 1.0, "sl", price=97, stop=98, at=t(1))
    _, [_, r] = replay([FLAT_100, (100, 101, 96, 97)], market(BUY, 1.0, "b"), stop_limit)
    assert (r.status, r.executed_price, r.fills[0].is_maker) == (OrderStatus.FILLED, approx(98.0), False)


def test_stop_limit_not_triggered_stays_new() -> None:
    stop_limit = order(BUY, OrderType.STOP_LIMIT, 1.0, "sl", price=103, stop=102)
    _, [r] = replay([(100, 101, 95, 96)], stop_limit)
    assert (r.status, r.executed_quantity) == (OrderStatus.NEW, 0.0)


# ---------------------------------------------------------------- eligibility and ordering


@pytest.mark.parametrize(
    ("placed", "bar_time", "price"),
    [(t(0.5), t(1), 100.0), (t(1), t(2), 110.0), (t(1.5), t(2), 110.0)],
    ids=["before-bar-1", "exactly-at-bar-1", "inside-bar-1"],
)
def test_only_bars_strictly_after_placement_are_eligible(
    placed: pd.Timestamp, bar_time: pd.Timestamp, price: float
) -> None:
    _, [r] = replay([FLAT_100, (110, 110, 110, 110)], market(BUY, 1.0, "m", at=placed))
    assert (r.executed_price, r.timestamp) == (approx(price), bar_time)


def test_placement_time_defaults_to_the_clock() -> None:
    broker, clock = replay_broker([FLAT_100, (110, 110, 110, 110)])
    clock.set(t(1))
    [r] = asyncio.run(place_and_run(broker, clock, [market(BUY, 1.0, "m", at=None)], t(2)))
    assert (r.executed_price, r.timestamp) == (approx(110.0), t(2))


def test_order_is_new_until_the_clock_moves() -> None:
    broker, clock = replay_broker([FLAT_100])
    r = asyncio.run(broker.place_order(market(BUY, 1.0, "m")))
    assert (r.order_id, r.status, r.timestamp, r.fills) == ("paper-1", OrderStatus.NEW, T0, ())
    assert broker.cash == 10_000.0


def test_orders_on_one_bar_fill_in_placement_order_until_cash_runs_out() -> None:
    orders = [market(BUY, 1.5, "z-first"), market(BUY, 1.0, "a-second"), market(BUY, 0.5, "m-third")]
    broker, [first, second, third] = replay([FLAT_100], *orders, cash=250.0)
    assert first.status is OrderStatus.FILLED
    assert second.status is OrderStatus.REJECTED
    assert second.reason == (
        "insufficient funds: buy 1.0 BTC/USDT at 100.0 needs 100.1 USDT incl. fee 0.1, "
        "cash is 99.85 USDT (order a-second)"
    )
    assert (second.executed_quantity, second.fills, second.timestamp) == (0.0, (), t(1))
    assert third.status is OrderStatus.FILLED
    assert broker.cash == approx(250 - 150.15 - 50.05)
    assert broker.position(SYM) == approx(2.0)


def test_insufficient_funds_reason_text() -> None:
    _, [r] = replay([(101, 101, 101, 101)], market(BUY, 0.5, "tp-abc"), cash=40.0)
    assert r.status is OrderStatus.REJECTED
    assert r.reason == (
        "insufficient funds: buy 0.5 BTC/USDT at 101.0 needs 50.5505 USDT incl. fee 0.0505, "
        "cash is 40.0 USDT (order tp-abc)"
    )


def test_oversized_sell_is_rejected_not_clipped() -> None:
    broker, [_, r] = replay([FLAT_100, FLAT_100], market(BUY, 1.5, "b"), market(SELL, 2.0, "tp-abc", at=t(1)))
    assert r.status is OrderStatus.REJECTED
    assert r.reason == "insufficient position: sell 2.0 BTC/USDT but position is 1.5 (order tp-abc)"
    assert broker.position(SYM) == approx(1.5)


def test_events_are_processed_in_time_order_across_symbols() -> None:
    broker, clock = replay_broker([FLAT_100], cash=150.0)
    broker.add_market_data("ETH/USDT", frame([FLAT_100], first=2))
    eth_first_placed = order(BUY, OrderType.MARKET, 1.0, "eth", symbol="ETH/USDT")
    eth, btc = asyncio.run(place_and_run(broker, clock, [eth_first_placed, market(BUY, 1.0, "btc")], t(2)))
    assert (btc.status, btc.timestamp) == (OrderStatus.FILLED, t(1))
    assert (eth.status, eth.timestamp) == (OrderStatus.REJECTED, t(2))


# ---------------------------------------------------------------- time in force

CAPPED = {"max_participation": 0.1}  # with volume 10: at most 1.0 per bar


def test_ioc_expires_when_its_first_bar_does_not_fill() -> None:
    ioc = order(BUY, OrderType.LIMIT, 1.0, "tp-ioc", price=98, tif=TimeInForce.IOC)
    _, [r] = replay([(100, 101, 99, 100), (97, 98, 96, 97)], ioc)
    assert (r.status, r.executed_quantity, r.timestamp) == (OrderStatus.EXPIRED, 0.0, t(1))
    assert r.reason is not None and "IOC" in r.reason and "tp-ioc" in r.reason


def test_ioc_stop_not_triggered_on_first_bar_expires() -> None:
    ioc = order(BUY, OrderType.STOP, 1.0, "ioc", stop=102, tif=TimeInForce.IOC)
    _, [r] = replay([FLAT_100, (103, 103, 103, 103)], ioc)
    assert r.status is OrderStatus.EXPIRED


def test_ioc_fills_what_it_can_and_cancels_the_rest() -> None:
    ioc = order(BUY, OrderType.MARKET, 3.0, "ioc", tif=TimeInForce.IOC)
    _, [r] = replay([(100, 100, 100, 100, 10), (100, 100, 100, 100, 10)], ioc, **CAPPED)
    assert (r.status, r.executed_quantity, r.executed_price) == (
        OrderStatus.CANCELED,
        approx(1.0),
        approx(100.0),
    )
    assert r.reason is not None and "remainder 2.0" in r.reason


def test_fok_expires_with_nothing_when_the_bar_cannot_fill_it_all() -> None:
    fok = order(BUY, OrderType.MARKET, 3.0, "fok", tif=TimeInForce.FOK)
    broker, [r] = replay([(100, 100, 100, 100, 10)] * 3, fok, **CAPPED)
    assert (r.status, r.executed_quantity, r.fills) == (OrderStatus.EXPIRED, 0.0, ())
    assert broker.cash == 10_000.0


def test_fok_fills_entirely_on_its_first_bar() -> None:
    fok = order(BUY, OrderType.LIMIT, 1.0, "fok", price=101, tif=TimeInForce.FOK)
    _, [r] = replay([(100, 100, 100, 100, 10)], fok, **CAPPED)
    assert (r.status, r.executed_quantity, r.executed_price) == (
        OrderStatus.FILLED,
        approx(1.0),
        approx(100.0),
    )


def test_fok_limit_not_reached_on_first_bar_expires() -> None:
    fok = order(BUY, OrderType.LIMIT, 1.0, "fok", price=95, tif=TimeInForce.FOK)
    _, [r] = replay([FLAT_100, (94, 94, 94, 94)], fok)
    assert (r.status, r.executed_quantity) == (OrderStatus.EXPIRED, 0.0)


# ---------------------------------------------------------------- participation cap


def test_participation_cap_spreads_a_market_order_over_bars() -> None:
    rows = [(100, 100, 100, 100, 10), (101, 101, 101, 101, 10), (102, 102, 102, 102, 10)]
    broker, clock = replay_broker(rows, slippage_bps=10, **CAPPED)
    [r] = asyncio.run(place_and_run(broker, clock, [market(BUY, 2.5, "big")], t(1)))
    assert (r.status, r.executed_quantity, r.executed_price) == (
        OrderStatus.PARTIALLY_FILLED,
        approx(1.0),
        approx(100.1),
    )
    asyncio.run(clock.sleep_until(t(3)))
    r = asyncio.run(broker.get_order_status(r.order_id, SYM))
    assert r.status is OrderStatus.FILLED
    assert [f.quantity for f in r.fills] == approx([1.0, 1.0, 0.5])
    assert [f.price for f in r.fills] == approx([100.1, 101.101, 102.102])
    assert [f.timestamp for f in r.fills] == [t(1), t(2), t(3)]
    assert r.executed_price == approx((100.1 + 101.101 + 0.5 * 102.102) / 2.5)
    assert r.fees == approx(0.001 * (100.1 + 101.101 + 0.5 * 102.102))


def test_participation_cap_is_shared_by_orders_on_one_bar() -> None:
    rows = [(100, 100, 100, 100, 10), (100, 100, 100, 100, 10)]
    _, [a, b] = replay(rows, market(BUY, 0.6, "a"), market(BUY, 0.6, "b"), **CAPPED)
    assert [f.quantity for f in a.fills] == approx([0.6])
    assert [f.quantity for f in b.fills] == approx([0.4, 0.2])
    assert [f.timestamp for f in b.fills] == [t(1), t(2)]


def test_partially_filled_limit_keeps_resting_as_a_limit() -> None:
    rows = [(100, 100, 100, 100, 10), (105, 106, 104, 105, 10), (103, 103, 99, 100, 10)]
    limit = order(BUY, OrderType.LIMIT, 2.0, "l", price=100)
    _, [r] = replay(rows, limit, **CAPPED)
    assert r.status is OrderStatus.FILLED
    assert [(f.price, f.is_maker, f.timestamp) for f in r.fills] == [
        (100.0, False, t(1)),
        (100.0, True, t(3)),
    ]


def test_partial_fill_then_insufficient_cash_cancels_the_rest() -> None:
    rows = [(100, 100, 100, 100, 10), (100, 100, 100, 100, 10)]
    broker, [r] = replay(rows, market(BUY, 2.0, "big"), cash=150.0, **CAPPED)
    assert (r.status, r.executed_quantity) == (OrderStatus.CANCELED, approx(1.0))
    assert r.reason is not None and r.reason.startswith("insufficient funds: buy 1.0 BTC/USDT at 100.0")
    assert broker.cash == approx(150 - 100.1)


# ---------------------------------------------------------------- cancel, ids, lookups


def test_cancel_open_order() -> None:
    broker, clock = replay_broker([FLAT_100, (100, 100, 85, 90)])
    [r] = asyncio.run(place_and_run(broker, clock, [order(BUY, OrderType.LIMIT, 1.0, "l", price=90)], t(1)))
    canceled = asyncio.run(broker.cancel_order(r.order_id, SYM))
    assert canceled.status is OrderStatus.CANCELED
    asyncio.run(clock.sleep_until(t(2)))
    after = asyncio.run(broker.get_order_status(r.order_id, SYM))
    assert (after.status, after.executed_quantity) == (OrderStatus.CANCELED, 0.0)
    assert broker.cash == 10_000.0


def test_cancel_filled_order_is_refused_naming_its_status() -> None:
    broker, [r] = replay([FLAT_100], market(BUY, 1.0, "tp-1"))
    with pytest.raises(InvalidOrderError, match=r"FILLED.*tp-1"):
        asyncio.run(broker.cancel_order(r.order_id, SYM))


def test_unknown_order_id_is_not_found() -> None:
    broker, [r] = replay([FLAT_100], market(BUY, 1.0, "tp-1"))
    with pytest.raises(OrderNotFoundError):
        asyncio.run(broker.get_order_status("paper-99", SYM))
    with pytest.raises(OrderNotFoundError):
        asyncio.run(broker.cancel_order("paper-99", SYM))
    with pytest.raises(OrderNotFoundError):
        asyncio.run(broker.get_order_status(r.order_id, "ETH/USDT"))


def test_order_ids_are_deterministic_and_duplicates_refused() -> None:
    broker, _ = replay_broker([FLAT_100])
    first = asyncio.run(broker.place_order(market(BUY, 1.0, "tp-1")))
    with pytest.raises(InvalidOrderError, match="Duplicate order sent: tp-1"):
        asyncio.run(broker.place_order(market(BUY, 2.0, "tp-1")))
    second = asyncio.run(broker.place_order(market(BUY, 1.0, "tp-2")))
    assert (first.order_id, second.order_id) == ("paper-1", "paper-2")


@pytest.mark.parametrize("symbol", ["ETH/USDT", "BTC/EUR", "BTCUSDT"])
def test_unknown_or_foreign_symbol_is_invalid(symbol: str) -> None:
    broker, _ = replay_broker([FLAT_100])
    bad = order(BUY, OrderType.MARKET, 1.0, "tp-x", symbol=symbol)
    with pytest.raises(InvalidOrderError, match=rf"{symbol}.*tp-x"):
        asyncio.run(broker.place_order(bad))


def test_get_order_by_client_id() -> None:
    broker, [r] = replay([FLAT_100], market(BUY, 1.0, "tp-1"))
    found = asyncio.run(broker.get_order_by_client_id("tp-1", SYM))
    assert found is not None and (found.order_id, found.status) == (r.order_id, OrderStatus.FILLED)
    assert asyncio.run(broker.get_order_by_client_id("tp-unknown", SYM)) is None
    assert asyncio.run(broker.get_order_by_client_id("tp-1", "ETH/USDT")) is None


# ---------------------------------------------------------------- account and positions


def test_account_equity_and_positions() -> None:
    rows = [FLAT_100, (110, 110, 110, 110), (120, 126, 119, 125)]
    orders = [market(BUY, 2.0, "b1"), market(BUY, 1.0, "b2", at=t(1)), market(SELL, 1.5, "s1", at=t(2))]
    broker, _ = replay(rows, *orders)
    cash = 10_000 - 200 - 0.2 - 110 - 0.11 + 180 - 0.18
    assert broker.cash == approx(cash)
    [position] = asyncio.run(broker.get_positions())
    assert position.symbol == SYM
    assert position.quantity == approx(1.5)
    assert position.average_price == approx(310 / 3)
    assert position.market_price == 125.0
    assert position.realized_pnl == approx((120 - 310 / 3) * 1.5)
    account = asyncio.run(broker.get_account_info())
    assert account.quote_currency == "USDT"
    assert account.balances == {"USDT": approx(cash), "BTC": approx(1.5)}
    assert account.equity == approx(cash + 1.5 * 125)


def test_flat_account_and_no_positions() -> None:
    broker, _ = replay_broker([FLAT_100])
    account = asyncio.run(broker.get_account_info())
    assert (account.balances, account.equity) == ({"USDT": 10_000.0}, 10_000.0)
    assert asyncio.run(broker.get_positions()) == []


def test_set_price_in_replay_only_moves_the_mark() -> None:
    broker, _ = replay([FLAT_100], market(BUY, 1.0, "b"), order(BUY, OrderType.LIMIT, 1.0, "l", price=50))
    broker.set_price(SYM, 40.0)
    resting = asyncio.run(broker.get_order_by_client_id("l", SYM))
    assert resting is not None and resting.status is OrderStatus.NEW
    assert asyncio.run(broker.get_account_info()).equity == approx(broker.cash + 40.0)


def test_more_bars_can_be_appended_and_open_orders_fill_on_them() -> None:
    broker, clock = replay_broker([(100, 101, 99, 100)])
    [r] = asyncio.run(place_and_run(broker, clock, [order(BUY, OrderType.LIMIT, 1.0, "l", price=95)], t(1)))
    assert r.status is OrderStatus.NEW
    broker.add_market_data(SYM, frame([(96, 97, 94, 95)], first=2))
    asyncio.run(clock.sleep_until(t(2)))
    r = asyncio.run(broker.get_order_status(r.order_id, SYM))
    assert (r.status, r.executed_price, r.timestamp) == (OrderStatus.FILLED, approx(95.0), t(2))
    with pytest.raises(ValueError, match="later"):
        broker.add_market_data(SYM, frame([FLAT_100], first=2))


def test_connect_and_close() -> None:
    async def scenario() -> tuple[bool, bool]:
        broker = PaperBroker(cash=1.0, clock=SimulatedClock(T0))
        async with broker:
            inside = broker.connected
        return inside, broker.connected

    assert asyncio.run(scenario()) == (True, False)


# ---------------------------------------------------------------- live mode


def live(cash: float = 1_000.0, price: float = 100.0, **kw: object) -> PaperBroker:
    broker = PaperBroker(cash=cash, **kw)  # type: ignore[arg-type]
    broker.set_price(SYM, price)
    return broker


def test_live_market_order_fills_at_once_at_the_last_price() -> None:
    broker = live(slippage_bps=10)
    r = asyncio.run(broker.place_order(market(BUY, 2.0, "m", at=None)))
    assert (r.status, r.executed_price, r.fees) == (OrderStatus.FILLED, approx(100.1), approx(0.2002))
    assert broker.cash == approx(1_000 - 200.2 - 0.2002)
    assert broker.position(SYM) == approx(2.0)


def test_live_without_set_price_uses_the_last_bar_close() -> None:
    broker = PaperBroker(cash=1_000.0)
    broker.add_market_data(SYM, frame([FLAT_100, (100, 120, 90, 110)]))
    r = asyncio.run(broker.place_order(market(BUY, 1.0, "m")))
    assert r.executed_price == approx(110.0)


def test_live_unaffordable_buy_raises_and_records_nothing() -> None:
    broker = live(cash=100.0)
    with pytest.raises(InsufficientFundsError) as caught:
        asyncio.run(broker.place_order(market(BUY, 1.0, "big")))
    assert str(caught.value) == (
        "insufficient funds: buy 1.0 BTC/USDT at 100.0 needs 100.1 USDT incl. fee 0.1, "
        "cash is 100.0 USDT (order big)"
    )
    assert asyncio.run(broker.get_order_by_client_id("big", SYM)) is None
    assert broker.cash == 100.0
    retry = asyncio.run(broker.place_order(market(BUY, 0.5, "big")))
    assert (retry.order_id, retry.status) == ("paper-1", OrderStatus.FILLED)


def test_live_oversized_sell_raises() -> None:
    broker = live()
    with pytest.raises(
        InsufficientFundsError, match="insufficient position: sell 1.0 BTC/USDT but position is 0.0"
    ):
        asyncio.run(broker.place_order(market(SELL, 1.0, "s")))


def test_live_marketable_limit_fills_at_the_last_price_as_taker() -> None:
    broker = live(maker_fee=0.0005, taker_fee=0.002)
    r = asyncio.run(broker.place_order(order(BUY, OrderType.LIMIT, 1.0, "l", price=105)))
    assert (r.status, r.executed_price, r.fees, r.fills[0].is_maker) == (
        OrderStatus.FILLED,
        approx(100.0),
        approx(0.2),
        False,
    )


def test_live_resting_limit_is_filled_by_set_price() -> None:
    broker = live()
    r = asyncio.run(broker.place_order(order(BUY, OrderType.LIMIT, 1.0, "l", price=95)))
    assert r.status is OrderStatus.NEW
    broker.set_price(SYM, 96.0)
    assert asyncio.run(broker.get_order_status(r.order_id, SYM)).status is OrderStatus.NEW
    broker.set_price(SYM, 94.0)
    r = asyncio.run(broker.get_order_status(r.order_id, SYM))
    assert (r.status, r.executed_price) == (OrderStatus.FILLED, approx(94.0))
    assert broker.position(SYM) == approx(1.0)


def test_live_stop_rests_then_triggers_on_set_price() -> None:
    broker = live(slippage_bps=10)
    r = asyncio.run(broker.place_order(order(BUY, OrderType.STOP, 1.0, "s", stop=105)))
    assert r.status is OrderStatus.NEW
    broker.set_price(SYM, 106.0)
    r = asyncio.run(broker.get_order_status(r.order_id, SYM))
    assert (r.status, r.executed_price, r.fills[0].reference_price) == (
        OrderStatus.FILLED,
        approx(106.106),
        106.0,
    )


def test_live_resting_order_unaffordable_when_it_triggers_is_rejected() -> None:
    broker = live(cash=100.0)
    resting = asyncio.run(broker.place_order(order(BUY, OrderType.LIMIT, 1.0, "l", price=95)))
    asyncio.run(broker.place_order(market(BUY, 0.5, "m")))
    broker.set_price(SYM, 94.0)
    r = asyncio.run(broker.get_order_status(resting.order_id, SYM))
    assert r.status is OrderStatus.REJECTED
    assert r.reason is not None and r.reason.startswith("insufficient funds: buy 1.0 BTC/USDT at 94.0")


def test_live_ioc_that_cannot_fill_expires_and_cancel_of_resting_order() -> None:
    broker = live()
    ioc = asyncio.run(
        broker.place_order(order(BUY, OrderType.LIMIT, 1.0, "ioc", price=95, tif=TimeInForce.IOC))
    )
    assert ioc.status is OrderStatus.EXPIRED
    gtc = asyncio.run(broker.place_order(order(BUY, OrderType.LIMIT, 1.0, "gtc", price=95)))
    assert asyncio.run(broker.cancel_order(gtc.order_id, SYM)).status is OrderStatus.CANCELED
    broker.set_price(SYM, 90.0)
    assert asyncio.run(broker.get_order_status(gtc.order_id, SYM)).status is OrderStatus.CANCELED
    assert broker.cash == 1_000.0
