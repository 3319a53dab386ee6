"""CcxtBroker through the real ccxt binance client, over HTTP, against the emulator.

Prices come from the first bars of data/sample/BITTREX_ETH-BTC_5m.csv:
bar 0 closes at 0.0994766; bar 1 is (o 0.09946999, h 0.0997238, l 0.099, c 0.09969, v 2527.92).
Fees are 0.1% maker and taker, charged in BTC, rounded to 8 decimals by the venue.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import httpx
import pandas as pd
import pytest

from brokers.base import (
    BrokerConnectionError,
    InsufficientFundsError,
    InvalidOrderError,
    Order,
    OrderNotFoundError,
    OrderStatus,
    OrderType,
    RateLimitError,
    Side,
    TimeInForce,
)
from brokers.ccxt import CcxtBroker
from brokers.emulator import EmulatorHandle
from tasks.placement import place_one
from tests.brokers.ccxt.conftest import SYMBOL, make_broker

pytestmark = pytest.mark.anyio

CLOSE0 = 0.0994766
FEE = 0.001
# what differs between the dialects, as the venues do it: Binance (as configured here)
# charges fees in the quote currency, Bybit in the asset received; an IOC / market
# remainder ends EXPIRED at Binance, Cancelled at Bybit; the venues' words for refusals
IN_QUOTE = {"binance": True, "bybit": False}
UNFILLED_REST = {"binance": OrderStatus.EXPIRED, "bybit": OrderStatus.CANCELED}
WORDS = {"binance": {"notional": "NOTIONAL", "lot-size": "LOT_SIZE", "trigger": "would trigger immediately",
                     "rate": "429"},
         "bybit": {"notional": "170140", "lot-size": "170136", "trigger": "170130", "rate": "10006"}}


def order(side: Side, kind: OrderType, quantity: float, coid: str, *, price: float | None = None,
          stop: float | None = None, tif: TimeInForce = TimeInForce.GTC, symbol: str = SYMBOL) -> Order:
    return Order(symbol=symbol, side=side, order_type=kind, quantity=quantity, client_order_id=coid,
                 price=price, stop_price=stop, time_in_force=tif)


async def admin(emulator: EmulatorHandle, path: str, **body: object) -> dict:
    async with httpx.AsyncClient(base_url=emulator.base_url) as client:
        response = await client.post(f"/admin/{path}", json=body)
        response.raise_for_status()
        return response.json()


async def test_market_order_fills_at_the_current_close(broker: CcxtBroker, venue: str) -> None:
    result = await broker.place_order(order(Side.BUY, OrderType.MARKET, 1.5, "tp-market-1"))

    in_quote = IN_QUOTE[venue]
    fee = 1.5 * CLOSE0 * FEE if in_quote else 1.5 * FEE  # BTC, or ETH (the asset received)
    assert result.status is OrderStatus.FILLED
    assert result.client_order_id == "tp-market-1"
    assert result.executed_quantity == 1.5
    assert result.executed_price == pytest.approx(CLOSE0, rel=1e-12)
    assert result.fees == pytest.approx(fee, abs=1e-8)
    assert result.fee_currency == ("BTC" if in_quote else "ETH")
    [fill] = result.fills
    assert fill.trade_id and fill.client_order_id == "tp-market-1" and not fill.is_maker
    assert (fill.quantity, fill.price, fill.side) == (1.5, pytest.approx(CLOSE0), Side.BUY)

    again = await broker.get_order_status(result.order_id, SYMBOL)  # fills from the venue's trades this time
    assert again.status is OrderStatus.FILLED
    assert [f.trade_id for f in again.fills] == [fill.trade_id]
    assert again.fees == pytest.approx(result.fees)

    account = await broker.get_account_info()
    eth = 6.5 - (0 if in_quote else fee)
    assert account.balances["ETH"] == pytest.approx(eth)
    assert account.balances["BTC"] == pytest.approx(10 - 1.5 * CLOSE0 - (fee if in_quote else 0), abs=1e-8)
    assert account.equity == pytest.approx(account.balances["BTC"] + eth * CLOSE0)
    [position] = await broker.get_positions()
    assert (position.symbol, position.quantity, position.market_price) == (SYMBOL, pytest.approx(eth),
                                                                          pytest.approx(CLOSE0))


async def test_limit_order_rests_then_fills_when_the_market_advances(
    broker: CcxtBroker, emulator: EmulatorHandle, venue: str
) -> None:
    placed = await broker.place_order(order(Side.BUY, OrderType.LIMIT, 2.0, "tp-limit-1", price=0.0992))
    assert placed.status is OrderStatus.NEW and placed.executed_quantity == 0 and placed.fills == ()
    account = await broker.get_account_info()
    assert account.locked["BTC"] == pytest.approx(2.0 * 0.0992 * (1 + (FEE if IN_QUOTE[venue] else 0)))

    await admin(emulator, "advance", bars=1)  # bar 1: opens above 0.0992, low 0.099 reaches it

    filled = await broker.get_order_status(placed.order_id, SYMBOL)
    assert filled.status is OrderStatus.FILLED
    assert filled.executed_price == pytest.approx(0.0992)
    [fill] = filled.fills
    assert fill.is_maker and fill.fee == pytest.approx(2.0 * (0.0992 if IN_QUOTE[venue] else 1) * FEE, abs=1e-8)
    assert "BTC" not in (await broker.get_account_info()).locked


async def test_limit_order_fills_when_the_price_is_set(broker: CcxtBroker, emulator: EmulatorHandle) -> None:
    placed = await broker.place_order(order(Side.SELL, OrderType.LIMIT, 1.0, "tp-limit-2", price=0.101))
    assert placed.status is OrderStatus.NEW

    await admin(emulator, "price", symbol=SYMBOL, price=0.1005)
    assert (await broker.get_order_status(placed.order_id, SYMBOL)).status is OrderStatus.NEW
    await admin(emulator, "price", symbol="ETHBTC", price=0.102)

    filled = await broker.get_order_status(placed.order_id, SYMBOL)
    assert filled.status is OrderStatus.FILLED
    assert filled.executed_price == pytest.approx(0.102)  # the price crossed the limit: taker at 0.102
    assert (await broker.get_account_info()).balances["ETH"] == pytest.approx(4.0)


async def test_stop_limit_triggers_on_the_bar_high(broker: CcxtBroker, emulator: EmulatorHandle, venue: str) -> None:
    placed = await broker.place_order(
        order(Side.BUY, OrderType.STOP_LIMIT, 1.0, "tp-stop-1", price=0.0998, stop=0.0997))
    assert placed.status is OrderStatus.NEW
    emulator.engine.advance()  # bar 1 high 0.0997238 reaches the stop

    filled = await broker.get_order_status(placed.order_id, SYMBOL)
    assert filled.status is OrderStatus.FILLED
    assert filled.executed_price == pytest.approx(0.0997)

    with pytest.raises(InvalidOrderError, match=WORDS[venue]["trigger"]):
        await broker.place_order(order(Side.BUY, OrderType.STOP_LIMIT, 1.0, "tp-stop-2", price=0.09, stop=0.09))


async def test_stop_market_and_ioc(broker: CcxtBroker, emulator: EmulatorHandle, venue: str) -> None:
    stop = await broker.place_order(order(Side.SELL, OrderType.STOP, 1.0, "tp-stop-3", stop=0.099))
    ioc = await broker.place_order(
        order(Side.BUY, OrderType.LIMIT, 1.0, "tp-ioc-1", price=0.098, tif=TimeInForce.IOC))
    assert (stop.status, ioc.status, ioc.executed_quantity) == (OrderStatus.NEW, UNFILLED_REST[venue], 0.0)
    emulator.engine.advance()  # bar 1 low 0.099 reaches the stop: a market sell at 0.099

    filled = await broker.get_order_status(stop.order_id, SYMBOL)
    assert (filled.status, filled.executed_price) == (OrderStatus.FILLED, pytest.approx(0.099))


async def test_cancel_releases_the_reservation(broker: CcxtBroker) -> None:
    placed = await broker.place_order(order(Side.BUY, OrderType.LIMIT, 2.0, "tp-cancel-1", price=0.09))

    canceled = await broker.cancel_order(placed.order_id, SYMBOL)

    assert canceled.status is OrderStatus.CANCELED
    assert canceled.client_order_id == "tp-cancel-1"
    assert canceled.reason
    assert (await broker.get_account_info()).locked == {}
    with pytest.raises(InvalidOrderError, match="it is CANCELED"):
        await broker.cancel_order(placed.order_id, SYMBOL)
    with pytest.raises(OrderNotFoundError):
        await broker.cancel_order("424242", SYMBOL)
    with pytest.raises(OrderNotFoundError):
        await broker.get_order_status("424242", SYMBOL)


async def test_an_order_larger_than_the_bar_liquidity_fills_partly(
    start_emulator: Callable[..., EmulatorHandle], venue: str
) -> None:
    emulator = start_emulator(liquidity_fraction=0.001)  # bar 0 offers 1.820 ETH, bar 1 offers 2.527
    async with make_broker(emulator) as broker:
        placed = await broker.place_order(order(Side.BUY, OrderType.LIMIT, 4.0, "tp-partial-1", price=0.1))
        assert placed.status is OrderStatus.PARTIALLY_FILLED
        assert placed.executed_quantity == pytest.approx(1.82)
        assert placed.executed_price == pytest.approx(CLOSE0)

        emulator.engine.advance()  # bar 1 opens at 0.09946999 <= 0.1: the rest at the open

        done = await broker.get_order_status(placed.order_id, SYMBOL)
        assert done.status is OrderStatus.FILLED
        assert [f.quantity for f in done.fills] == pytest.approx([1.82, 2.18])
        assert [f.price for f in done.fills] == pytest.approx([CLOSE0, 0.09946999])
        assert len({f.trade_id for f in done.fills}) == 2
        assert done.executed_price == pytest.approx((1.82 * CLOSE0 + 2.18 * 0.09946999) / 4.0)

        market = await broker.place_order(order(Side.SELL, OrderType.MARKET, 3.0, "tp-partial-2"))
        assert market.status is UNFILLED_REST[venue]  # bar 1 has 0.347 ETH left: the rest expires
        assert market.executed_quantity == pytest.approx(0.347)


async def test_get_order_by_client_id(broker: CcxtBroker) -> None:
    placed = await broker.place_order(order(Side.BUY, OrderType.LIMIT, 1.0, "tp-lookup-1", price=0.09))

    found = await broker.get_order_by_client_id("tp-lookup-1", SYMBOL)

    assert found is not None and found.order_id == placed.order_id and found.status is OrderStatus.NEW
    assert await broker.get_order_by_client_id("tp-never-sent", SYMBOL) is None


async def test_a_duplicate_client_id_creates_no_second_order(
    broker: CcxtBroker, emulator: EmulatorHandle, venue: str
) -> None:
    resting = order(Side.BUY, OrderType.LIMIT, 1.0, "tp-dup-1", price=0.09)
    first = await broker.place_order(resting)
    second = await broker.place_order(resting)  # the venue says "Duplicate order sent.": reconciled
    assert second.order_id == first.order_id
    assert len(emulator.engine.orders) == 1

    # Binance lets a client id be reused once its order is closed: placement's look-up
    # before placing is what keeps a retried market order from filling twice.
    ctx = SimpleNamespace(broker=broker, sent_client_ids=set())
    market = order(Side.BUY, OrderType.MARKET, 1.0, "tp-dup-2")
    placed = await place_one(ctx, market)  # type: ignore[arg-type]
    retried = await place_one(ctx, market)  # type: ignore[arg-type]
    assert retried.order_id == placed.order_id and retried.status is OrderStatus.FILLED
    assert len(emulator.engine.orders) == 2
    assert (await broker.get_account_info()).balances["ETH"] == pytest.approx(6.0 - (0 if IN_QUOTE[venue] else FEE))


async def test_insufficient_balance(broker: CcxtBroker, emulator: EmulatorHandle) -> None:
    with pytest.raises(InsufficientFundsError) as caught:
        await broker.place_order(order(Side.BUY, OrderType.MARKET, 200.0, "tp-funds-1"))
    message = str(caught.value)
    assert all(part in message.lower() for part in ("buy", "200.0", SYMBOL.lower(), "tp-funds-1", "insufficient balance"))
    assert not caught.value.retryable

    with pytest.raises(InsufficientFundsError):
        await broker.place_order(order(Side.SELL, OrderType.LIMIT, 6.0, "tp-funds-2", price=0.2))
    assert emulator.engine.orders == {}


@pytest.mark.parametrize(
    ("quantity", "symbol", "words"),
    [
        (0.005, SYMBOL, "notional"),  # 0.005 x 0.0995 BTC < 0.001 BTC: refused by the venue
        (2000.0, SYMBOL, "lot-size"),  # above maxQty 1000: refused by the venue
        (0.0004, SYMBOL, "precision"),  # rounds to 0 lots: refused by ccxt before sending
        (1.0, "XRP/BTC", "XRP/BTC"),  # unknown market
    ],
    ids=["notional", "lot-size", "precision", "symbol"],
)
async def test_filter_failures_are_invalid_orders(
    broker: CcxtBroker, emulator: EmulatorHandle, venue: str, quantity: float, symbol: str, words: str
) -> None:
    with pytest.raises(InvalidOrderError, match=WORDS[venue].get(words, words)) as caught:
        await broker.place_order(order(Side.BUY, OrderType.MARKET, quantity, "tp-filter-1", symbol=symbol))
    assert "tp-filter-1" in str(caught.value) and not caught.value.retryable
    assert emulator.engine.orders == {}


async def test_a_503_is_a_retryable_connection_error(broker: CcxtBroker, emulator: EmulatorHandle) -> None:
    emulator.engine.faults["fail_next"] = 1
    market = order(Side.BUY, OrderType.MARKET, 1.0, "tp-503-1")

    with pytest.raises(BrokerConnectionError) as caught:
        await broker.place_order(market)

    assert caught.value.retryable and "tp-503-1" in str(caught.value)
    assert emulator.engine.orders == {}  # refused before the matching engine
    assert (await broker.place_order(market)).status is OrderStatus.FILLED


async def test_a_lost_answer_is_found_again_by_client_id(broker: CcxtBroker, emulator: EmulatorHandle) -> None:
    emulator.engine.faults["lose_next"] = 1  # executed, then 503 "execution status unknown"
    market = order(Side.BUY, OrderType.MARKET, 1.0, "tp-lost-1")

    with pytest.raises(BrokerConnectionError) as caught:
        await broker.place_order(market)
    assert caught.value.retryable

    retried = await place_one(SimpleNamespace(broker=broker, sent_client_ids=set()), market)  # type: ignore[arg-type]
    assert retried.status is OrderStatus.FILLED and retried.client_order_id == "tp-lost-1"
    assert len(emulator.engine.orders) == 1


async def test_a_429_is_a_retryable_rate_limit_error(broker: CcxtBroker, emulator: EmulatorHandle, venue: str) -> None:
    emulator.engine.faults.update(rate_limit_next=1, retry_after_s=2)

    with pytest.raises(RateLimitError) as caught:
        await broker.get_order_by_client_id("tp-429-1", SYMBOL)

    assert caught.value.retryable and WORDS[venue]["rate"] in caught.value.broker_message
    assert await broker.get_order_by_client_id("tp-429-1", SYMBOL) is None


async def test_a_slow_venue_times_out_as_a_connection_error(emulator: EmulatorHandle) -> None:
    async with make_broker(emulator, timeout_ms=300) as broker:
        emulator.engine.faults["latency_ms"] = 1000
        with pytest.raises(BrokerConnectionError) as caught:
            await broker.get_account_info()
        emulator.engine.faults["latency_ms"] = 0
    assert caught.value.retryable


async def test_an_unreachable_venue_fails_connect() -> None:
    broker = CcxtBroker("binance", api_key="k", secret="s", base_url="http://127.0.0.1:9")
    with pytest.raises(BrokerConnectionError):
        await broker.connect()


async def test_wrong_secret_is_a_fatal_error_that_names_the_remedy(emulator: EmulatorHandle) -> None:
    async with make_broker(emulator, secret="not-the-secret") as broker:
        with pytest.raises(Exception) as caught:
            await broker.get_account_info()
    error = caught.value
    assert type(error).__name__ == "VenueAuthenticationError"
    assert not error.retryable
    assert "check the API key" in str(error)


async def test_a_client_id_the_venue_cannot_take_is_refused_before_sending(
    broker: CcxtBroker, emulator: EmulatorHandle
) -> None:
    with pytest.raises(InvalidOrderError, match="client order id"):
        await broker.place_order(order(Side.BUY, OrderType.MARKET, 1.0, "x" * 37))
    assert emulator.engine.orders == {}


def test_bars_fixture_matches_the_documented_prices(bars: pd.DataFrame) -> None:
    assert bars.close.iloc[0] == CLOSE0
    assert tuple(bars.iloc[1][["open", "high", "low", "close"]]) == (0.09946999, 0.0997238, 0.099, 0.09969)


async def test_market_limits_are_the_venues_filters(broker: CcxtBroker) -> None:
    limits = broker.market_limits([SYMBOL, "XRP/BTC"])
    assert list(limits) == [SYMBOL]  # the venue does not list XRP/BTC
    got = limits[SYMBOL]
    assert (got.amount_step, got.price_step, got.min_amount, got.max_amount, got.min_notional) == (
        0.001, 1e-8, 0.001, 1000.0, 0.001)
