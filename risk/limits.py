"""Pre-trade limits (step 4) from the risk configuration. Like every check in `risk`, each
returns, per order, a reason naming the limit with the value against the threshold, or
None; state (equity, positions, marks, open orders) and `now` come in as arguments."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from risk.config import RiskConfig


@dataclass(frozen=True)
class Breach:
    """A limit an order would break: the rule, its symbol (None for portfolio-wide rules),
    the value the order would reach and the threshold. ``str()`` is the rejection reason."""

    rule: str
    symbol: str | None
    value: float
    threshold: float
    detail: str = ""

    def __str__(self) -> str:
        where = f" {self.symbol}" if self.symbol and self.rule in ("max_position",) else ""
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.rule}{where}: {self.value:.6g} > limit {self.threshold:.6g}{extra}"

    def as_dict(self, time: pd.Timestamp) -> dict:
        return {"time": str(time), "rule": self.rule, "symbol": self.symbol, "value": self.value,
                "threshold": self.threshold}


def check_limits(orders: pd.DataFrame, risk: RiskConfig, *, equity: float, peak_equity: float,
                 day_start_equity: float, positions: Mapping[str, float], marks: Mapping[str, float],
                 open_orders: int, now: pd.Timestamp) -> list[Breach | None]:
    """Walk the batch in order, projecting positions as orders pass, and refuse what breaks
    a limit. Reaching a limit exactly is allowed; only exceeding it is refused."""
    del now
    p = risk.portfolio
    held = dict(positions)
    out: list[str | None] = []
    halt = _halt_reason(p, equity, peak_equity, day_start_equity)
    opened = open_orders
    for sym, side, qty, ref, price in zip(orders["symbol"], orders["side"], orders["quantity"],
                                          orders["reference_price"], orders["price"], strict=True):
        px = price if price == price else ref
        mark = px if px == px else marks.get(sym, float("nan"))
        new_pos = held.get(sym, 0.0) + (qty if side == "buy" else -qty)
        reason = _order_reason(risk, sym, side, qty, mark, new_pos, held, marks, equity, opened, halt)
        out.append(reason)
        if reason is None:
            held[sym] = new_pos
            opened += 1
    return out


def _halt_reason(p, equity: float, peak: float, day_start: float) -> Breach | None:
    drawdown = 1 - equity / peak if peak > 0 else 0.0
    if drawdown > p.max_drawdown + 1e-12:
        return Breach("max_drawdown", None, drawdown, p.max_drawdown, "new risk halted")
    loss = 1 - equity / day_start if day_start > 0 else 0.0
    if loss > p.max_daily_loss + 1e-12:
        return Breach("max_daily_loss", None, loss, p.max_daily_loss, "of the day's opening equity; new risk halted")
    return None


def _order_reason(risk: RiskConfig, sym: str, side: str, qty: float, mark: float, new_pos: float,
                  held: Mapping[str, float], marks: Mapping[str, float], equity: float, opened: int,
                  halt: Breach | None) -> Breach | None:
    p = risk.portfolio
    increases = abs(new_pos) > abs(held.get(sym, 0.0)) + 1e-15
    if halt and increases:
        return halt
    if p.max_open_orders is not None and opened + 1 > p.max_open_orders:
        return Breach("max_open_orders", None, opened + 1, p.max_open_orders)
    if p.max_order_notional is not None and mark == mark and qty * mark > p.max_order_notional * (1 + 1e-9):
        return Breach("max_order_notional", sym, qty * mark, p.max_order_notional, f"{side} {qty:g} {sym}")
    asset = risk.assets.get(sym)
    if asset and asset.max_position is not None and increases and abs(new_pos) > asset.max_position * (1 + 1e-9):
        return Breach("max_position", sym, abs(new_pos), asset.max_position)
    if not increases or equity <= 0:
        return None
    after = {**held, sym: new_pos}

    def exposure(symbols) -> float:
        return sum(abs(after.get(s, 0.0)) * (mark if s == sym else marks.get(s, 0.0)) for s in symbols) / equity

    gross = exposure(after)
    if gross > p.max_gross_exposure * (1 + 1e-9):
        return Breach("max_gross_exposure", sym, gross, p.max_gross_exposure)
    sector = risk.sector_of(sym)
    if sector is not None:
        members = [s for s in after if risk.sector_of(s) == sector]
        level = exposure(members)
        limit = risk.sectors[sector].max_exposure
        if level > limit * (1 + 1e-9):
            return Breach("max_sector_exposure", sym, level, limit, f"sector {sector}")
    return None
