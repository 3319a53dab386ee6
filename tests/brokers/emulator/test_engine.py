"""The emulator's matching engine on its own: reservations, matching, refusals.

Bars (one-minute, volume 10 unless told): bar 0 closes at 100; bar 1 is
(o 101, h 103, l 98, c 102); bar 2 is (o 97, h 99, l 95, c 96).
Fees: maker 0.05%, taker 0.1%, in the quote currency (USDT).
"""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from brokers.base.types import Side
from brokers.emulator import Engine, MarketSpec, VenueError
from tests.conftest import make_bars

SYM = "BTC/USDT"
SPEC = MarketSpec(SYM, tick_size="0.01", step_size="0.001", min_qty="0.001", max_qty="100", min_notional="10")
ROWS = [(99, 101, 98, 100, 10), (101, 103, 98, 102, 10), (97, 99, 95, 96, 10)]


def engine(rows=ROWS, *, usdt: str = "10000", btc: str = "1", **kw: object) -> Engine:
    return Engine({SYM: make_bars(rows)}, {"USDT": usdt, "BTC": btc}, specs=[SPEC],
                  maker_fee=0.0005, taker_fee=0.001, **kw)  # type: ignore[arg-type]


def place(e: Engine, side: Side, kind: str, qty: str, coid: str, **kw: object):
    prices = {k: D(str(v)) for k, v in kw.items() if k in ("price", "stop_price")}
    tif = str(kw.get("tif", "GTC"))
    return e.place(SYM, side, kind, D(qty), client_order_id=coid, tif=tif, **prices)


def test_a_market_buy_fills_at_the_current_close_and_pays_the_taker_fee() -> None:
    e = engine()
    order = place(e, Side.BUY, "MARKET", "2", "m1")
    assert (order.status, order.executed, order.quote_executed) == ("FILLED", D(2), D(200))
    [trade] = order.trades
    assert (trade.price, trade.commission, trade.commission_asset, trade.is_maker) == (D(100), D("0.2"), "USDT", False)
    assert e.free("USDT") == D("9799.8") and e.free("BTC") == D(3)
    assert e.locked("USDT") == 0


def test_a_resting_buy_reserves_its_cost_and_a_cancel_releases_it() -> None:
    e = engine()
    order = place(e, Side.BUY, "LIMIT", "1.5", "l1", price="90")
    assert order.status == "NEW"
    assert e.locked("USDT") == D("135.135") and e.free("USDT") == D("9864.865")  # 1.5 x 90 x 1.001
    e.cancel(SYM, order_id=order.order_id)
    assert (order.status, e.locked("USDT"), e.free("USDT")) == ("CANCELED", 0, D(10000))


def test_a_resting_sell_reserves_the_base() -> None:
    e = engine()
    place(e, Side.SELL, "LIMIT", "0.75", "s1", price="150")
    assert (e.free("BTC"), e.locked("BTC")) == (D("0.25"), D("0.75"))


def test_a_limit_buy_fills_at_its_limit_when_the_bar_trades_through_it() -> None:
    e = engine()
    order = place(e, Side.BUY, "LIMIT", "1", "l1", price="99")
    e.advance()  # bar 1 opens at 101 > 99, low 98 reaches 99: maker at 99
    assert order.status == "FILLED" and order.trades[0].price == D(99) and order.trades[0].is_maker
    assert order.trades[0].commission == D("0.0495")
    assert e.free("USDT") == D(10000) - D(99) - D("0.0495") and e.locked("USDT") == 0


def test_a_limit_buy_fills_at_the_open_when_the_bar_gaps_through_it() -> None:
    e = engine()
    order = place(e, Side.BUY, "LIMIT", "1", "l1", price="97.5")
    e.advance()  # bar 1: low 98, no fill
    assert order.status == "NEW"
    e.advance()  # bar 2 opens at 97 <= 97.5: taker at the open; the unused reservation returns
    assert (order.status, order.trades[0].price, order.trades[0].is_maker) == ("FILLED", D(97), False)
    assert e.free("USDT") == D(10000) - D(97) - D("0.097") and e.locked("USDT") == 0


def test_set_price_matches_resting_orders() -> None:
    e = engine()
    order = place(e, Side.SELL, "LIMIT", "1", "s1", price="110")
    e.set_price(SYM, "109.99")
    assert order.status == "NEW"
    e.set_price(SYM, "111")
    assert (order.status, order.trades[0].price) == ("FILLED", D(111))
    assert e.price(SYM) == D(111)
    e.advance()
    assert e.price(SYM) == D(102)  # the override lasts until the next bar


