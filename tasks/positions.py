"""Step 7 — position management: apply each fill to the book (cash, positions, average
cost, realised P&L), mark the book to market, and check it against the broker's own
account: a difference means something was lost, and the run stops."""

from __future__ import annotations

import numpy as np
import pandas as pd

from risk.breakers import Trip, loss_limit_trip, return_zscores, volatility_trip
from tasks.context import Book, ExecutionContext
from tasks.step import StepResult, column_arrays, frame_of, strings, utc_array


class BookMismatch(RuntimeError):
    """The pipeline's book and the broker's account disagree: a fill was lost or doubled.
    Stop trading and reconcile before going on."""


def apply_fills(reports: pd.DataFrame, book: Book) -> pd.DataFrame:
    """Book each report in order; returns the reports with the book after each."""
    pos_after, cash_after, pnl = [], [], []
    fee_ccys = reports["fee_currency"] if "fee_currency" in reports else [None] * len(reports)
    for sym, side, qty, px, fee, fee_ccy in zip(reports["symbol"], reports["side"], reports["last_qty"],
                                                reports["last_px"], reports["last_fee"], fee_ccys, strict=True):
        realized = 0.0
        if qty > 0:
            held = book.positions[sym]
            # a fee in the base asset (a venue charging the asset received on a buy) comes off
            # the position, not the cash; any other currency is booked against the cash
            in_base = fee_ccy is not None and fee_ccy == sym.split("/")[0]
            base_fee, quote_fee = (fee, 0.0) if in_base else (0.0, fee)
            if side == "buy":
                book.cash -= qty * px + quote_fee
                book.cost_basis[sym] += qty * px
                book.positions[sym] = held + qty - base_fee
            else:
                avg = book.cost_basis[sym] / held if held > 0 else px
                realized = (px - avg) * qty
                book.cash += qty * px - quote_fee
                book.cost_basis[sym] -= avg * (qty + base_fee)
                book.positions[sym] = held - qty - base_fee
            book.realized_pnl += realized
            book.realized_by_symbol[sym] = book.realized_by_symbol.get(sym, 0.0) + realized
            book.fees += quote_fee + base_fee * px  # in the quote currency
        pos_after.append(book.positions[sym])
        cash_after.append(book.cash)
        pnl.append(realized)
    # the reports with the three columns: one frame made at once (a copy and three column
    # assignments cost ~5x more on a live signal's one report)
    cols = dict(zip(reports.columns, column_arrays(reports), strict=True))
    if len(cols) != len(reports.columns):  # repeated column names: the general way
        out = reports.copy()
        out["position_after"] = np.asarray(pos_after, dtype="float64")
        out["cash_after"] = np.asarray(cash_after, dtype="float64")
        out["realized_pnl"] = np.asarray(pnl, dtype="float64")
        return out
    cols["position_after"] = np.asarray(pos_after, dtype="float64")
    cols["cash_after"] = np.asarray(cash_after, dtype="float64")
    cols["realized_pnl"] = np.asarray(pnl, dtype="float64")
    out = frame_of(cols)
    out.index = reports.index
    return out


SEGMENT_COLUMNS = ["timestamp", "cash", "position_value", "equity"]
_NO_SEGMENT = pd.DataFrame(columns=SEGMENT_COLUMNS)


def equity_segment(ctx: ExecutionContext, fills: pd.DataFrame, start_ns: int, end_ns: int,
                   cash_before: float, positions_before: dict[str, float]) -> pd.DataFrame:
    """Equity per bar in (start, end]: cash + sum(position x close), vectorised."""
    symbols = ctx.market.symbols
    stamps = [ctx.market.timestamps(s) for s in symbols]
    grid = _bar_grid(stamps, start_ns, end_ns)
    if len(grid) == 0:
        return _NO_SEGMENT.copy()
    f_ts = fills["timestamp"].to_numpy("datetime64[ns]").view("int64")
    sign = np.where(fills["side"].to_numpy() == "buy", 1.0, -1.0)
    qty, px, fee = (fills[c].to_numpy("float64") for c in ("last_qty", "last_px", "last_fee"))
    cash_delta = np.where(sign > 0, -(qty * px + fee), qty * px - fee)
    at = np.searchsorted(f_ts, grid, side="right")  # fills up to and including each bar
    # running sums that start from the batch's opening book, added in fill order as the book
    # adds them: the curve is the same to the last bit whatever the batch size
    cash = np.cumsum(np.concatenate([[cash_before], cash_delta]))[at]
    value = np.zeros(len(grid))
    for sym, ts in zip(symbols, stamps, strict=True):
        mine = (fills["symbol"] == sym).to_numpy()
        held = np.cumsum(np.concatenate([[positions_before.get(sym, 0.0)], np.where(mine, sign * qty, 0.0)]))[at]
        idx = np.searchsorted(ts, grid, side="right") - 1
        close = np.where(idx >= 0, ctx.market.closes(sym)[np.clip(idx, 0, None)], 0.0)
        value += held * close
    stamps_utc = pd.DatetimeIndex(grid.view("datetime64[ns]")).tz_localize("UTC")  # = to_datetime(utc=True), 100x faster
    return pd.DataFrame({"timestamp": stamps_utc, "cash": cash, "position_value": value, "equity": cash + value})


