"""Step 2 — risk assessment: choose each signal's quantity (`risk.sizing`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from risk.sizing import size_fixed, size_fixed_fractional, size_from_signal, sizing_detail
from tasks.context import ExecutionContext, SizingConfig
from tasks.step import StepResult, rejections


def rule_for(strategy: str, ctx: ExecutionContext) -> SizingConfig:
    """The strategy's sizing rule from the risk configuration, else the pipeline's."""
    risk = ctx.config.risk
    if risk is None:
        return ctx.config.sizing
    rule = risk.sizing.strategies.get(strategy, risk.sizing.default)
    return SizingConfig(rule.method, rule.quantity, rule.fraction)


def size_signals(signals, ctx: ExecutionContext) -> StepResult:
    """Quantity per signal by its strategy's method; unsizable signals are rejected."""
    if ctx.config.risk is None or signals.empty:
        result = _size(signals, ctx.config.sizing, ctx)
        return StepResult(result.frame.reset_index(drop=True), result.rejected)
    parts = [_size(group, rule_for(strategy, ctx), ctx) for strategy, group in signals.groupby("strategy", sort=False)]
    frame = pd.concat([p.frame for p in parts]).sort_index().reset_index(drop=True)  # back in arrival order
    return StepResult(frame, pd.concat([p.rejected for p in parts], ignore_index=True))


def _size(signals, cfg: SizingConfig, ctx: ExecutionContext) -> StepResult:
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
    return StepResult(out, rejected)
