"""Position sizing (step 2). Vectorised: each function returns quantities (NaN where
it cannot size) and a reason for each NaN."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd


def size_from_signal(signals: pd.DataFrame) -> tuple[np.ndarray, list[str | None]]:
    """Use the signal's own quantity (the default; the CLI's replay contract)."""
    qty = signals["quantity"].to_numpy("float64")
    return qty, [None if q > 0 else "signal has no quantity and sizing method is 'signal'" for q in qty]


def size_fixed(signals: pd.DataFrame, quantity: float) -> tuple[np.ndarray, list[str | None]]:
    """The same quantity for every signal."""
    return np.full(len(signals), float(quantity)), [None] * len(signals)


def size_fixed_fractional(signals: pd.DataFrame, fraction: float, equity: float) -> tuple[np.ndarray, list[str | None]]:
    """``fraction`` of current equity per trade, in base units at the reference price."""
    price = signals["reference_price"].to_numpy("float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        qty = np.where(price > 0, fraction * equity / price, np.nan)
    reasons = [
        None if q > 0 else ("no reference price to size against" if not p > 0 else f"equity {equity:g} leaves nothing to size")
        for q, p in zip(qty, price, strict=True)
    ]
    return qty, reasons


def sizing_detail(method: str, **inputs: float | None) -> str:
    return json.dumps({"method": method, **{k: v for k, v in inputs.items() if v is not None}}, sort_keys=True)