def test_liquidity_gives_partial_fills_and_the_reservation_follows() -> None:
    e = engine(liquidity_fraction=0.25)  # 2.5 BTC per bar
    order = place(e, Side.BUY, "LIMIT", "4", "p1", price="105")
    assert (order.status, order.executed) == ("PARTIALLY_FILLED", D("2.5"))
    assert e.locked("USDT") == D("157.6575")  # 1.5 x 105 x 1.001 left
    e.advance()  # bar 1 opens at 101: the rest, at the open
    assert (order.status, [t.qty for t in order.trades]) == ("FILLED", [D("2.5"), D("1.5")])
    assert e.locked("USDT") == 0
    assert e.free("USDT") == D(10000) - D(250) - D("0.25") - D("151.5") - D("0.1515")


def test_ioc_expires_the_rest_and_fok_fills_all_or_nothing() -> None:
    e = engine(liquidity_fraction=0.1)  # 1 BTC on bar 0
    ioc = place(e, Side.BUY, "LIMIT", "3", "i1", price="100", tif="IOC")
    assert (ioc.status, ioc.executed) == ("EXPIRED", D(1))
    e.advance()
    fok = place(e, Side.BUY, "LIMIT", "3", "f1", price="102", tif="FOK")
    assert (fok.status, fok.executed, fok.trades) == ("EXPIRED", D(0), [])
    assert e.locked("USDT") == 0


def test_a_stop_limit_triggers_then_fills() -> None:
    e = engine()
    stop = place(e, Side.BUY, "STOP_LOSS_LIMIT", "1", "st1", price="102.5", stop_price="102")
    assert (stop.status, stop.triggered) == ("NEW", False)
    e.advance()  # bar 1: high 103 >= 102 triggers at max(102, open 101) = 102 <= limit
    assert (stop.status, stop.trades[0].price) == ("FILLED", D(102))
    with pytest.raises(VenueError, match="would trigger immediately"):
        place(e, Side.SELL, "STOP_LOSS", "1", "st2", stop_price="103")


def test_a_duplicate_client_id_is_refused_only_while_its_order_is_open() -> None:
    e = engine()
    first = place(e, Side.BUY, "LIMIT", "1", "dup", price="90")
    with pytest.raises(VenueError, match="Duplicate order sent") as caught:
        place(e, Side.BUY, "LIMIT", "1", "dup", price="90")
    assert caught.value.code == -2010 and len(e.orders) == 1
    e.cancel(SYM, client_order_id="dup")
    second = place(e, Side.BUY, "LIMIT", "1", "dup", price="90")  # as on Binance: reusable once closed
    assert e.find(SYM, client_order_id="dup") is second and second is not first


@pytest.mark.parametrize(
    ("side", "kind", "qty", "price", "code", "words"),
    [
        (Side.BUY, "MARKET", "200", None, -1013, "LOT_SIZE"),
        (Side.BUY, "MARKET", "0.0015", None, -1013, "LOT_SIZE"),
        (Side.BUY, "LIMIT", "1", "99.999", -1013, "PRICE_FILTER"),
        (Side.BUY, "MARKET", "0.05", None, -1013, "NOTIONAL"),
        (Side.BUY, "MARKET", "99.99", None, -2010, "insufficient balance"),
        (Side.SELL, "LIMIT", "1.001", "120", -2010, "insufficient balance"),
        (Side.BUY, "TAKE_PROFIT", "1", None, -1116, "orderType"),
    ],
)
def test_refusals_record_nothing(side: Side, kind: str, qty: str, price: str | None, code: int, words: str) -> None:
    e = engine()
    extra = {"price": price} if price else {}
    with pytest.raises(VenueError, match=words) as caught:
        place(e, side, kind, qty, "bad", **extra)
    assert caught.value.code == code
    assert e.orders == {} and e.locked("USDT") == 0 and e.free("USDT") == D(10000)


def test_commission_in_the_received_currency() -> None:
    e = engine(commission="received")
    buy = place(e, Side.BUY, "MARKET", "1", "r1")
    assert (buy.trades[0].commission, buy.trades[0].commission_asset) == (D("0.001"), "BTC")
    assert e.free("BTC") == D("1.999") and e.free("USDT") == D(9900)


def test_advance_stops_at_the_last_bar() -> None:
    e = engine()
    assert e.advance(10) == 2 and e.price(SYM) == D(96)
