"""Market data of the paper broker: one symbol's bars as numpy arrays.

Finding the bar on which a resting order may fill is a threshold search ("first bar
from ``start`` whose low reaches L"). It is done with numpy over blocks of bars, never
with a Python loop over bars: the minimum of each block of ``BLOCK`` bars is kept, so
a search scans at most one partial block, the block minima, and one more block.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from brokers.base.types import OrderType, Side
from brokers.paper.fills import Bar

BLOCK = 1024
COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")


def _timestamps_ns(column: pd.Series) -> np.ndarray:
    """A timestamp column as int64 nanoseconds since the epoch, UTC (naive is UTC)."""
    index = pd.DatetimeIndex(column)
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    return np.asarray(index.as_unit("ns").asi8, dtype=np.int64)


def _block_min(values: np.ndarray) -> np.ndarray:
    """The minimum of each block of ``BLOCK`` values (the last block may be short)."""
    pad = (-len(values)) % BLOCK
    padded = np.concatenate([values, np.full(pad, np.inf)]) if pad else values
    return padded.reshape(-1, BLOCK).min(axis=1)


def _first_at_or_below(
    values: np.ndarray, block_min: np.ndarray, start: int, level: float, strict: bool = False
) -> int | None:
    """The first index ``i >= start`` with ``values[i] <= level`` (``< level`` when
    ``strict``), or None."""
    n = len(values)
    if start >= n:
        return None
    reached = np.less if strict else np.less_equal
    block = start // BLOCK
    head_end = min(n, (block + 1) * BLOCK)
    hits = np.flatnonzero(reached(values[start:head_end], level))
    if hits.size:
        return start + int(hits[0])
    blocks = np.flatnonzero(reached(block_min[block + 1 :], level))
    if not blocks.size:
        return None
    first = (block + 1 + int(blocks[0])) * BLOCK
    return first + int(np.argmax(reached(values[first : first + BLOCK], level)))


class BarSeries:
    """One symbol's bars: int64 ns timestamps and float64 open/high/low/close/volume,
    strictly increasing in time."""

    def __init__(
        self,
        ts: np.ndarray,
        open_: np.ndarray,
        high: np.ndarray,
        low: np.ndarray,
        close: np.ndarray,
        volume: np.ndarray,
    ) -> None:
        if len(ts) > 1 and not bool(np.all(np.diff(ts) > 0)):
            raise ValueError("bar timestamps must be sorted and unique")
        self.ts = ts
        self.open = open_
        self.high = high
        self.low = low
        self.close = close
        self.volume = volume
        # A bar reaches down to min(open, low) and up to max(open, high); "up to x"
        # is searched as "-max(open, high) down to -x".
        self._down = np.minimum(open_, low)
        self._up_neg = -np.maximum(open_, high)
        self._down_blocks = _block_min(self._down)
        self._up_neg_blocks = _block_min(self._up_neg)

    @classmethod
    def from_frame(cls, bars: pd.DataFrame) -> BarSeries:
        """Bars from a frame with columns timestamp, open, high, low, close, volume."""
        missing = [c for c in COLUMNS if c not in bars.columns]
        if missing:
            raise ValueError(f"market data lacks columns {missing}")
        floats = [np.asarray(bars[c], dtype=np.float64) for c in COLUMNS[1:]]
        if any(np.isnan(values).any() for values in floats):
            raise ValueError("market data has NaN prices or volumes")
        return cls(_timestamps_ns(bars["timestamp"]), *floats)

    def extended(self, more: BarSeries) -> BarSeries:
        """These bars followed by ``more`` (which must all be later)."""
        if len(self) and len(more) and more.ts[0] <= self.ts[-1]:
            raise ValueError("new bars must all be later than the bars already loaded")
        parts = zip(
            (self.ts, self.open, self.high, self.low, self.close, self.volume),
            (more.ts, more.open, more.high, more.low, more.close, more.volume),
            strict=True,
        )
        return BarSeries(*(np.concatenate(pair) for pair in parts))

    def __len__(self) -> int:
        return len(self.ts)

    def index_after(self, ns: int) -> int:
        """The index of the first bar strictly later than ``ns``."""
        return int(np.searchsorted(self.ts, ns, side="right"))

    def bar(self, i: int) -> Bar:
        """Bar ``i`` as plain floats."""
        return Bar(
            float(self.open[i]),
            float(self.high[i]),
            float(self.low[i]),
            float(self.close[i]),
            float(self.volume[i]),
        )

    def timestamp(self, i: int) -> pd.Timestamp:
        """The UTC timestamp of bar ``i``."""
        return pd.Timestamp(int(self.ts[i]), tz="UTC")

    def first_down_to(self, start: int, level: float, strict: bool = False) -> int | None:
        """The first bar from ``start`` whose open or low is at or below ``level``
        (strictly below when ``strict``)."""
        return _first_at_or_below(self._down, self._down_blocks, start, level, strict)

    def first_up_to(self, start: int, level: float, strict: bool = False) -> int | None:
        """The first bar from ``start`` whose open or high is at or above ``level``
        (strictly above when ``strict``)."""
        return _first_at_or_below(self._up_neg, self._up_neg_blocks, start, -level, strict)

    def first_event(
        self,
        start: int,
        mode: OrderType,
        side: Side,
        limit: float | None,
        stop: float | None,
        strict: bool = False,
    ) -> int | None:
        """The first bar from ``start`` on which an order of type ``mode`` may fill or
        trigger (the vectorised twin of ``fills.evaluate``; ``strict``: limits trade
        through), or None."""
        if mode is OrderType.MARKET:
            return start if start < len(self) else None
        if mode is OrderType.LIMIT:
            assert limit is not None
            if side is Side.BUY:
                return self.first_down_to(start, limit, strict)
            return self.first_up_to(start, limit, strict)
        assert stop is not None
        return self.first_up_to(start, stop) if side is Side.BUY else self.first_down_to(start, stop)

    def first_trailing_stop(
        self, start: int, stop: float, high_water: float, distance: float
    ) -> tuple[int, float, float] | None:
        """A trailing sell stop from bar ``start``: on each bar the stop is
        ``max(stop, highest high before the bar - distance)`` (``high_water`` is the
        highest price before ``start``); the bar's own high moves the stop only for the
        next bar, since the path inside a bar is unknown. Returns the first bar whose open
        or low reaches its stop, with that stop and the high water before the bar, or None.
        Vectorised over blocks of ``BLOCK`` bars."""
        n, i, hw = len(self), start, high_water
        while i < n:
            j = min(n, i + BLOCK)
            highs = self.high[i:j]
            before = np.maximum.accumulate(np.concatenate(([hw], highs[:-1])))
            stops = np.maximum(stop, before - distance)
            hits = np.flatnonzero(self._down[i:j] <= stops)
            if hits.size:
                k = int(hits[0])
                return i + k, float(stops[k]), float(before[k])
            hw = max(hw, float(highs.max()))
            i = j
        return None
