"""Paper broker, advanced simulator: venue fees, slippage models, participation,
latency, trade-through limits and fill models, each with a hand-checked fill.

Bars are stamped t(1), t(2), ... one minute apart; orders are placed at T0 = t(0) unless
told. Fees are 0.1 % unless told; volume is 1000 unless told.
"""

from __future__ import annotations

import asyncio
import math

import pandas as pd
import pytest

from brokers.base.types import Fill, OrderStatus, OrderType, Side, TimeInForce
from brokers.paper.fills import Bar
from brokers.paper.market import BarSeries
from brokers.paper.slippage import FixedBps, SqrtImpact, VolatilitySlippage, slippage_model
from brokers.paper.venues import VENUES, FeeSchedule, fee_schedule
from tests.brokers.helpers import SYM, market, order, place_and_run, replay, replay_broker, t

BUY, SELL = Side.BUY, Side.SELL
approx = pytest.approx
ADVANCED = {"slippage": SqrtImpact(1.0), "max_participation": 0.1, "trade_through": True}


# ---------------------------------------------------------------- venue fee schedules


def test_venue_profiles_are_base_tier_spot_rates() -> None:
    rates = {name: (v.maker, v.taker) for name, v in VENUES.items()}
    assert rates == {"binance": (0.001, 0.001), "kraken": (0.0025, 0.004), "bybit": (0.001, 0.001),
                     "kucoin": (0.001, 0.001), "okx": (0.0008, 0.001)}
    assert fee_schedule(" Kraken ") is VENUES["kraken"]
    assert fee_schedule("custom:0.0002:0.0007") == FeeSchedule("custom", 0.0002, 0.0007)


