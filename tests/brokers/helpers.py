"""Small builders for the paper broker tests: bars at one-minute steps after T0."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pandas as pd

from brokers.base.clock import SimulatedClock
from brokers.base.types import Order, OrderResult, OrderType, Side, TimeInForce
from brokers.paper import PaperBroker

SYM = "BTC/USDT"
T0 = pd.Timestamp("2024-01-01 00:00", tz="UTC")

Row = tuple[float, ...]  # (open, high, low, close) or (open, high, low, close, volume)


def t(minute: float) -> pd.Timestamp:
    """T0 plus ``minute`` minutes; bar i (1-based) of ``frame`` is stamped t(i)."""
    return T0 + pd.Timedelta(minutes=minute)


def frame(rows: Sequence[Row], first: int = 1) -> pd.DataFrame:
    """Bars at t(first), t(first + 1), ...; volume defaults to 1000."""
    return pd.DataFrame(
        {
            "timestamp": [t(first + i) for i in range(len(rows))],
            "open": [r[0] for r in rows],
            "high": [r[1] for r in rows],
            "low": [r[2] for r in rows],
            "close": [r[3] for r in rows],
            "volume": [r[4] if len(r) > 4 else 1000.0 for r in rows],
        }
    )


def order(
    side: Side,
    kind: OrderType,
    quantity: float,
    coid: str,
    *,
    price: float | None = None,
    stop: float | None = None,
    tif: TimeInForce = TimeInForce.GTC,
    at: pd.Timestamp | None = T0,
    symbol: str = SYM,
) -> Order:
    """An order placed at ``at`` (T0 unless told)."""
    return Order(
        symbol=symbol,
        side=side,
        order_type=kind,
        quantity=quantity,
        client_order_id=coid,
        price=price,
        stop_price=stop,
        time_in_force=tif,
        placed_at=at,
    )


def market(side: Side, quantity: float, coid: str, at: pd.Timestamp | None = T0) -> Order:
    return order(side, OrderType.MARKET, quantity, coid, at=at)


def replay_broker(
    rows: Sequence[Row], cash: float = 10_000.0, **kw: object
) -> tuple[PaperBroker, SimulatedClock]:
    """A replay broker on a simulated clock at T0, with ``rows`` loaded for SYM."""
    clock = SimulatedClock(T0)
    broker = PaperBroker(cash=cash, clock=clock, **kw)  # type: ignore[arg-type]
    broker.add_market_data(SYM, frame(rows))
    return broker, clock


async def place_and_run(
    broker: PaperBroker, clock: SimulatedClock, orders: Sequence[Order], until: pd.Timestamp
) -> list[OrderResult]:
    """Place ``orders`` in sequence, advance the clock to ``until``, return their status."""
    placed = [await broker.place_order(o) for o in orders]
    await clock.sleep_until(until)
    return [
        await broker.get_order_status(p.order_id, p_order.symbol)
        for p, p_order in zip(placed, orders, strict=True)
    ]


def replay(
    rows: Sequence[Row],
    *orders: Order,
    until: pd.Timestamp | None = None,
    cash: float = 10_000.0,
    **kw: object,
) -> tuple[PaperBroker, list[OrderResult]]:
    """Load ``rows``, place ``orders``, run the clock through every bar (or ``until``)."""
    broker, clock = replay_broker(rows, cash=cash, **kw)
    end = until if until is not None else t(len(rows))
    return broker, asyncio.run(place_and_run(broker, clock, orders, end))
