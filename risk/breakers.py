"""Circuit breakers (step 7 trips them, step 4 enforces them). Their state lives in the
ledger (`breakers` table), so a restart does not forget a halt; `tradpal risk status`
shows it and `tradpal risk reset --reason TEXT` clears it, audited.

- volatility_halt (per symbol): a bar's return is an outlier, |z| > threshold against the
  previous ``lookback`` returns; the symbol pauses for the cooldown.
- loss_limit (portfolio): equity has fallen more than ``threshold`` below the starting
  equity; all new risk halts until a person resets it (and, with ``flatten``, the open
  positions are closed).
- connectivity (a broker): N consecutive broker errors; see `risk.connectivity`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Trip:
    name: str
    scope: str  # a symbol or "portfolio"
    reason: str
    value: float
    threshold: float
    at: pd.Timestamp
    until: pd.Timestamp | None


def return_zscores(closes: np.ndarray, lookback: int) -> np.ndarray:
    """z-score of each bar's simple return against the ``lookback`` returns before it
    (NaN until there is enough history)."""
    r = np.full(len(closes), np.nan)
    r[1:] = closes[1:] / closes[:-1] - 1.0
    s = pd.Series(r)
    prev = s.shift(1).rolling(lookback, min_periods=lookback)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((s - prev.mean()) / prev.std(ddof=1)).to_numpy()


def volatility_trip(symbol: str, stamps_ns: np.ndarray, closes: np.ndarray, start_ns: int, end_ns: int, *,
                    lookback: int, z_threshold: float, cooldown: pd.Timedelta,
                    zscores: np.ndarray | None = None) -> Trip | None:
    """The latest bar in (start, end] whose |z| passes the threshold, as a trip; else None.
    Bar times are in time order; ``zscores``: ``return_zscores(closes, lookback)`` if the
    caller keeps it (a replay asks once per batch: computing it each time cost O(bars))."""
    z = return_zscores(closes, lookback) if zscores is None else zscores
    lo, hi = np.searchsorted(stamps_ns, [start_ns, end_ns], side="right")
    hits = np.flatnonzero(np.abs(z[lo:hi]) > z_threshold)
    if len(hits) == 0:
        return None
    i = int(lo + hits[-1])
    at = pd.Timestamp(int(stamps_ns[i]), tz="UTC")
    return Trip("volatility_halt", symbol, f"bar return z-score {z[i]:.2f} beyond ±{z_threshold:g} at {at}",
                float(abs(z[i])), z_threshold, at, at + cooldown)


def loss_limit_trip(equity: float, start_equity: float, threshold: float, at: pd.Timestamp) -> Trip | None:
    loss = 1.0 - equity / start_equity if start_equity > 0 else 0.0
    if loss <= threshold + 1e-12:
        return None
    return Trip("loss_limit", "portfolio", f"equity {equity:.6g} is {loss:.2%} below the starting {start_equity:.6g}",
                loss, threshold, at, None)


def blocking_breaker(symbol: str, increases_risk: bool, active: list[dict], namespace: str) -> str | None:
    """The reason an order is refused by an active breaker, or None. A symbol halt blocks
    every order of the symbol; a portfolio halt blocks orders that add risk; a halted
    broker (``broker:<name>``, the connectivity breaker with no route left) blocks every
    order. A tripped route (``route:<name>``: traffic failed over to a backup) blocks nothing."""
    for b in active:
        scope = b["scope"].removeprefix(f"{namespace}|")
        if b["scope"] == scope:  # another namespace's breaker (e.g. a replay's): not ours
            continue
        if scope == symbol or (scope == "portfolio" and increases_risk) or scope.startswith("broker:"):
            return f"breaker {b['name']} ({scope}): {b['reason']}"
    return None
