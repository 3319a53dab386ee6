"""Live versus simulation: replay a recorded live run's signals through the paper
simulator over the market data of the time, and compare fill by fill — price, timing and
fill ratio — to calibrate the simulator's slippage and impact parameters."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from tradpal.errors import InputError

COLUMNS = ["signal_id", "symbol", "side", "live_qty", "sim_qty", "fill_ratio", "live_price", "sim_price",
           "price_divergence_bps", "live_time", "sim_time", "time_divergence_s"]


def _per_signal(fills: pd.DataFrame) -> pd.DataFrame:
    """Quantity, average price and first fill time per signal."""
    if fills.empty:
        return pd.DataFrame(columns=["signal_id", "qty", "price", "time"]).set_index("signal_id")
    g = fills.assign(notional=fills["quantity"] * fills["price"]).groupby("signal_id")
    return pd.DataFrame({"qty": g["quantity"].sum(), "price": g["notional"].sum() / g["quantity"].sum(),
                         "time": g["timestamp"].min()})


def live_fills(ledger, run_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The run's signals and its fills labelled with their signal id."""
    if ledger.get_run(run_id) is None:
        raise InputError(f"--shadow: no run {run_id!r} in ledger {ledger.url}")
    signals = ledger.frame("signals", run_id=run_id)
    orders = ledger.frame("orders", run_id=run_id)[["id", "signal_pk"]]
    fills = ledger.frame("fills", run_id=run_id)
    fills = fills.merge(orders.rename(columns={"id": "order_pk"}), on="order_pk").merge(
        signals[["id", "signal_id"]].rename(columns={"id": "signal_pk"}), on="signal_pk")
    return signals, fills


def simulate(signals: pd.DataFrame, bars: dict[str, pd.DataFrame], *, fee_rate: float, slippage_bps: float,
             cash: float = 1e12) -> pd.DataFrame:
    """The same signals through the paper simulator (next-open), one symbol at a time, with
    ample cash so that the comparison is about prices and timing, not funding."""
    from tradpal.ledger import Ledger
    from tradpal.replay import ReplayParams, load_inputs, run_replay

    out = []
    with tempfile.TemporaryDirectory(prefix="tradpal-shadow-") as tmp:
        ledger = Ledger(f"sqlite:///{Path(tmp) / 'shadow.db'}")
        for symbol, group in signals.groupby("symbol"):
            if symbol not in bars:
                raise InputError(f"--ohlcv: no market data for {symbol} (give --ohlcv {symbol}=FILE)")
            bars_path, sig_path = Path(tmp) / "bars.parquet", Path(tmp) / "signals.parquet"
            bars[symbol].to_parquet(bars_path)
            group[["timestamp", "symbol", "side", "quantity", "signal_id"]].sort_values("timestamp", kind="stable") \
                .to_parquet(sig_path)
            params = ReplayParams(ohlcv=str(bars_path), signals=str(sig_path), symbol=symbol, cash=cash,
                                  fee_rate=fee_rate, slippage_bps=slippage_bps)
            result = asyncio.run(run_replay(params, load_inputs(params), ledger))
            fills = result.reports[result.reports["quantity"] > 0]
            out.append(fills[["signal_id", "timestamp", "quantity", "price"]])
        ledger.close()
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["signal_id", "timestamp", "quantity",
                                                                                 "price"])


def compare(signals: pd.DataFrame, live: pd.DataFrame, sim: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Fill-by-fill divergence and totals. ``price_divergence_bps`` is positive when live
    did worse than the simulator (paid more on a buy, received less on a sell)."""
    lv, sv = _per_signal(live), _per_signal(sim)
    base = signals.set_index("signal_id")[["symbol", "side"]]
    rows = base.join(lv.add_prefix("live_"), how="left").join(sv.add_prefix("sim_"), how="left")
    sign = np.where(rows["side"] == "buy", 1.0, -1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        div = sign * (rows["live_price"] / rows["sim_price"] - 1.0) * 1e4
        ratio = rows["live_qty"].fillna(0.0) / rows["sim_qty"]
    frame = pd.DataFrame({
        "signal_id": rows.index, "symbol": rows["symbol"].to_numpy(), "side": rows["side"].to_numpy(),
        "live_qty": rows["live_qty"].fillna(0.0).to_numpy(), "sim_qty": rows["sim_qty"].fillna(0.0).to_numpy(),
        "fill_ratio": ratio.to_numpy(), "live_price": rows["live_price"].to_numpy(),
        "sim_price": rows["sim_price"].to_numpy(), "price_divergence_bps": div.to_numpy(),
        "live_time": rows["live_time"].to_numpy(), "sim_time": rows["sim_time"].to_numpy(),
        "time_divergence_s": (rows["live_time"] - rows["sim_time"]).dt.total_seconds().to_numpy(),
    }, columns=COLUMNS)
    both = frame.dropna(subset=["price_divergence_bps"])
    totals = {
        "signals": len(frame), "compared": len(both),
        "live_only": int(((frame["live_qty"] > 0) & (frame["sim_qty"] == 0)).sum()),
        "sim_only": int(((frame["sim_qty"] > 0) & (frame["live_qty"] == 0)).sum()),
        "price_divergence_bps_mean": _num(both["price_divergence_bps"].mean()),
        "price_divergence_bps_median": _num(both["price_divergence_bps"].median()),
        "price_divergence_bps_abs_mean": _num(both["price_divergence_bps"].abs().mean()),
        "time_divergence_s_median": _num(both["time_divergence_s"].median()),
        "fill_ratio": _num(frame["live_qty"].sum() / frame["sim_qty"].sum()) if frame["sim_qty"].sum() > 0 else None,
    }
    return frame, totals


def _num(x) -> float | None:
    return None if x is None or x != x else float(x)
