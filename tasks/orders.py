"""Step 3 — order creation: one order per sized signal, with a deterministic client
order id derived from the signal id, rounded to the venue's lot and tick sizes. Its time
in force is the signal's own (``time_in_force``: GTC, IOC, FOK) when it carries one, else
the configuration's (`PipelineConfig.time_in_force`)."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from tasks.context import ExecutionContext
from tasks.contracts import OrderFrame
from tasks.step import StepResult, rejections

COLUMNS = list(OrderFrame.to_schema().columns)


def client_order_id(signal_id: str, leg: int = 0, prefix: str = "tp") -> str:
    """Deterministic, venue-safe (<= 36 chars of [A-Za-z0-9-]) id for a signal's leg.

    The same signal always maps to the same id, so a retried or re-delivered placement
    is found at the venue instead of being sent twice."""
    digest = hashlib.sha256(f"{signal_id}\x1f{leg}".encode()).hexdigest()[:24]
    return f"{prefix}-{digest}-{leg}"


def round_down(values: np.ndarray, step: float | None) -> np.ndarray:
    """Floor to a multiple of ``step`` (with a tolerance for float noise)."""
    if not step:
        return values
    return np.round(np.floor(values / step + 1e-9) * step, 12)  # 57 * 0.01 is 0.5700000000000001


def round_to_tick(values: np.ndarray, tick: float | None) -> np.ndarray:
    if not tick:
        return values
    return np.round(values / tick) * tick


def create_orders(sized: pd.DataFrame, ctx: ExecutionContext) -> StepResult:
    """Sized signals -> `OrderFrame`; a quantity that rounds to zero is rejected."""
    cfg = ctx.config
    df = pd.DataFrame({
        "signal_id": sized["signal_id"],
        "client_order_id": pd.Series([client_order_id(s, 0, cfg.client_id_prefix) for s in sized["signal_id"]],
                                     index=sized.index, dtype=object),  # object even when the batch is empty
        "symbol": sized["symbol"],
        "side": sized["side"],
        "order_type": sized["order_type"],
        "quantity": sized["quantity"].to_numpy("float64"),
        "price": sized["limit_price"].to_numpy("float64"),
        "stop_price": sized["stop_price"].to_numpy("float64"),
        # the signal's own time in force, else the configuration's
        "time_in_force": (sized["time_in_force"].astype(object).where(sized["time_in_force"].notna(),
                                                                       cfg.time_in_force)
                          if "time_in_force" in sized else cfg.time_in_force),
        "reference_price": sized["reference_price"].to_numpy("float64"),
        "strategy": sized["strategy"],
        "signal_time": sized["timestamp"],
        "created_at": sized["timestamp"].clip(lower=ctx.clock.now()),
    })
    for symbol in df["symbol"].unique():
        rules = cfg.rules_for(symbol)
        rows = (df["symbol"] == symbol).to_numpy()
        df.loc[rows, "quantity"] = round_down(df.loc[rows, "quantity"].to_numpy(), rules.lot_size)
        for col in ("price", "stop_price"):
            df.loc[rows, col] = round_to_tick(df.loc[rows, col].to_numpy(), rules.tick_size)
    zero = ~(df["quantity"] > 0)
    rejected = rejections(
        df.loc[zero, "signal_id"],
        [f"quantity {q:g} rounds to zero at the lot size" for q in sized.loc[zero, "quantity"]],
        df.loc[zero, "client_order_id"],
    )
    return StepResult(df.loc[~zero, COLUMNS].reset_index(drop=True), rejected)
