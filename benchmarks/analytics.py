"""Post-trade metrics (`tradpal.metrics.compute_metrics`) over 1,000,000 synthetic fills (one
order and one signal each, 4 strategies x 5 symbols), 1,000,000 equity rows and 1,000,000
bars: wall seconds of the call and peak RSS of the process (data building included).

    python -m benchmarks.analytics [N]
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

from benchmarks.common import emit, peak_rss_mib

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "ADA/USDT"]
STRATEGIES = ["sma", "breakout", "meanrev", "carry"]


def synthetic_inputs(n: int, *, seed: int = 3) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC")
    sym = rng.integers(0, len(SYMBOLS), n)
    strat = rng.integers(0, len(STRATEGIES), n)
    base = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.0005, n)))
    # each (strategy, symbol) book holds |a random walk| lots of 0.1: long or flat (spot), one lot
    # bought or sold per fill, flat again now and then (round trips of random length)
    walk = pd.Series(rng.choice([-1, 1], n)).groupby(strat * 10 + sym).cumsum().to_numpy()
    lots = pd.Series(np.abs(walk))
    change = lots.groupby(strat * 10 + sym).diff().fillna(lots).to_numpy()  # first fill: from flat
    side = np.where(change > 0, "buy", "sell")
    qty = np.full(n, 0.1)
    signal_ts = ts - pd.Timedelta(seconds=30)
    signals = pd.DataFrame({"id": np.arange(1, n + 1), "signal_id": [f"s{i}" for i in range(n)],
                            "timestamp": signal_ts, "symbol": np.array(SYMBOLS, object)[sym],
                            "side": side, "quantity": qty, "strategy": np.array(STRATEGIES, object)[strat],
                            "reference_price": base * (1 + rng.normal(0, 1e-4, n))})
    orders = pd.DataFrame({"id": np.arange(1, n + 1), "signal_pk": signals["id"], "symbol": signals["symbol"],
                           "side": side, "quantity": qty, "status": "FILLED", "filled_quantity": qty,
                           "created_at": signal_ts, "placed_at": signal_ts + pd.Timedelta(milliseconds=40),
                           "updated_at": ts})
    price = base * (1 + np.where(side == "buy", 1, -1) * rng.uniform(0, 5e-4, n))
    fills = pd.DataFrame({"id": np.arange(1, n + 1), "order_pk": orders["id"], "timestamp": ts,
                          "symbol": signals["symbol"], "side": side, "quantity": qty, "price": price,
                          "fee": 0.001 * qty * price, "reference_price": signals["reference_price"]})
    bars = pd.DataFrame({"timestamp": ts, "open": base, "high": base * 1.001, "low": base * 0.999,
                         "close": base, "volume": 10.0})
    position_value = np.abs(rng.normal(0, 1e4, n))
    equity_values = 1e6 * np.exp(np.cumsum(rng.normal(0, 1e-4, n)))
    equity = pd.DataFrame({"timestamp": ts, "cash": equity_values - position_value,
                           "position_value": position_value, "equity": equity_values})
    rejections = pd.DataFrame({"step": rng.choice(["intake", "pre_checks", "placement"], 10_000),
                               "reason": rng.choice(["min notional", "insufficient funds"], 10_000)})
    return {"equity": equity, "fills": fills, "orders": orders, "signals": signals, "bars": bars,
            "rejections": rejections}


def main(n: int = 1_000_000) -> None:
    from tradpal.metrics import compute_metrics

    data = synthetic_inputs(n)
    t0 = time.perf_counter()
    metrics = compute_metrics(data["equity"], data["fills"], orders=data["orders"], signals=data["signals"],
                              rejections=data["rejections"], bars=data["bars"])
    seconds = time.perf_counter() - t0
    assert metrics["n_fills"] == n and metrics["n_round_trips"] > 0, metrics["n_fills"]
    tag = f"analytics_{n // 1_000_000}m" if n % 1_000_000 == 0 else f"analytics_{n // 1000}k"
    emit(f"{tag}_wall", seconds, "s", "<= 5" if n == 1_000_000 else None)
    emit(f"{tag}_peak_rss", peak_rss_mib(), "MiB", "<= 2048" if n == 1_000_000 else None)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