@pytest.mark.parametrize("spec, message", [
    ("nasdaq", "unknown venue 'nasdaq'"),
    ("custom:0.001", "custom:MAKER:TAKER"),
    ("custom:a:b", "custom:MAKER:TAKER"),
    ("custom:-0.1:0.1", "maker fee must be in [0, 1)"),
    ("custom:0.1:nan", "taker fee must be in [0, 1)"),
])
def test_bad_fee_schedules_say_what_is_expected(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
        fee_schedule(spec)


def test_kraken_taker_fee_on_a_market_order_and_maker_fee_on_a_resting_limit() -> None:
    kraken = VENUES["kraken"]
    bars = [(100, 105, 97, 102), (102, 103, 99, 100)]
    broker, [m, lim] = replay(bars, market(BUY, 1.0, "m"), order(BUY, OrderType.LIMIT, 2.0, "l", price=98.0),
                              maker_fee=kraken.maker, taker_fee=kraken.taker)
    assert (m.executed_price, m.fees, m.fills[0].is_maker) == (100.0, approx(0.4), False)  # 0.4 % of 100
    assert (lim.executed_price, lim.fees, lim.fills[0].is_maker) == (98.0, approx(0.49), True)  # 0.25 % of 196
    assert broker.cash == approx(10_000 - 100 - 0.4 - 196 - 0.49)


# ---------------------------------------------------------------- slippage models


def test_fixed_model_is_the_basic_broker_to_the_last_bit() -> None:
    bar = (100.3, 105.1, 95.7, 102.9)
    _, [a] = replay([bar], market(BUY, 1.0, "a"), slippage_bps=7.3)
    _, [b] = replay([bar], market(BUY, 1.0, "b"), slippage=FixedBps(7.3))
    assert a.executed_price == b.executed_price == 100.3 * (1 + 7.3 / 1e4)
    assert a.fills[0].slippage_bps == approx(7.3)


def test_volatility_model_slips_k_times_the_bar_range() -> None:
    # range (104 - 96) / 100 = 8 %; k = 0.1 -> 0.8 % against the buyer
    _, [r] = replay([(100, 104, 96, 102)], market(BUY, 1.0, "v"), slippage=VolatilitySlippage(0.1))
    [fill] = r.fills
    assert (fill.price, fill.reference_price, fill.slippage_bps) == (approx(100.8), 100.0, approx(80.0))
    assert fill.fee == approx(0.1008)
    assert r.status is OrderStatus.FILLED


def test_sqrt_impact_uses_range_and_quantity_over_bar_volume() -> None:
    # sigma = 8 %, quantity / volume = 4 / 400 -> sqrt = 0.1; k = 1 -> 0.8 %
    broker, [buy] = replay([(100, 104, 96, 102, 400), (102, 104, 100, 103, 400)], market(BUY, 4.0, "b"),
                           slippage=SqrtImpact(1.0), until=t(1))
    assert buy.executed_price == approx(100.8) and buy.fees == approx(0.001 * 4 * 100.8)
    assert buy.fills[0].slippage_bps == approx(80.0)
    # the sell on bar 2: sigma = 4 / 102, same share -> 102 * (1 - 0.1 * 4/102) = 101.6
    sell = order(SELL, OrderType.MARKET, 4.0, "s", at=t(1))
    [s] = asyncio.run(place_and_run(broker, broker.clock, [sell], t(2)))  # type: ignore[arg-type]
    assert s.executed_price == approx(101.6) and s.fills[0].slippage_bps == approx(40 / 1.02)


def test_model_slippage_is_capped_at_half_the_price() -> None:
    _, [r] = replay([(100, 104, 96, 102)], market(BUY, 1.0, "v"), slippage=VolatilitySlippage(10.0))
    assert r.executed_price == approx(150.0)


def test_limit_fills_are_never_slipped() -> None:
    _, [r] = replay([(100, 104, 96, 102)], order(BUY, OrderType.LIMIT, 1.0, "l", price=97.0),
                    slippage=VolatilitySlippage(1.0))
    assert (r.executed_price, r.fills[0].slippage_bps, r.fills[0].is_maker) == (97.0, 0.0, True)


def test_slippage_model_by_name_with_default_k() -> None:
    assert slippage_model("fixed", bps=3) == FixedBps(3)
    assert slippage_model("volatility") == VolatilitySlippage(0.1)
    assert slippage_model("sqrt-impact", k=0.5) == SqrtImpact(0.5)
    assert SqrtImpact(1.0).fraction(Bar(100, 104, 96, 100, 0.0), 1.0) == approx(0.08)  # no volume: share 1
    with pytest.raises(ValueError, match="unknown slippage model"):
        slippage_model("linear")


def test_fill_keeps_backwards_compatible_defaults() -> None:
    fill = Fill("o", "c", SYM, BUY, 1.0, 100.0, 0.1, "USDT", t(1))
    assert (fill.reference_price, fill.trade_id, fill.slippage_bps) == (None, None, None)


# ---------------------------------------------------------------- participation (advanced model)


def test_participation_cap_with_impact_fills_a_gtc_market_order_over_bars() -> None:
    # volume 10, cap 10 % -> 1.0 per bar; each fill's impact: sigma 4 % x sqrt(1 / 10)
    bars = [(100, 102, 98, 100, 10), (100, 102, 98, 101, 10), (101, 103.02, 98.98, 100, 10)]
    broker, [r] = replay(bars, market(BUY, 2.5, "m"), **ADVANCED)
    prices = [f.price for f in r.fills]
    impact = 0.04 * math.sqrt(0.1)
    assert [f.quantity for f in r.fills] == approx([1.0, 1.0, 0.5])
    assert prices == approx([100 * (1 + impact), 100 * (1 + impact), 101 * (1 + 0.04 * math.sqrt(0.05))])
    assert [f.timestamp for f in r.fills] == [t(1), t(2), t(3)]
    assert r.status is OrderStatus.FILLED and broker.position(SYM) == approx(2.5)
    assert r.fees == approx(sum(0.001 * f.quantity * f.price for f in r.fills))


def test_ioc_and_fok_under_the_advanced_model() -> None:
    bars = [(100, 102, 98, 100, 10), (100, 102, 98, 100, 10)]
    ioc = order(BUY, OrderType.MARKET, 3.0, "ioc", tif=TimeInForce.IOC)
    fok = order(BUY, OrderType.MARKET, 3.0, "fok", tif=TimeInForce.FOK, at=t(1))
    _, [i, f] = replay(bars, ioc, fok, **ADVANCED)
    assert (i.status, i.executed_quantity) == (OrderStatus.CANCELED, approx(1.0))
    assert i.executed_price == approx(100 * (1 + 0.04 * math.sqrt(0.1)))
    assert "IOC remainder 2.0 canceled" in (i.reason or "")
    assert (f.status, f.executed_quantity) == (OrderStatus.EXPIRED, 0.0)


def test_zero_volume_bar_gives_no_fill_under_a_cap() -> None:
    bars = [(100, 101, 99, 100, 0.0), (100, 101, 99, 100, 20)]
    _, [r] = replay(bars, market(BUY, 1.0, "m"), **ADVANCED)
    assert [f.timestamp for f in r.fills] == [t(2)] and r.executed_quantity == approx(1.0)


# ---------------------------------------------------------------- latency


@pytest.mark.parametrize("latency_ms, bar", [(0, 1), (59_999, 1), (60_000, 2), (90_000, 2), (120_000, 3)])
def test_latency_can_miss_the_intended_bar(latency_ms: float, bar: int) -> None:
    bars = [(100, 101, 99, 100), (110, 111, 109, 110), (120, 121, 119, 120)]
    _, [r] = replay(bars, market(BUY, 1.0, "m"), latency_ms=latency_ms)
    assert (r.executed_price, r.timestamp) == (100.0 + 10 * (bar - 1), t(bar))


def test_latency_past_the_last_bar_leaves_the_order_open() -> None:
    _, [r] = replay([(100, 101, 99, 100)], market(BUY, 1.0, "m"), latency_ms=60_000)
    assert r.status is OrderStatus.NEW and r.executed_quantity == 0.0


# ---------------------------------------------------------------- limits trade through


def test_limit_buy_touched_does_not_fill_then_fills_when_traded_through() -> None:
    bars = [(100, 105, 97, 102), (99, 100, 96.5, 98)]
    _, [basic] = replay(bars[:1], order(BUY, OrderType.LIMIT, 1.0, "b", price=97.0))
    assert basic.status is OrderStatus.FILLED  # the basic model fills on a touch
    _, [touched] = replay(bars[:1], order(BUY, OrderType.LIMIT, 1.0, "l", price=97.0), trade_through=True)
    assert touched.status is OrderStatus.NEW
    _, [through] = replay(bars, order(BUY, OrderType.LIMIT, 1.0, "l", price=97.0), trade_through=True)
    assert (through.executed_price, through.timestamp, through.fills[0].is_maker) == (97.0, t(2), True)
    assert through.fees == approx(0.097)


def test_limit_buy_at_the_open_is_a_touch_and_fills_as_maker_only_if_the_low_goes_through() -> None:
    _, [basic] = replay([(100, 101, 99, 100)], order(BUY, OrderType.LIMIT, 1.0, "b", price=100.0))
    assert (basic.executed_price, basic.fills[0].is_maker) == (100.0, False)  # basic: opens at L, taker
    _, [strict] = replay([(100, 101, 99, 100)], order(BUY, OrderType.LIMIT, 1.0, "s", price=100.0),
                         trade_through=True)
    assert (strict.executed_price, strict.fills[0].is_maker) == (100.0, True)
    _, [flat] = replay([(100, 101, 100, 100.5)], order(BUY, OrderType.LIMIT, 1.0, "f", price=100.0),
                       trade_through=True)
    assert flat.status is OrderStatus.NEW


def test_limit_sell_trades_through_mirror() -> None:
    bars = [(100, 105, 99, 101), (101, 106, 100, 104)]
    broker, clock = replay_broker(bars, trade_through=True)
    buy, sell = market(BUY, 1.0, "m"), order(SELL, OrderType.LIMIT, 1.0, "s", price=105.0)
    _, s = asyncio.run(place_and_run(broker, clock, [buy, sell], t(1)))
    assert s.status is OrderStatus.NEW  # the high only touches 105
    asyncio.run(clock.sleep_until(t(2)))
    s = asyncio.run(broker.get_order_status(s.order_id, SYM))
    assert (s.executed_price, s.timestamp, s.fills[0].is_maker) == (105.0, t(2), True)
    assert s.fees == approx(0.105)


def test_stop_limit_at_its_limit_needs_the_low_to_go_through() -> None:
    stop_limit = order(BUY, OrderType.STOP_LIMIT, 1.0, "sl", price=101.0, stop=101.0)
    _, [basic] = replay([(100, 103, 99, 102)], stop_limit)
    assert (basic.executed_price, basic.fills[0].is_maker) == (101.0, False)
    _, [strict] = replay([(100, 103, 99, 102)], stop_limit, trade_through=True)
    assert (strict.executed_price, strict.fills[0].is_maker) == (101.0, True)


def test_trade_through_search_is_vectorised_across_blocks() -> None:
    n = 3000  # > two blocks of 1024
    ts = pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC")
    low = pd.Series(100.0, index=range(n))
    low[1500] = 97.0  # a touch of L = 97
    low[2500] = 96.9  # through it
    bars = pd.DataFrame({"timestamp": ts, "open": 101.0, "high": 102.0, "low": low, "close": 101.0, "volume": 1.0})
    series = BarSeries.from_frame(bars)
    assert series.first_event(0, OrderType.LIMIT, BUY, 97.0, None) == 1500
    assert series.first_event(0, OrderType.LIMIT, BUY, 97.0, None, strict=True) == 2500
    high = bars["high"].copy()
    high[2000] = 105.0
    series = BarSeries.from_frame(bars.assign(high=high, low=99.0))
    assert series.first_event(0, OrderType.LIMIT, SELL, 105.0, None) == 2000
    assert series.first_event(0, OrderType.LIMIT, SELL, 105.0, None, strict=True) is None


# ---------------------------------------------------------------- fill models


def test_close_model_fills_at_the_close_of_the_bar_containing_the_order_time() -> None:
    bars = [(100, 105, 95, 101), (101, 106, 96, 102), (102, 107, 97, 103)]
    broker, clock = replay_broker(bars, fill_model="close", slippage_bps=10)
    orders = [order(BUY, OrderType.MARKET, 1.0, "mid", at=t(2.5)), order(BUY, OrderType.MARKET, 1.0, "on", at=t(3))]
    mid, on = asyncio.run(place_and_run(broker, clock, orders, t(3)))
    assert (mid.executed_price, mid.fills[0].reference_price, mid.timestamp) == (approx(102.102), 102.0, t(2.5))
    assert (on.executed_price, on.timestamp) == (approx(103.103), t(3))
    assert mid.fees == approx(0.102102)


def test_close_model_before_the_first_bar_uses_the_first_bar() -> None:
    _, [r] = replay([(100, 105, 95, 101), (101, 106, 96, 102)], market(BUY, 1.0, "m"), fill_model="close")
    assert (r.executed_price, r.timestamp) == (101.0, t(1))


def test_close_model_with_latency_and_a_participation_remainder() -> None:
    bars = [(100, 105, 95, 101, 10), (101, 106, 96, 102, 10), (102, 107, 97, 103, 10)]
    placed = t(1) + pd.Timedelta(seconds=50)  # eligible at t(2) + 10 s: the bar of t(2)
    _, [r] = replay(bars, order(BUY, OrderType.MARKET, 1.5, "m", at=placed), fill_model="close", latency_ms=20_000,
                    max_participation=0.1)
    assert [(f.quantity, f.price, f.timestamp) for f in r.fills] == [
        (approx(1.0), 102.0, t(2) + pd.Timedelta(seconds=10)), (approx(0.5), 103.0, t(3))]
    assert r.status is OrderStatus.FILLED


def test_vwap_bar_model_fills_at_the_next_bars_typical_price() -> None:
    _, [r] = replay([(100, 105, 95, 102)], market(SELL, 1.0, "s"), fill_model="vwap-bar", slippage_bps=10,
                    cash=10_000)
    assert r.status is OrderStatus.REJECTED  # nothing to sell: refused, not clipped
    broker, clock = replay_broker([(100, 105, 95, 102), (102, 108, 99, 105)], fill_model="vwap-bar",
                                  slippage_bps=10)
    buy, sell = market(BUY, 1.0, "b"), market(SELL, 1.0, "s", at=t(1))
    b, s = asyncio.run(place_and_run(broker, clock, [buy, sell], t(2)))
    assert (b.executed_price, b.fills[0].reference_price) == (approx(302 / 3 * 1.001), approx(302 / 3))
    assert (s.executed_price, s.timestamp) == (approx(104 * 0.999), t(2))
    assert s.fees == approx(0.001 * 104 * 0.999)


def test_unknown_fill_model_or_negative_latency_is_refused() -> None:
    with pytest.raises(ValueError, match="fill_model"):
        replay_broker([(100, 101, 99, 100)], fill_model="midpoint")
    with pytest.raises(ValueError, match="latency_ms"):
        replay_broker([(100, 101, 99, 100)], latency_ms=-1)

