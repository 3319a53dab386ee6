"""Synthetic market data and signals for benchmarks (deterministic from a seed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def synthetic_bars(n: int, *, seed: int = 7, start: str = "2024-01-01", freq: str = "1min") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.0005, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    spread = np.abs(rng.normal(0.0, 0.0003, n)) * close
    high = np.maximum(open_, close) + spread
    low = np.minimum(open_, close) - spread
    volume = rng.uniform(1.0, 50.0, n)
    ts = pd.date_range(start, periods=n, freq=freq, tz="UTC")
    return pd.DataFrame({"timestamp": ts, "open": open_, "high": high, "low": low, "close": close, "volume": volume})


def synthetic_signals(bars: pd.DataFrame, n: int, *, symbol: str, quantity: float = 1.0, seed: int = 11) -> pd.DataFrame:
    """Alternating buy/sell market signals at ``n`` distinct random bars."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(bars) - 1, size=n, replace=False))
    side = np.where(np.arange(n) % 2 == 0, "buy", "sell")
    return pd.DataFrame({"timestamp": bars["timestamp"].to_numpy()[idx], "symbol": symbol, "side": side,
                         "quantity": quantity, "signal_id": [f"s{i}" for i in range(n)]})


def write_case(directory: Path, n_bars: int, n_signals: int, symbol: str = "BTC/USDT") -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    bars = synthetic_bars(n_bars)
    signals = synthetic_signals(bars, n_signals, symbol=symbol)
    ohlcv, sig = directory / f"bars_{n_bars}.parquet", directory / f"signals_{n_signals}.parquet"
    bars.to_parquet(ohlcv)
    signals.to_parquet(sig)
    return ohlcv, sig