def _bar_grid(stamps: list[np.ndarray], start_ns: int, end_ns: int) -> np.ndarray:
    """The distinct bar times in (start, end] over every symbol, sorted. Bar times are in
    time order (as everywhere the market is searched): each symbol's part is a slice found
    by bisection, not a mask over all its bars (the cost follows the batch, not the file)."""
    parts = [t[np.searchsorted(t, start_ns, side="right"):np.searchsorted(t, end_ns, side="right")] for t in stamps]
    if not parts:
        return np.array([], "int64")
    if len(parts) > 1:
        return np.unique(np.concatenate(parts))
    part = parts[0]
    return part[np.concatenate([[True], part[1:] != part[:-1]])] if len(part) > 1 else part


async def manage_positions(executions: pd.DataFrame, ctx: ExecutionContext) -> StepResult:
    # the broker's account first, before the book changes: if asking fails, the retried step
    # starts from the same book (booking first would book this batch's fills twice)
    account = await ctx.broker.get_account_info() if ctx.config.verify_book else None
    book = ctx.book
    cash_before, positions_before = book.cash, dict(book.positions)
    booked = apply_fills(executions, book)
    now_ns = int(ctx.clock.now().value)
    start_ns = getattr(ctx, "marked_until_ns", np.iinfo("int64").min)
    if ctx.market.symbols:
        fills = booked[booked["last_qty"] > 0].sort_values("timestamp", kind="stable")
        segment = equity_segment(ctx, fills, start_ns, now_ns, cash_before, positions_before)
    else:  # no market data (live without bars): no bars to mark, as `equity_segment` would find
        segment = _NO_SEGMENT.copy()
    ctx.marked_until_ns = now_ns
    for sym in list(book.positions):
        if sym in ctx.market:
            last = ctx.market.last_close_at(sym, np.array([now_ns]))[0]
            if last == last:
                book.last_price[sym] = float(last)
    if len(segment):
        book.observe(segment["timestamp"], segment["equity"].to_numpy("float64"))
    else:
        book.observe(pd.Series([ctx.clock.now()]), np.array([book.equity()]))
    if account is not None:
        check_against_account(book, account)
    trips = breaker_trips(ctx, start_ns, now_ns)
    flatten_on_loss_limit(ctx, trips)
    return StepResult(booked, extra={"equity": segment, "positions": snapshot(book, ctx.clock.now()), "trips": trips})


def breaker_trips(ctx: ExecutionContext, start_ns: int, end_ns: int) -> list[Trip]:
    """The circuit breakers that the market and the book trip in (start, end]."""
    risk = ctx.config.risk
    if risk is None:
        return []
    trips: list[Trip] = []
    vol = risk.breakers.volatility
    if vol is not None:
        kept = ctx.__dict__.setdefault("_zscores", {})  # per symbol: the whole series once, not per batch
        for sym in ctx.market.symbols:
            closes = ctx.market.closes(sym)
            key = (sym, vol.lookback)
            if key not in kept or kept[key][0] is not closes:
                kept[key] = (closes, return_zscores(closes, vol.lookback))
            trip = volatility_trip(sym, ctx.market.timestamps(sym), closes, start_ns, end_ns,
                                   lookback=vol.lookback, z_threshold=vol.z_threshold,
                                   cooldown=pd.Timedelta(minutes=vol.cooldown_minutes), zscores=kept[key][1])
            if trip is not None:
                trips.append(trip)
    loss = risk.breakers.loss_limit
    if loss is not None:
        trip = loss_limit_trip(ctx.book.equity(), ctx.book.start_equity, loss.threshold, ctx.clock.now())
        if trip is not None:
            trips.append(trip)
    return trips


FLATTEN_STRATEGY = "risk-flatten"


def flatten_signals(ctx: ExecutionContext, trip: Trip) -> list[dict]:
    """Market sells closing every open position, except where a flatten order is still
    working; their ids are derived from the trip (``flatten:<symbol>:<time>``)."""
    working = {oo.row["symbol"] for oo in ctx.open_orders.values() if oo.row.get("strategy") == FLATTEN_STRATEGY}
    working |= {s["symbol"] for s in ctx.pending_signals}
    at = trip.at.floor("us")  # orders carry microseconds
    stamp = at.strftime("%Y%m%dT%H%M%S.%fZ")
    out = [{"signal_id": f"flatten:{sym}:{stamp}", "timestamp": at, "symbol": sym, "side": "sell",
            "quantity": float(qty), "strategy": FLATTEN_STRATEGY, "order_type": "market", "received_at": at}
           for sym, qty in sorted(ctx.book.positions.items()) if qty > 1e-12 and sym not in working]
    return [s for s in out if s["signal_id"] not in ctx.raised_signal_ids]


