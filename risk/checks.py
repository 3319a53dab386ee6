"""Pre-execution checks (step 4). Each check looks at a frame of orders and returns,
per order, a reason to refuse it or None. Checks take `now` and the state they need
as arguments; none reaches for globals."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

# relative: a lot-rounded 0.29 x 100 is 28.999999999999996 in float, and meets a minimum of 29
MIN_TOLERANCE = 1e-9


def check_symbol_known(orders: pd.DataFrame, known: set[str]) -> list[str | None]:
    """Refuse symbols the venue does not list (skipped when nothing is known)."""
    if not known:
        return [None] * len(orders)
    return [None if s in known else f"unknown symbol {s}" for s in orders["symbol"]]


def check_minimums(orders: pd.DataFrame, min_quantity: Mapping[str, float], min_notional: Mapping[str, float]) -> list[str | None]:
    """Quantity and notional (at the reference price) at or above the venue minimums."""
    out: list[str | None] = []
    for sym, qty, ref in zip(orders["symbol"], orders["quantity"], orders["reference_price"], strict=True):
        mq, mn = min_quantity.get(sym, 0.0), min_notional.get(sym, 0.0)
        if qty < mq * (1 - MIN_TOLERANCE):
            out.append(f"quantity {qty:g} below the minimum {mq:g} for {sym}")
        elif mn > 0 and not ref > 0:
            out.append(f"no reference price to check the minimum notional {mn:g} for {sym}")
        elif mn > 0 and qty * ref < mn * (1 - MIN_TOLERANCE):
            out.append(f"notional {qty * ref:g} below the minimum {mn:g} for {sym}")
        else:
            out.append(None)
    return out


def check_price_sanity(orders: pd.DataFrame, max_deviation: float) -> list[str | None]:
    """Limit and stop prices within ``max_deviation`` (a fraction) of the reference price."""
    out: list[str | None] = []
    for price, stop, ref in zip(orders["price"], orders["stop_price"], orders["reference_price"], strict=True):
        reason = None
        for name, p in (("limit price", price), ("stop price", stop)):
            if reason is None and p == p and ref == ref and ref > 0 and abs(p / ref - 1) > max_deviation:
                reason = f"{name} {p:g} is {abs(p / ref - 1):.1%} from the reference price {ref:g} (max {max_deviation:.0%})"
        out.append(reason)
    return out


def check_balance(orders: pd.DataFrame, cash: float, positions: Mapping[str, float], now: pd.Timestamp,
                  fee_rate: float = 0.0) -> list[str | None]:
    """Project cash and positions over the batch in order, at reference (or limit) prices
    plus ``fee_rate``: refuse a buy the projected cash cannot pay and a sell beyond the
    projected position."""
    del now  # projections are for the current state; kept for a uniform signature
    cash_left = float(cash)
    held = dict(positions)
    out: list[str | None] = []
    for sym, side, qty, price, ref in zip(orders["symbol"], orders["side"], orders["quantity"],
                                          orders["price"], orders["reference_price"], strict=True):
        px = price if price == price else ref
        if side == "buy":
            if px != px:  # NaN: no price to project the cost with; the position still grows
                held[sym] = held.get(sym, 0.0) + qty
                out.append(None)
                continue
            cost = qty * px * (1 + fee_rate)
            if cost > cash_left * (1 + 1e-9):
                out.append(f"insufficient funds (projected): buy {qty:g} {sym} needs ~{cost:g}, cash {cash_left:g}")
                continue
            cash_left -= cost
            held[sym] = held.get(sym, 0.0) + qty
        else:
            have = held.get(sym, 0.0)
            if qty > have + 1e-12:
                out.append(f"insufficient position (projected): sell {qty:g} {sym}, holding {have:g}")
                continue
            held[sym] = have - qty
            if px == px:
                cash_left += qty * px * (1 - fee_rate)
        out.append(None)
    return out


def first_reason(*columns: list[str | None]) -> np.ndarray:
    """Per order, the first reason any check gave (None if all passed)."""
    out = np.full(len(columns[0]) if columns else 0, None, dtype=object)
    for col in reversed(columns):
        for i, r in enumerate(col):
            if r is not None:
                out[i] = r
    return out


def check_market_limits(orders: pd.DataFrame, limits: Mapping[str, object]) -> list[str | None]:
    """The venue's own rules (``brokers.base.MarketLimits`` per symbol, from its markets):
    the quantity as the venue will take it (floored to its amount step) must be above
    zero, within its minimum and maximum amount, and worth at least its minimum notional
    at the limit price (else the reference price). Symbols without limits pass."""
    out: list[str | None] = []
    for sym, qty, price, ref in zip(orders["symbol"], orders["quantity"], orders["price"],
                                    orders["reference_price"], strict=True):
        rules = limits.get(sym)
        out.append(None if rules is None else _market_reason(sym, float(qty), price if price == price else ref, rules))
    return out


def _market_reason(sym: str, qty: float, px: float, rules) -> str | None:
    step = rules.amount_step
    sent = np.floor(qty / step * (1 + MIN_TOLERANCE)) * step if step else qty
    if sent <= 0:
        return f"quantity {qty:g} rounds to 0 at the venue's amount step {step:g} for {sym}"
    if sent < rules.min_amount * (1 - MIN_TOLERANCE):
        return f"quantity {sent:g} below the venue's minimum amount {rules.min_amount:g} for {sym}"
    if rules.max_amount is not None and sent > rules.max_amount * (1 + MIN_TOLERANCE):
        return f"quantity {sent:g} above the venue's maximum amount {rules.max_amount:g} for {sym}"
    if rules.min_notional > 0 and px == px and px > 0 and sent * px < rules.min_notional * (1 - MIN_TOLERANCE):
        return f"notional {sent * px:g} below the venue's minimum notional {rules.min_notional:g} for {sym}"
    return None
