"""What the steps share: configuration, market data, the broker, the clock and the book.

`ExecutionContext` is deliberately a plain class (not a dataclass): Prefect inspects
task arguments, and this object holds large arrays it must not walk.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from brokers.base import BaseBroker
from brokers.base.clock import SimulatedClock, WallClock

SIZING_METHODS = ("signal", "fixed", "fixed_fractional", "atr", "kelly")


@dataclass(frozen=True)
class SizingConfig:
    """Step 2 (`risk.sizing`). ``method``: ``signal`` (the signal's quantity), ``fixed``
    (``quantity``), ``fixed_fractional`` (``fraction`` of equity), ``atr`` (equity x
    ``risk_fraction`` / (``atr_multiple`` x ATR over ``atr_period`` bars)), ``kelly``
    (``kelly_multiplier`` x the Kelly fraction from the strategy's recorded round trips,
    capped at ``kelly_cap``; ``fallback_fraction`` until ``min_trades`` trips exist)."""

    method: str = "signal"
    quantity: float | None = None
    fraction: float | None = None
    risk_fraction: float | None = None
    atr_multiple: float = 2.0
    atr_period: int = 14
    kelly_multiplier: float = 0.5
    kelly_cap: float = 0.25
    min_trades: int = 20
    fallback_fraction: float | None = None

    def __post_init__(self) -> None:
        if self.method not in SIZING_METHODS:
            raise ValueError(f"sizing.method: expected one of {', '.join(SIZING_METHODS)}, got {self.method!r}")
        if self.method == "fixed" and not (self.quantity or 0) > 0:
            raise ValueError("sizing.quantity: must be > 0 for method 'fixed'")
        if self.method == "fixed_fractional" and not 0 < (self.fraction or 0) <= 1:
            raise ValueError("sizing.fraction: must be in (0, 1] for method 'fixed_fractional'")
        if self.method == "atr" and not 0 < (self.risk_fraction or 0) <= 1:
            raise ValueError("sizing.risk_fraction: must be in (0, 1] for method 'atr'")


@dataclass(frozen=True)
class SymbolRules:
    """Venue rules for a symbol. ``lot_size``/``tick_size`` None: no rounding."""

    lot_size: float | None = None
    tick_size: float | None = None
    min_quantity: float = 0.0
    min_notional: float = 0.0


@dataclass(frozen=True)
class PipelineConfig:
    sizing: SizingConfig = field(default_factory=SizingConfig)
    rules: dict[str, SymbolRules] = field(default_factory=dict)
    default_rules: SymbolRules = field(default_factory=SymbolRules)
    time_in_force: str = "GTC"
    check_balance: bool = True  # step 4 projects cash/position over the batch
    fee_rate_estimate: float = 0.001  # the fee step 4 adds to a buy's projected cost
    max_price_deviation: float = 0.25  # limit/stop price vs reference, as a fraction
    order_timeout_s: float | None = 30.0  # monitoring cancels what is still open after this
    poll_interval_s: float = 0.2
    placement_concurrency: int = 8  # orders of one batch in flight at once (a venue over HTTP; paper: no effect)
    client_id_prefix: str = "tp"
    verify_book: bool = True  # step 7 checks the book against the broker's account (off: an account shared
    #                            by several workers, each booking only its own fills)
    risk: Any = None  # risk.config.RiskConfig: limits (step 4) and per-strategy sizing (step 2)

    def rules_for(self, symbol: str) -> SymbolRules:
        return self.rules.get(symbol, self.default_rules)


class MarketData:
    """Bars per symbol as numpy arrays, for reference prices and marking to market."""

    def __init__(self, bars: dict[str, pd.DataFrame] | None = None) -> None:
        self.bars: dict[str, pd.DataFrame] = {}
        self._ts: dict[str, np.ndarray] = {}
        self._close: dict[str, np.ndarray] = {}
        self._atr: dict[tuple[str, int], np.ndarray] = {}
        for symbol, frame in (bars or {}).items():
            self.add(symbol, frame)

    def add(self, symbol: str, frame: pd.DataFrame) -> None:
        self.bars[symbol] = frame
        self._ts[symbol] = frame["timestamp"].to_numpy("datetime64[ns]").view("int64")
        self._close[symbol] = frame["close"].to_numpy("float64")

    def __contains__(self, symbol: str) -> bool:
        return symbol in self.bars

    @property
    def symbols(self) -> list[str]:
        return list(self.bars)

    def timestamps(self, symbol: str) -> np.ndarray:
        return self._ts[symbol]

    def closes(self, symbol: str) -> np.ndarray:
        return self._close[symbol]

    def atr_at(self, symbol: str, ts_ns: np.ndarray, period: int) -> np.ndarray:
        """Average true range over ``period`` bars ending at the last bar at or before each time."""
        from risk.sizing import average_true_range

        if symbol not in self._ts:
            return np.full(len(ts_ns), np.nan)
        key = (symbol, period)
        if key not in self._atr:
            bars = self.bars[symbol]
            self._atr[key] = average_true_range(bars["high"].to_numpy("float64"), bars["low"].to_numpy("float64"),
                                                bars["close"].to_numpy("float64"), period)
        idx = np.searchsorted(self._ts[symbol], ts_ns, side="right") - 1
        return np.where(idx >= 0, self._atr[key][np.clip(idx, 0, None)], np.nan)

    def last_close_at(self, symbol: str, ts_ns: np.ndarray) -> np.ndarray:
        """Close of the last bar that opened at or before each time (NaN before the first bar)."""
        if symbol not in self._ts:
            return np.full(len(ts_ns), np.nan)
        idx = np.searchsorted(self._ts[symbol], ts_ns, side="right") - 1
        out = np.where(idx >= 0, self._close[symbol][np.clip(idx, 0, None)], np.nan)
        return out.astype("float64")


@dataclass
class Book:
    """The pipeline's own view of cash and positions (step 7), checked against the broker."""

    cash: float
    quote_currency: str
    positions: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    cost_basis: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    realized_pnl: float = 0.0
    realized_by_symbol: dict[str, float] = field(default_factory=dict)
    fees: float = 0.0
    last_price: dict[str, float] = field(default_factory=dict)
    start_equity: float = 0.0  # equity when the run began (loss-limit breaker); 0: the starting cash
    peak_equity: float = 0.0  # highest equity seen (drawdown limit)
    day_start_equity: float = 0.0  # equity when the current UTC day began (daily loss limit)
    day: object = None
    last_equity: float | None = None

    def __post_init__(self) -> None:
        if not self.start_equity:
            self.start_equity = self.cash

    def equity(self) -> float:
        return self.cash + sum(q * self.last_price.get(s, 0.0) for s, q in self.positions.items())

    def observe(self, stamps: pd.Series, equity: np.ndarray) -> None:
        """Track the peak and the day's opening equity from an equity series in time order."""
        if len(equity) == 0:
            return
        self.peak_equity = max(self.peak_equity, float(np.max(equity)))
        days = stamps.to_numpy("datetime64[ns]").astype("datetime64[D]")  # vectorised: no Python objects
        last_day = days[-1]
        if self.day != last_day:
            first = int(np.argmax(days == last_day))
            # the day's opening equity: the last value before the day began (possibly from the
            # previous observation), else the day's first value
            before = float(equity[first - 1]) if first > 0 else self.last_equity
            self.day_start_equity = before if before is not None else float(equity[first])
            self.day = last_day
        self.last_equity = float(equity[-1])


@dataclass
class OpenOrder:
    """Monitoring's memory of an order that is not terminal yet."""

    row: dict[str, Any]
    fills_seen: int = 0
    cum_qty: float = 0.0
    avg_px: float = 0.0
    cum_fee: float = 0.0


class ExecutionContext:
    """Everything a step needs besides its input frame."""

    def __init__(
        self,
        *,
        broker: BaseBroker,
        clock: WallClock | SimulatedClock,
        config: PipelineConfig,
        market: MarketData,
        book: Book,
        recorder: Any,
        run_id: str,
        namespace: str,
        strategy: str = "default",
    ) -> None:
        self.broker = broker
        self.clock = clock
        self.config = config
        self.market = market
        self.book = book
        self.recorder = recorder
        self.run_id = run_id
        self.namespace = namespace
        self.default_strategy = strategy
        self.alerter: Any = None  # risk.alerts.Alerter, when alert channels are configured
        self.open_orders: dict[str, OpenOrder] = {}
        self.sent_client_ids: set[str] = set()  # placement: ids this batch sent to the broker (a re-send looks up first)
        self.placement_results: dict[str, Any] = {}  # placement -> monitoring: the broker's answer, by client order id
        self.brackets: dict[str, Any] = {}  # monitoring: risk.brackets.Bracket by entry client order id
        self.brackets_restored = False  # monitoring: open bracket legs taken over from the ledger
        self.signal_brackets: dict[str, dict] = {}  # intake: a signal's own bracket levels, by signal id
        self.pending_signals: list[dict] = []  # signals the pipeline raised itself (a loss-limit flatten): run next
        self.raised_signal_ids: set[str] = set()  # every id ever queued there (never queued twice)
        self.generated_signal_ids = 0  # intake: ids given so far to signals that came without one
        self.monitor_until: pd.Timestamp | None = None  # replay: the end of the current chunk
        self.final = False  # replay: the last chunk; whatever is still open expires
        self.equity_segments: list[pd.DataFrame] = []
        self.breaches: list[dict] = []  # limit breaches seen by step 4 (time, rule, symbol, value, threshold)
        self.step_seconds: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self.started = time.perf_counter()

    @property
    def venue(self) -> str:
        return self.broker.name
