"""Fixtures and builders for the step tests.

Bars are one minute apart, stamped t(1), t(2), ... after T0; signals are stamped T0
unless told, so the first bar is their first eligible bar in a replay. `build_context`
builds an `ExecutionContext` around a `PaperBroker` on a simulated clock (replay) or
the wall clock (live), with a `NullRecorder` (or, via `ledger_context`, a
`LedgerRecorder` on the ``ledger`` fixture's database).
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from brokers.base.clock import SimulatedClock, WallClock
from brokers.paper import PaperBroker
from tasks.context import Book, ExecutionContext, MarketData, PipelineConfig
from tasks.pipeline import STEP_BY_NAME, STEPS, run_step
from tasks.recorder import LedgerRecorder, NullRecorder
from tests.conftest import make_bars
from tradpal.ledger import Ledger

SYM = "BTC/USDT"
T0 = pd.Timestamp("2024-01-01 00:00", tz="UTC")
FLAT_100 = (100.0, 100.0, 100.0, 100.0)


def t(minute: float) -> pd.Timestamp:
    """T0 plus ``minute`` minutes."""
    return T0 + pd.Timedelta(minutes=minute)


def bars(rows: Sequence[tuple[float, ...]], first: int = 1) -> pd.DataFrame:
    """Bars at t(first), t(first + 1), ... from (open, high, low, close[, volume]) rows."""
    return make_bars(rows, start=t(first).isoformat())


def raw_signals(*rows: dict[str, Any]) -> pd.DataFrame:
    """Raw signals: each row's dict over defaults (id s<i>, T0, BTC/USDT, buy 1)."""
    base = {"timestamp": T0, "symbol": SYM, "side": "buy", "quantity": 1.0}
    return pd.DataFrame([{**base, "signal_id": f"s{i}", **r} for i, r in enumerate(rows, start=1)])


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def run_through(raw: pd.DataFrame, ctx: ExecutionContext, last: str) -> pd.DataFrame:
    """Run the steps from intake up to and including ``last`` (contracts validated)."""
    frame = raw
    for step in STEPS:
        frame = run(run_step(step, frame, ctx))
        if step.name == last:
            return frame
    raise ValueError(f"no step {last!r}")


def step(name: str):
    return STEP_BY_NAME[name]


def build_context(
    *,
    market: dict[str, pd.DataFrame] | None = None,
    prices: dict[str, float] | None = None,
    cash: float = 10_000.0,
    live: bool = False,
    start: pd.Timestamp = T0,
    config: PipelineConfig | None = None,
    recorder: Any = None,
    broker: Any = None,
    run_id: str | None = None,
    namespace: str = "test",
    **broker_kw: Any,
) -> ExecutionContext:
    """A context around a paper broker: replay (simulated clock at ``start``, ``market``
    bars loaded into the broker and the market data) or ``live`` (wall clock, ``prices``
    set as last prices). Fees are 0 unless given in ``broker_kw``."""
    market = {SYM: bars([FLAT_100] * 5)} if market is None else market
    clock: WallClock | SimulatedClock = WallClock() if live else SimulatedClock(start)
    paper = PaperBroker(cash=cash, clock=clock, **{"maker_fee": 0.0, "taker_fee": 0.0, **broker_kw})
    if live:
        for symbol, price in (prices or {}).items():
            paper.set_price(symbol, price)
    else:
        for symbol, frame in market.items():
            paper.add_market_data(symbol, frame)
    run_id = run_id or uuid.uuid4().hex
    return ExecutionContext(
        broker=broker(paper) if broker is not None else paper,
        clock=clock,
        config=config or PipelineConfig(),
        market=MarketData({} if live else market),
        book=Book(cash=cash, quote_currency="USDT"),
        recorder=recorder or NullRecorder(),
        run_id=run_id,
        namespace=namespace,
    )



def ledger_context(ledger: Ledger, kind: str = "replay", **kw: Any) -> ExecutionContext:
    """`build_context` with a `LedgerRecorder` on a run started in ``ledger``."""
    run_id = ledger.start_run(kind, {"test": True})
    ctx = build_context(run_id=run_id, **kw)
    ctx.recorder = LedgerRecorder(ledger, run_id=run_id, namespace=ctx.namespace, venue=ctx.venue)
    return ctx


class FlakyBroker:
    """Wraps a broker: calls of a method listed in ``fail`` raise a copy of ``error``
    (an int N: the first N calls; a set: those call numbers, from 1). Counts the calls
    of every listed method in ``calls``; everything else passes through. It stands for a
    venue over a network (its calls fail like one): placement sends a batch concurrently."""

    waits_on_network = True

    def __init__(self, inner: Any, fail: dict[str, int | set[int]], error: Exception) -> None:
        self.inner, self._error = inner, error
        self._fail = {m: set(range(1, n + 1)) if isinstance(n, int) else set(n) for m, n in fail.items()}
        self.calls: dict[str, int] = dict.fromkeys(fail, 0)

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if name not in self._fail:
            return target

        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            if self.calls[name] in self._fail[name]:
                raise copy.copy(self._error)
            return await target(*args, **kwargs)

        return wrapped


def flaky(fail: dict[str, int | set[int]], error: Exception) -> Callable[[Any], FlakyBroker]:
    """A ``broker=`` argument for `build_context`: wrap the paper broker in a `FlakyBroker`."""
    return lambda inner: FlakyBroker(inner, fail, error)
