"""Step 4 — pre-execution checks (`risk.checks`): symbol known, minimums, the venue's own
market limits (when the broker publishes them: `market_limits`), price sanity,
the risk configuration's limits (`risk.limits`, when configured) and the balance
projected over the batch (when configured)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from risk.breakers import blocking_breaker
from risk.checks import (
    check_balance,
    check_market_limits,
    check_minimums,
    check_price_sanity,
    check_symbol_known,
    first_reason,
)
from risk.limits import check_limits
from tasks.context import ExecutionContext
from tasks.step import StepResult, column_arrays, frame_of, no_rejections, rejections, utc_array


def venue_limits(broker: object, symbols) -> dict:
    """The venue's market limits of ``symbols`` if the broker publishes them (a ccxt
    venue: from its loaded markets), else none."""
    published = getattr(broker, "market_limits", None)
    return published(list(symbols)) if published is not None else {}


def working_buys(open_orders) -> tuple[dict[str, float], float]:
    """What the buys still working (resting or partly filled) have committed: per symbol
    the base quantity they may still buy, and the quote cash that needs at their limit
    (or, for a market order, reference) price. Step 4 counts them as if they fill, so
    that resting orders cannot together pass a position cap or the cash that one alone
    respects. (Working sells are not counted: they may not fill.)"""
    qty: dict[str, float] = {}
    cash = 0.0
    for oo in open_orders.values():
        row = oo.row
        if row.get("side") != "buy":
            continue
        left = float(row.get("quantity", 0.0)) - float(oo.cum_qty)
        if not left > 1e-15:
            continue
        qty[row["symbol"]] = qty.get(row["symbol"], 0.0) + left
        price = row.get("price")
        px = price if price is not None and price == price else row.get("reference_price")
        if px is not None and px == px:
            cash += left * float(px)
    return qty, cash


def pre_execution_checks(orders: pd.DataFrame, ctx: ExecutionContext) -> StepResult:
    cfg = ctx.config
    now = ctx.clock.now()
    symbols = orders["symbol"].unique()
    known = set(ctx.market.symbols) | set(cfg.rules)
    active = ctx.recorder.active_breakers(now)
    results = [
        [blocking_breaker(sym, side == "buy", active, ctx.namespace) for sym, side in zip(orders["symbol"], orders["side"],
                                                                                           strict=True)],
        check_symbol_known(orders, known),
        check_minimums(orders, {s: cfg.rules_for(s).min_quantity for s in symbols},
                       {s: cfg.rules_for(s).min_notional for s in symbols}),
        check_market_limits(orders, venue_limits(ctx.broker, symbols)),
        check_price_sanity(orders, cfg.max_price_deviation),
    ]
    breaches: list = []
    committed_qty, committed_cash = working_buys(ctx.open_orders)
    if cfg.risk is not None:
        book = ctx.book
        equity = book.equity()
        positions = {s: book.positions.get(s, 0.0) + committed_qty.get(s, 0.0)
                     for s in {*book.positions, *committed_qty}} if committed_qty else book.positions
        breaches = check_limits(orders, cfg.risk, equity=equity, peak_equity=max(book.peak_equity, equity),
                                day_start_equity=book.day_start_equity or equity, positions=positions,
                                marks=book.last_price, open_orders=len(ctx.open_orders), now=now)
        results.append([None if b is None else str(b) for b in breaches])
    if cfg.check_balance:
        results.append(check_balance(orders, ctx.book.cash - committed_cash, ctx.book.positions, now,
                                     cfg.fee_rate_estimate))
    reasons = first_reason(*results)
    bad = pd.notna(reasons)
    # the orders that passed, with the time they were checked: one frame made at once
    cols = dict(zip(orders.columns, column_arrays(orders), strict=True))
    if bad.any():
        cols = {name: array[~bad] for name, array in cols.items()}
        rejected = rejections(orders["signal_id"].to_numpy()[bad], reasons[bad],
                              orders["client_order_id"].to_numpy()[bad])
    else:
        rejected = no_rejections()
    cols["checked_at"] = utc_array(np.full(int((~bad).sum()), pd.Timestamp(now).tz_convert("UTC").value))
    out = frame_of(cols)
    fired = [b.as_dict(t) for b, t in zip(breaches, orders["signal_time"], strict=False) if b is not None]
    return StepResult(out, rejected, extra={"breaches": fired} if fired else {})
