"""Step 8 — post-execution analysis: per execution report, slippage against the
signal's reference price (positive = worse for us), fees, notional and latency."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.context import ExecutionContext
from tasks.contracts import ExecutionReport
from tasks.step import NAT, StepResult, frame_of

COLUMNS = list(ExecutionReport.to_schema().columns)


def slippage_bps(side: np.ndarray, price: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Signed slippage in basis points: buys pay above, sells receive below the reference."""
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = (price / reference - 1.0) * 1e4
    return np.where(side == "buy", raw, -raw)


def analyse_executions(booked: pd.DataFrame, ctx: ExecutionContext) -> StepResult:
    del ctx  # the analysis depends on the frame only
    side = booked["side"].to_numpy()
    qty = booked["last_qty"].to_numpy("float64")
    px = booked["last_px"].to_numpy("float64")
    ref = booked["reference_price"].to_numpy("float64")
    ts, signal_time = booked["timestamp"].array, booked["signal_time"].array
    t_ns, s_ns = ts.asi8, signal_time.asi8
    # = (timestamp - signal_time).dt.total_seconds().clip(lower=0): nanoseconds / 1e9, NaT as NaN
    with np.errstate(invalid="ignore"):
        latency = np.where((t_ns == NAT) | (s_ns == NAT), np.nan, (t_ns - s_ns) / 1_000_000_000)
    latency = np.where(latency < 0.0, 0.0, latency)
    report = frame_of({
        "client_order_id": booked["client_order_id"].to_numpy(),
        "signal_id": booked["signal_id"].to_numpy(),
        "symbol": booked["symbol"].to_numpy(),
        "side": side,
        "strategy": booked["strategy"].to_numpy(),
        "exec_type": booked["exec_type"].to_numpy(),
        "timestamp": ts,
        "quantity": qty,
        "price": px,
        "notional": np.nan_to_num(qty * px),
        "fee": booked["last_fee"].to_numpy("float64"),
        "reference_price": ref,
        "slippage_bps": np.where(qty > 0, slippage_bps(side, px, ref), np.nan),
        "latency_s": latency,
        "realized_pnl": booked["realized_pnl"].to_numpy("float64"),
    })
    report.index = booked.index
    return StepResult(report)
