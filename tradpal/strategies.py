"""Built-in signal generators (for the demo and tests)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def sma_crossover(bars: pd.DataFrame, *, symbol: str, quantity: float, fast: int = 12, slow: int = 48,
                  strategy: str = "sma-crossover") -> pd.DataFrame:
    """Long-only SMA crossover on closes: buy ``quantity`` when the fast average crosses
    above the slow one, sell it back when it crosses below. A signal is stamped with the
    bar whose close revealed the cross (so under `next-open` it fills at the next bar)."""
    if not 0 < fast < slow:
        raise ValueError(f"sma_crossover: need 0 < fast < slow, got fast={fast}, slow={slow}")
    close = bars["close"].astype("float64")
    above = (close.rolling(fast).mean() > close.rolling(slow).mean()).to_numpy()
    valid = np.arange(len(bars)) >= slow - 1
    cross = np.flatnonzero(valid[1:] & valid[:-1] & (above[1:] != above[:-1])) + 1
    rows, long = [], False
    for i in cross:
        side = "buy" if above[i] else "sell"
        if (side == "buy") == long:
            continue
        long = side == "buy"
        rows.append((bars["timestamp"].iloc[i], symbol, side, quantity, f"{strategy}-{len(rows) + 1}", strategy))
    return pd.DataFrame(rows, columns=["timestamp", "symbol", "side", "quantity", "signal_id", "strategy"])


def write_signals_csv(signals: pd.DataFrame, path) -> None:
    out = signals.assign(timestamp=pd.to_datetime(signals["timestamp"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    out.to_csv(path, index=False)
