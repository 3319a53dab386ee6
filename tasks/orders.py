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
from tasks.step import NAT, StepResult, frame_of, rejections, strings, utc_array

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
    ids = sized["signal_id"].tolist()
    symbols = sized["symbol"].to_numpy()
    quantity = sized["quantity"].to_numpy("float64")
    qty = quantity.copy()
    price = sized["limit_price"].to_numpy("float64").copy()
    stop = sized["stop_price"].to_numpy("float64").copy()
    for symbol in dict.fromkeys(symbols.tolist()):
        rules = cfg.rules_for(symbol)
        if not rules.lot_size and not rules.tick_size:
            continue  # nothing to round
        rows = symbols == symbol
        qty[rows] = round_down(qty[rows], rules.lot_size)
        price[rows] = round_to_tick(price[rows], rules.tick_size)
        stop[rows] = round_to_tick(stop[rows], rules.tick_size)
    if "time_in_force" in sized:  # the signal's own time in force, else the configuration's
        tif = sized["time_in_force"].to_numpy()
        tif = strings([cfg.time_in_force if m else v for v, m in zip(tif.tolist(), pd.isna(tif).tolist(), strict=True)])
    else:
        tif = strings([cfg.time_in_force] * len(ids))
    signal_time = sized["timestamp"].array
    ts = signal_time.asi8
    created = np.where(ts == NAT, ts, np.maximum(ts, ctx.clock.now().value))  # not before now
    cols = {
        "signal_id": strings(ids),
        "client_order_id": strings([client_order_id(s, 0, cfg.client_id_prefix) for s in ids]),
        "symbol": sized["symbol"].to_numpy(),
        "side": sized["side"].to_numpy(),
        "order_type": sized["order_type"].to_numpy(),
        "quantity": qty,
        "price": price,
        "stop_price": stop,
        "time_in_force": tif,
        "reference_price": sized["reference_price"].to_numpy("float64"),
        "strategy": sized["strategy"].to_numpy(),
        "signal_time": signal_time,
        "created_at": utc_array(created),
    }
    zero = ~(qty > 0)
    if not zero.any():
        return StepResult(frame_of(cols))
    rejected = rejections(
        cols["signal_id"][zero],
        [f"quantity {q:g} rounds to zero at the lot size" for q in quantity[zero]],
        cols["client_order_id"][zero],
    )
    return StepResult(frame_of({name: array[~zero] for name, array in cols.items()}), rejected)
