"""Position sizing (step 2). Vectorised: each function returns quantities (NaN where
it cannot size) and a reason for each NaN."""

from __future__ import annotations

import json
from dataclasses import dataclass

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


def average_true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int) -> np.ndarray:
    """Simple moving average of the true range max(h - l, |h - c_prev|, |l - c_prev|) over
    ``period`` bars (NaN until ``period`` bars exist; the first bar's range is h - l)."""
    prev = np.concatenate([[np.nan], close[:-1]])
    tr = np.fmax(high - low, np.fmax(np.abs(high - prev), np.abs(low - prev)))
    return pd.Series(tr).rolling(period, min_periods=period).mean().to_numpy()


def size_atr(signals: pd.DataFrame, equity: float, risk_fraction: float, multiple: float,
             atr: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
    """equity x risk_fraction / (multiple x ATR): the stop ``multiple`` ATRs away risks ``risk_fraction``."""
    with np.errstate(invalid="ignore", divide="ignore"):
        qty = np.where(atr > 0, equity * risk_fraction / (multiple * atr), np.nan)
    return qty, [None if q > 0 else ("no ATR yet (too few bars before the signal)" if not a > 0
                                     else f"equity {equity:g} leaves nothing to size")
                 for q, a in zip(qty, atr, strict=True)]


def kelly_fraction(win_rate: float, payoff: float) -> float:
    """f* = W - (1 - W) / R, with W the win rate and R the average win / average loss."""
    return win_rate - (1.0 - win_rate) / payoff if payoff > 0 else -1.0


@dataclass(frozen=True)
class TradeHistory:
    """A strategy's completed round trips: count, win rate and payoff ratio."""

    trades: int
    win_rate: float
    payoff: float

    @classmethod
    def from_pnl(cls, net_pnl: np.ndarray) -> TradeHistory:
        wins, losses = net_pnl[net_pnl > 0], net_pnl[net_pnl <= 0]
        payoff = float(wins.mean() / -losses.mean()) if len(wins) and len(losses) and losses.mean() < 0 else (
            float("inf") if len(wins) else 0.0)
        return cls(len(net_pnl), float(len(wins) / len(net_pnl)) if len(net_pnl) else 0.0, payoff)


def size_kelly(signals: pd.DataFrame, equity: float, history: TradeHistory, *, multiplier: float, cap: float,
               min_trades: int, fallback_fraction: float | None) -> tuple[np.ndarray, list[str | None], dict]:
    """Fractional Kelly of equity at the reference price, capped; before ``min_trades``
    round trips, ``fallback_fraction`` (or a rejection if there is none)."""
    if history.trades < min_trades:
        if fallback_fraction is None:
            why = f"kelly: {history.trades} round trips recorded, {min_trades} needed and no fallback_fraction"
            return np.full(len(signals), np.nan), [why] * len(signals), {"trades": history.trades}
        qty, reasons = size_fixed_fractional(signals, fallback_fraction, equity)
        return qty, reasons, {"trades": history.trades, "fallback_fraction": fallback_fraction}
    f = kelly_fraction(history.win_rate, history.payoff) if np.isfinite(history.payoff) else history.win_rate
    used = min(max(f * multiplier, 0.0), cap)
    inputs = {"trades": history.trades, "win_rate": history.win_rate, "payoff": history.payoff, "kelly": f,
              "fraction_used": used}
    if used <= 0:
        why = f"kelly fraction {f:.4f} <= 0 (win rate {history.win_rate:.2%}, payoff {history.payoff:.3g}): no edge"
        return np.full(len(signals), np.nan), [why] * len(signals), inputs
    qty, reasons = size_fixed_fractional(signals, used, equity)
    return qty, reasons, inputs