def flatten_on_loss_limit(ctx: ExecutionContext, trips: list[Trip]) -> list[dict]:
    """With ``breakers.loss_limit.flatten``, a loss-limit trip queues market sells of every
    open position in ``ctx.pending_signals`` (the flow runs them through the eight steps
    next; sells reduce risk, so the halt lets them through), audited (``risk.flatten``) and
    alerted. Returns the signals queued."""
    loss = ctx.config.risk.breakers.loss_limit if ctx.config.risk is not None else None
    trip = next((t for t in trips if t.name == "loss_limit"), None)
    if trip is None or loss is None or not loss.flatten:
        return []
    signals = flatten_signals(ctx, trip)
    if not signals:
        return []
    ctx.pending_signals.extend(signals)
    ctx.raised_signal_ids.update(s["signal_id"] for s in signals)
    what = ", ".join(f"{s['symbol']} {s['quantity']:g}" for s in signals)
    ledger = getattr(ctx.recorder, "ledger", None)
    from tasks.pipeline import provenance

    prov = provenance(ctx)
    if ledger is not None:
        with ledger.transaction() as s:
            ledger.audit_many(s, [{"event": "risk.flatten", "entity": "signal", "entity_id": sig["signal_id"],
                                   "payload": {"symbol": sig["symbol"], "quantity": sig["quantity"],
                                               "breaker": "loss_limit", "reason": trip.reason}}
                                  for sig in signals], prov=prov)
    if ctx.alerter is not None:
        alert = ctx.alerter.notify(f"flatten:{trip.at}", "TradPal loss limit: flattening positions",
                                   f"loss_limit tripped ({trip.reason}); closing {what} with market orders. "
                                   f"Flow run {prov.flow_run_id}.", level="failure")
        ctx.recorder.record_alerts([alert], prov)
    return signals


POSITION_COLUMNS = ["symbol", "quantity", "average_price", "market_price", "realized_pnl", "unrealized_pnl", "as_of"]
_NO_POSITIONS = pd.DataFrame([], columns=POSITION_COLUMNS)


def snapshot_rows(book: Book, as_of: pd.Timestamp) -> list[dict]:
    """`snapshot`'s rows, as dicts (one per symbol ever held)."""
    rows = []
    for sym, qty in book.positions.items():
        mark = book.last_price.get(sym)
        avg = book.cost_basis[sym] / qty if qty > 1e-15 else 0.0
        rows.append({"symbol": sym, "quantity": qty, "average_price": avg, "market_price": mark,
                     "realized_pnl": book.realized_by_symbol.get(sym, 0.0),
                     "unrealized_pnl": qty * (mark - avg) if mark is not None else 0.0, "as_of": as_of})
    return rows


def snapshot(book: Book, as_of: pd.Timestamp) -> pd.DataFrame:
    """One row per symbol ever held: quantity, average cost, mark and P&L."""
    rows = snapshot_rows(book, as_of)
    if not rows:
        return _NO_POSITIONS.copy()
    fast = _snapshot_frame(rows, as_of)
    return fast if fast is not None else pd.DataFrame(rows, columns=POSITION_COLUMNS)


def _snapshot_frame(rows: list[dict], as_of: pd.Timestamp) -> pd.DataFrame | None:
    """`snapshot`'s frame made at once when its values have their usual types (symbols str,
    numbers float, marks float or None, ``as_of`` a UTC Timestamp): the dtypes pandas would
    infer from the rows (marks all None: an object column). None otherwise."""
    if not (type(as_of) is pd.Timestamp and as_of.tzinfo is not None and str(as_of.tz) == "UTC"):
        return None
    cols: dict = {"symbol": strings([r["symbol"] for r in rows])}
    if not all(type(v) is str for v in cols["symbol"]):
        return None
    for col in ("quantity", "average_price", "market_price", "realized_pnl", "unrealized_pnl"):
        vals = [r[col] for r in rows]
        if col == "market_price" and all(v is None for v in vals):
            cols[col] = strings(vals)
            continue
        if not all(type(v) is float or (col == "market_price" and v is None) for v in vals):
            return None
        cols[col] = np.array(vals, dtype="float64")
    cols["as_of"] = utc_array([as_of.value] * len(rows))
    return frame_of(cols)


async def check_against_broker(ctx: ExecutionContext) -> None:
    check_against_account(ctx.book, await ctx.broker.get_account_info())


def check_against_account(book, account) -> None:
    """`BookMismatch` unless the book's cash and positions are the account's balances."""
    theirs = account.balances.get(book.quote_currency, 0.0)
    if abs(theirs - book.cash) > 1e-6 * max(1.0, abs(book.cash)):
        raise BookMismatch(f"cash: book {book.cash!r} != broker {theirs!r} {book.quote_currency}")
    for sym, qty in book.positions.items():
        base = sym.split("/")[0]
        held = account.balances.get(base, 0.0)
        if abs(held - qty) > 1e-9 * max(1.0, abs(qty)):
            raise BookMismatch(f"position {sym}: book {qty!r} != broker {held!r}")
