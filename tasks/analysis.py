"""Step 8 — post-execution analysis: per execution report, slippage against the
signal's reference price (positive = worse for us), fees, notional and latency."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.context import ExecutionContext
from tasks.contracts import ExecutionReport
from tasks.step import StepResult

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
    report = pd.DataFrame({
        "client_order_id": booked["client_order_id"],
        "signal_id": booked["signal_id"],
        "symbol": booked["symbol"],
        "side": booked["side"],
        "strategy": booked["strategy"],
        "exec_type": booked["exec_type"],
        "timestamp": booked["timestamp"],
        "quantity": qty,
        "price": px,
        "notional": np.nan_to_num(qty * px),
        "fee": booked["last_fee"].to_numpy("float64"),
        "reference_price": ref,
        "slippage_bps": np.where(qty > 0, slippage_bps(side, px, ref), np.nan),
        "latency_s": ((booked["timestamp"] - booked["signal_time"]).dt.total_seconds().clip(lower=0.0)
                      .to_numpy("float64")),
        "realized_pnl": booked["realized_pnl"].to_numpy("float64"),
    }, columns=COLUMNS)
    return StepResult(report)
