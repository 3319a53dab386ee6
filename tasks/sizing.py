"""Step 2 — risk assessment: choose each signal's quantity (`risk.sizing`)."""

from __future__ import annotations

import numpy as np

from risk.sizing import size_fixed, size_fixed_fractional, size_from_signal, sizing_detail
from tasks.context import ExecutionContext
from tasks.step import StepResult, rejections


def size_signals(signals, ctx: ExecutionContext) -> StepResult:
    """Quantity per signal by the configured method; unsizable signals are rejected."""
    cfg = ctx.config.sizing
    equity = ctx.book.equity()
    if cfg.method == "fixed":
        qty, reasons = size_fixed(signals, cfg.quantity)
        detail = sizing_detail("fixed", quantity=cfg.quantity)
    elif cfg.method == "fixed_fractional":
        qty, reasons = size_fixed_fractional(signals, cfg.fraction, equity)
        detail = sizing_detail("fixed_fractional", fraction=cfg.fraction, equity=equity)
    else:
        qty, reasons = size_from_signal(signals)
        detail = sizing_detail("signal")
    ok = np.array([r is None for r in reasons], dtype=bool)
    out = signals.loc[ok].copy()
    out["quantity"] = qty[ok]
    out["sizing_method"] = cfg.method
    out["sizing_detail"] = detail
    bad = ~ok
    rejected = rejections(signals.loc[bad, "signal_id"], [r for r in reasons if r is not None])
    return StepResult(out.reset_index(drop=True), rejected)
