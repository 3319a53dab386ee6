"""USDT-margined perpetuals through the real ccxt client (``binance`` with defaultType swap
-> ``/fapi``; ``bybit`` category linear) against the emulator's futures account, over
HTTP: leverage, margin, long and short round trips, reduce-only refusals, and the venue's
positions agreeing with the ones the pipeline's book (step 7) records in the ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from brokers.base import (
    InsufficientFundsError,
    InvalidOrderError,
    Order,
    OrderResult,
    OrderStatus,
    OrderType,
    Side,
)
from brokers.ccxt import CcxtBroker
from brokers.emulator import EmulatorHandle, MarketSpec, serve
from brokers.emulator.futures import FuturesEngine
from tasks.context import Book
from tasks.positions import apply_fills, snapshot
from tests.brokers.ccxt.conftest import API_KEY, SECRET

pytestmark = pytest.mark.anyio
ENGINE_SYMBOL = "BTC/USDT"  # the emulator's name
SYMBOL = "BTC/USDT:USDT"  # ccxt's name of the USDT perpetual
SPEC = MarketSpec(ENGINE_SYMBOL, tick_size="0.1", step_size="0.001", min_qty="0.001", max_qty="1000",
                  min_notional="5")
TAKER, MAKER = 0.0005, 0.0002  # the venues' base futures fees
START = 1000.0
VENUES = ("binance", "bybit")
# the venue's own words for the two futures refusals
REDUCE_ONLY_WORDS = {"binance": "ReduceOnly Order is rejected.", "bybit": "Reduce-only rule not satisfied"}
MARGIN_WORDS = {"binance": "Margin is insufficient.", "bybit": "ab not enough for new order"}
SET_LEVERAGE = {"binance": "/fapi/v1/leverage", "bybit": "/v5/position/set-leverage"}
PLACE = {"binance": "/fapi/v1/order", "bybit": "/v5/order/create"}


def flat_bars(n: int = 50, price: float = 100.0) -> pd.DataFrame:
    ts = pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC")
    return pd.DataFrame({"timestamp": ts, "open": price, "high": price + 1, "low": price - 1, "close": price,
                         "volume": 1000.0})


@pytest.fixture(params=VENUES)
def venue(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def emulator(venue: str) -> Iterator[EmulatorHandle]:
    with serve(venue, api_key=API_KEY, secret=SECRET, bars={ENGINE_SYMBOL: flat_bars()}, balances={"USDT": START},
               specs=[SPEC], market_type="swap", taker_fee=TAKER, maker_fee=MAKER) as handle:
        yield handle


@pytest.fixture
def connect(emulator: EmulatorHandle, venue: str) -> Iterator[Callable[..., CcxtBroker]]:
    def make(**overrides: Any) -> CcxtBroker:
        settings: dict[str, Any] = {"api_key": API_KEY, "secret": SECRET, "base_url": emulator.base_url,
                                    "market_type": "swap", "leverage": 5, "name": f"{venue}-futures-emulator"}
        settings.update(overrides)
        return CcxtBroker(venue, **settings)

    yield make


@pytest.fixture
async def broker(connect: Callable[..., CcxtBroker]) -> AsyncIterator[CcxtBroker]:
    async with connect() as connected:
        yield connected


def engine_of(emulator: EmulatorHandle) -> FuturesEngine:
    assert isinstance(emulator.engine, FuturesEngine)
    return emulator.engine


def requests_to(emulator: EmulatorHandle, path: str) -> int:
    return sum(1 for _, _, p in emulator.engine.requests if p == path)


def market(side: Side, qty: float, cid: str, **kw: Any) -> Order:
    return Order(SYMBOL, side, OrderType.MARKET, qty, cid, **kw)


async def test_ccxt_loads_the_perpetual_and_its_limits(broker: CcxtBroker) -> None:
    m = broker.exchange.markets[SYMBOL]
    assert (m["type"], m["linear"], m["settle"], m["contractSize"]) == ("swap", True, "USDT", 1.0)
    limits = broker.market_limits([SYMBOL])[SYMBOL]
    assert (limits.amount_step, limits.price_step, limits.min_amount, limits.min_notional) == (0.001, 0.1, 0.001, 5.0)


async def test_leverage_is_set_once_and_a_position_locks_notional_over_leverage(
    broker: CcxtBroker, emulator: EmulatorHandle, venue: str
) -> None:
    engine = engine_of(emulator)
    assert engine.leverage(ENGINE_SYMBOL) != 5
    await broker.place_order(market(Side.BUY, 2.0, "tp-lev-1"))
    await broker.place_order(market(Side.BUY, 1.0, "tp-lev-2"))
    assert engine.leverage(ENGINE_SYMBOL) == 5 and requests_to(emulator, SET_LEVERAGE[venue]) == 1
    assert engine.position_margin() == Decimal(300) / 5  # 3 BTC at 100, 5x
    account = await broker.get_account_info()
    fees = 300 * TAKER
    assert account.balances["USDT"] == pytest.approx(START - fees)  # the wallet: margin is not spent
    assert account.locked["USDT"] == pytest.approx(60.0)
    [position] = await broker.get_positions()
    assert (position.symbol, position.quantity, position.average_price) == (SYMBOL, 3.0, 100.0)


@pytest.mark.parametrize("venue", ["bybit"])
async def test_setting_the_leverage_already_set_is_not_an_error(
    connect: Callable[..., CcxtBroker], emulator: EmulatorHandle
) -> None:
    """Bybit refuses a set-leverage to the current leverage (110043 "Set leverage not
    modified"); the broker takes that as done."""
    async with connect(leverage=engine_of(emulator).leverage(ENGINE_SYMBOL)) as broker:
        result = await broker.place_order(market(Side.BUY, 1.0, "tp-lev-3"))
    assert result.status is OrderStatus.FILLED and requests_to(emulator, "/v5/position/set-leverage") == 1


@pytest.mark.parametrize("side", [Side.BUY, Side.SELL], ids=["long", "short"])
async def test_a_position_opens_and_closes_with_its_profit_in_the_wallet(
    broker: CcxtBroker, emulator: EmulatorHandle, side: Side
) -> None:
    engine = engine_of(emulator)
    opened = await broker.place_order(market(side, 2.0, "tp-rt-1"))
    assert opened.status is OrderStatus.FILLED and opened.executed_price == 100.0
    sign = 1.0 if side is Side.BUY else -1.0
    [position] = await broker.get_positions()
    assert position.quantity == 2.0 * sign and position.average_price == 100.0
    engine.set_price(ENGINE_SYMBOL, 110)
    account = await broker.get_account_info()
    assert account.equity == pytest.approx(START - 200 * TAKER + 20.0 * sign)  # marked at 110
    closing = Side.SELL if side is Side.BUY else Side.BUY
    closed = await broker.place_order(market(closing, 2.0, "tp-rt-2", reduce_only=True))
    assert closed.status is OrderStatus.FILLED and closed.executed_price == 110.0
    assert await broker.get_positions() == []
    account = await broker.get_account_info()
    fees = (200 + 220) * TAKER
    assert account.balances["USDT"] == pytest.approx(START + 20.0 * sign - fees)
    assert account.locked.get("USDT", 0.0) == 0.0 and engine.position_margin() == 0
    assert account.equity == pytest.approx(account.balances["USDT"])


async def test_reduce_only_is_refused_when_it_would_open_or_grow_a_position(
    broker: CcxtBroker, emulator: EmulatorHandle, venue: str
) -> None:
    with pytest.raises(InvalidOrderError) as flat:  # nothing to reduce
        await broker.place_order(market(Side.SELL, 1.0, "tp-ro-1", reduce_only=True))
    await broker.place_order(market(Side.BUY, 1.0, "tp-ro-2"))
    with pytest.raises(InvalidOrderError) as same_side:  # would grow the long
        await broker.place_order(market(Side.BUY, 0.5, "tp-ro-3", reduce_only=True))
    with pytest.raises(InvalidOrderError) as too_big:  # would turn it into a short
        await broker.place_order(market(Side.SELL, 1.5, "tp-ro-4", reduce_only=True))
    for refused, cid in ((flat, "tp-ro-1"), (same_side, "tp-ro-3"), (too_big, "tp-ro-4")):
        assert not refused.value.retryable and refused.value.broker_message is not None
        assert REDUCE_ONLY_WORDS[venue] in refused.value.broker_message and cid in str(refused.value)
    assert [o.client_order_id for o in emulator.engine.orders.values()] == ["tp-ro-2"]
    reduced = await broker.place_order(market(Side.SELL, 1.0, "tp-ro-5", reduce_only=True))
    assert reduced.status is OrderStatus.FILLED and await broker.get_positions() == []


async def test_an_order_beyond_the_margin_is_refused_as_insufficient_funds(
    broker: CcxtBroker, emulator: EmulatorHandle, venue: str
) -> None:
    # 5x on 1000 USDT: at most ~49.9 BTC at 100 (plus fees); 60 BTC needs 1200 of margin
    with pytest.raises(InsufficientFundsError) as refused:
        await broker.place_order(market(Side.SELL, 60.0, "tp-margin-1"))
    assert MARGIN_WORDS[venue] in str(refused.value) and not refused.value.retryable
    assert not emulator.engine.orders and engine_of(emulator).wallet() == Decimal(START)
    opened = await broker.place_order(market(Side.SELL, 40.0, "tp-margin-2"))  # 800 of margin: fits
    assert opened.status is OrderStatus.FILLED and engine_of(emulator).position_margin() == 800


async def test_a_resting_limit_reserves_its_margin_fills_on_the_path_and_cancels(
    broker: CcxtBroker, emulator: EmulatorHandle
) -> None:
    engine = engine_of(emulator)
    resting = await broker.place_order(Order(SYMBOL, Side.BUY, OrderType.LIMIT, 1.0, "tp-lim-1", price=90.0))
    assert resting.status is OrderStatus.NEW
    assert float(engine.order_margin()) == pytest.approx(90 / 5 + 90 * TAKER)
    [(order, state)] = await broker.get_open_orders(SYMBOL)
    assert (order.client_order_id, order.price, state.order_id) == ("tp-lim-1", 90.0, resting.order_id)
    assert [o.client_order_id for o, _ in await broker.get_open_orders()] == ["tp-lim-1"]  # all symbols
    found = await broker.get_order_by_client_id("tp-lim-1", SYMBOL)
    assert found is not None and found.order_id == resting.order_id
    assert await broker.get_order_by_client_id("tp-never-sent", SYMBOL) is None
    canceled = await broker.cancel_order(resting.order_id, SYMBOL)
    assert canceled.status is OrderStatus.CANCELED and engine.order_margin() == 0
    assert engine.free("USDT") == Decimal(START)

    short_entry = await broker.place_order(Order(SYMBOL, Side.SELL, OrderType.LIMIT, 1.0, "tp-lim-2", price=105.0))
    assert short_entry.status is OrderStatus.NEW
    engine.set_price(ENGINE_SYMBOL, 106)  # the price gaps through the limit: filled at 106, a taker
    filled = await broker.get_order_status(short_entry.order_id, SYMBOL)
    assert filled.status is OrderStatus.FILLED and filled.executed_price == 106.0
    assert filled.fees == pytest.approx(106 * TAKER)
    engine.set_price(ENGINE_SYMBOL, 104)
    [position] = await broker.get_positions()
    assert (position.quantity, position.average_price, position.market_price) == (-1.0, 106.0, 104.0)
    assert position.unrealized_pnl == pytest.approx(2.0)


def booked_positions(results: list[OrderResult], tmp_path: Path) -> dict[str, float]:
    """The fills of ``results`` booked as step 7 books them, snapshotted and recorded in a
    ledger as the recorder does; the latest quantity per symbol read back from it."""
    from tradpal.ledger import Ledger
    from tradpal.ledger.ledger import Provenance

    fills = [f for r in results for f in r.fills]
    reports = pd.DataFrame({
        "symbol": [f.symbol for f in fills], "side": [f.side.value for f in fills],
        "last_qty": np.array([f.quantity for f in fills]), "last_px": np.array([f.price for f in fills]),
        "last_fee": np.array([f.fee for f in fills]), "fee_currency": [f.fee_currency for f in fills]})
    book = Book(cash=START, quote_currency="USDT")
    apply_fills(reports, book)
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        run = ledger.start_run("live", {})
        with ledger.transaction() as s:
            ledger.record_positions(s, snapshot(book, pd.Timestamp.now(tz="UTC")), prov=Provenance(run_id=run))
        recorded = ledger.frame("positions", run_id=run)
    finally:
        ledger.close()
    return {row.symbol: float(row.quantity) for row in recorded.itertuples() if abs(row.quantity) > 1e-12}


async def test_the_venues_positions_agree_with_the_ledgers(
    broker: CcxtBroker, emulator: EmulatorHandle, tmp_path: Path
) -> None:
    """Long, grow, partly close, flip to short through zero (not reduce-only), partly
    cover: after every order, the venue's position is the one the book records."""
    engine = engine_of(emulator)
    steps = [(Side.BUY, 1.5, 100), (Side.BUY, 0.5, 102), (Side.SELL, 1.0, 104), (Side.SELL, 2.5, 101),
             (Side.BUY, 0.25, 99)]
    results: list[OrderResult] = []
    for i, (side, qty, price) in enumerate(steps):
        engine.set_price(ENGINE_SYMBOL, price)
        results.append(await broker.place_order(market(side, qty, f"tp-book-{i}")))
        venue_positions = {p.symbol: p.quantity for p in await broker.get_positions()}
        assert venue_positions == pytest.approx(booked_positions(results, tmp_path / str(i)))
    assert venue_positions == {SYMBOL: pytest.approx(-1.25)}
    [position] = await broker.get_positions()
    assert position.average_price == 101.0  # the short was opened at 101


@pytest.mark.parametrize("fault", ["lose_next", "drop_next", "fail_next"])
async def test_a_futures_placement_under_a_fault_ends_in_exactly_one_order(
    broker: CcxtBroker, emulator: EmulatorHandle, venue: str, fault: str
) -> None:
    from tests.brokers.ccxt.test_faults import place_retrying

    emulator.engine.faults.update({fault: 1, "fault_on": f"POST {PLACE[venue]}"})
    result, errors = await place_retrying(broker, market(Side.SELL, 1.0, "tp-ffault-1"))
    assert errors and errors[0].retryable
    assert result.status is OrderStatus.FILLED and result.client_order_id == "tp-ffault-1"
    [order] = emulator.engine.orders.values()
    assert str(order.order_id) == result.order_id
    [position] = await broker.get_positions()
    assert position.quantity == -1.0  # one short, never two


async def test_the_minimum_notional_refuses_a_small_order_but_not_a_small_close(
    broker: CcxtBroker, emulator: EmulatorHandle
) -> None:
    """5 USDT minimum: 0.02 BTC at 100 (2 USDT) cannot open, but closes a position's rest."""
    with pytest.raises(InvalidOrderError) as small:
        await broker.place_order(market(Side.SELL, 0.02, "tp-min-1"))
    assert "minimum" in str(small.value) or "no smaller than" in str(small.value)
    await broker.place_order(market(Side.SELL, 0.07, "tp-min-2"))  # 7 USDT: opens
    await broker.place_order(market(Side.BUY, 0.05, "tp-min-3", reduce_only=True))  # 5 USDT: closes most
    rest = await broker.place_order(market(Side.BUY, 0.02, "tp-min-4", reduce_only=True))
    assert rest.status is OrderStatus.FILLED and await broker.get_positions() == []
