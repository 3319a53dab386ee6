"""The paper broker's bar arrays and vectorised event search, against brute force."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest

from brokers.base.clock import SimulatedClock
from brokers.base.types import Order, OrderType, Side, TimeInForce
from brokers.paper import PaperBroker
from brokers.paper.fills import evaluate
from brokers.paper.market import BLOCK, BarSeries
from tests.brokers.helpers import SYM, T0


def random_bars(n: int, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 2e-3, n)))
    open_ = np.r_[100.0, close[:-1]] * (1 + rng.normal(0, 5e-4, n))  # some gaps
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 2e-3, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 2e-3, n))
    return pd.DataFrame(
        {
            "timestamp": pd.date_range(T0 + pd.Timedelta(minutes=1), periods=n, freq="1min"),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": rng.uniform(0.5, 5.0, n),
        }
    )


def brute_force_first_event(
    series: BarSeries, start: int, kind: OrderType, side: Side, level: float
) -> int | None:
    price = level if kind is OrderType.LIMIT else None
    stop = level if kind is not OrderType.LIMIT else None
    for i in range(start, len(series)):
        outcome = evaluate(kind, side, price, stop, series.bar(i), 0.0)
        if outcome.quote is not None or outcome.triggered:
            return i
    return None


@pytest.mark.parametrize("kind", [OrderType.LIMIT, OrderType.STOP])
@pytest.mark.parametrize("side", [Side.BUY, Side.SELL])
def test_first_event_matches_bar_by_bar_evaluation(kind: OrderType, side: Side) -> None:
    series = BarSeries.from_frame(random_bars(3 * BLOCK + 17))
    rng = np.random.default_rng(1)
    starts = [
        0,
        BLOCK - 1,
        BLOCK,
        2 * BLOCK + 5,
        len(series) - 1,
        len(series),
        *rng.integers(0, len(series), 20),
    ]
    for start in starts:
        for level in (*rng.uniform(90, 110, 6), float(series.close[min(start, len(series) - 1)])):
            fast = series.first_event(int(start), kind, side, level, level)
            assert fast == brute_force_first_event(series, int(start), kind, side, level), (start, level)


def test_timestamps_are_read_as_utc_nanoseconds() -> None:
    bars = random_bars(3)
    naive = bars.assign(timestamp=bars["timestamp"].dt.tz_localize(None).astype("datetime64[us]"))
    series = BarSeries.from_frame(naive)
    assert series.timestamp(0) == T0 + pd.Timedelta(minutes=1)
    assert series.ts.dtype == np.int64


def test_bad_frames_are_refused() -> None:
    bars = random_bars(3)
    with pytest.raises(ValueError, match="sorted and unique"):
        BarSeries.from_frame(bars.iloc[[0, 2, 1]])
    with pytest.raises(ValueError, match="sorted and unique"):
        BarSeries.from_frame(bars.iloc[[0, 1, 1]])
    with pytest.raises(ValueError, match="volume"):
        BarSeries.from_frame(bars.drop(columns="volume"))
    with pytest.raises(ValueError, match="NaN"):
        BarSeries.from_frame(bars.assign(low=[1.0, np.nan, 1.0]))


def run_replay(bars: pd.DataFrame, stops: list[pd.Timestamp], participation: float | None) -> list[tuple]:
    """Place a mix of orders along the bars, advance the clock through ``stops``."""
    clock = SimulatedClock(T0)
    broker = PaperBroker(cash=50_000.0, clock=clock, slippage_bps=3, max_participation=participation)
    broker.add_market_data(SYM, bars)
    closes = bars["close"].to_numpy()
    kinds = [OrderType.MARKET, OrderType.LIMIT, OrderType.STOP, OrderType.STOP_LIMIT]
    tifs = [TimeInForce.GTC, TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK]

    async def scenario() -> list[tuple]:
        ids = []
        for k in range(120):
            i = (k * 37) % (len(bars) - 1)
            side = Side.BUY if k % 3 else Side.SELL
            sign = -1 if side is Side.BUY else 1
            ref = float(closes[i])
            order = Order(
                symbol=SYM,
                side=side,
                order_type=kinds[k % 4],
                quantity=1.0 + (k % 5),
                client_order_id=f"c{k}",
                price=ref * (1 + sign * 0.002 * (k % 3)) if k % 4 in (1, 3) else None,
                stop_price=ref * (1 - sign * 0.003) if k % 4 >= 2 else None,
                time_in_force=tifs[(k // 4) % 4],
                placed_at=bars["timestamp"].iloc[i],
            )
            ids.append((await broker.place_order(order)).order_id)
        for stop in stops:
            await clock.sleep_until(stop)
        results = [await broker.get_order_status(order_id, SYM) for order_id in ids]
        return [(r.status, r.executed_quantity, r.fees, r.reason, r.fills) for r in results]

    return asyncio.run(scenario())


@pytest.mark.parametrize("participation", [None, 0.3])
def test_advancing_in_chunks_gives_the_same_fills_as_one_advance(participation: float | None) -> None:
    bars = random_bars(2 * BLOCK + 100)
    end = bars["timestamp"].iloc[-1]
    chunked = list(bars["timestamp"].iloc[::97]) + [end]
    one = run_replay(bars, [end], participation)
    assert one == run_replay(bars, chunked, participation)
    assert {r[0].value for r in one} >= {"FILLED", "EXPIRED", "REJECTED"}
