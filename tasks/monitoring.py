"""Step 6 — execution monitoring: wait on the clock, poll every open order, report each
new fill (partial or complete) and each terminal state; cancel what outlives its
timeout; at the end of a replay, cancel what can no longer fill.

Monitoring keeps what it has seen in ``ctx.open_orders`` and only commits that memory
when the whole pass succeeded, so a retried pass reports nothing twice and loses nothing.

Brackets (`risk.brackets`, from the risk configuration) are run here too: native where
the broker declares ``supports_brackets`` (attached to the entry as it is first seen),
emulated otherwise (legs placed when the entry has filled, the other leg cancelled on the
first fill; a replay then steps bar by bar while such a bracket works). Bracket legs are
protective: no order timeout cancels them and a live pass does not wait for them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from brokers.base import InvalidOrderError, OrderNotFoundError, OrderResult, OrderStatus
from tasks.brackets import BracketPass, leg_coids, next_bar_wake
from tasks.context import ExecutionContext, OpenOrder
from tasks.contracts import ExecutionFrame
from tasks.step import StepResult, frame_of, records, rejections, strings, utc_array

COLUMNS = list(ExecutionFrame.to_schema().columns)
END_OF_DATA = "unfilled: the market data ended before the order could fill"


def _ts(value) -> pd.Timestamp:
    t = pd.Timestamp(value)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _base(row: dict, result: OrderResult) -> dict:
    return {
        "client_order_id": row["client_order_id"], "broker_order_id": result.order_id,
        "signal_id": row["signal_id"], "symbol": row["symbol"], "side": row["side"],
        "strategy": row["strategy"], "order_qty": float(row["quantity"]),
        "reference_price": row["reference_price"], "signal_time": row["signal_time"],
        "placed_at": row["placed_at"], "status": result.status.value,
    }


def reports_for(open_order: OpenOrder, result: OrderResult, reason: str | None = None) -> list[dict]:
    """Execution reports for what changed since ``open_order`` was last seen."""
    row, reports = open_order.row, []
    cum, notional, fees = open_order.cum_qty, open_order.cum_qty * open_order.avg_px, open_order.cum_fee
    new_fills = result.fills[open_order.fills_seen:]
    for i, fill in enumerate(new_fills, start=open_order.fills_seen + 1):
        cum += fill.quantity
        notional += fill.quantity * fill.price
        fees += fill.fee
        last = i == len(result.fills) and result.status == OrderStatus.FILLED
        reports.append({
            **_base(row, result), "exec_type": "FILL" if last else "PARTIAL_FILL",
            "status": "FILLED" if last else "PARTIALLY_FILLED",  # the order's status after this fill
            "timestamp": _ts(fill.timestamp), "trade_id": fill.trade_id or f"{result.order_id}-{i}",
            "last_qty": fill.quantity, "last_px": fill.price, "last_fee": fill.fee,
            "fee_currency": fill.fee_currency, "is_maker": fill.is_maker, "model_price": fill.reference_price,
            "cum_qty": cum, "avg_px": notional / cum, "cum_fee": fees, "reason": None,
        })
    if result.status.is_terminal and result.status != OrderStatus.FILLED:
        reports.append({
            **_base(row, result), "exec_type": result.status.value, "timestamp": _ts(result.timestamp),
            "trade_id": None, "last_qty": 0.0, "last_px": None, "last_fee": 0.0, "fee_currency": None,
            "is_maker": False, "model_price": None, "cum_qty": cum, "avg_px": notional / cum if cum > 0 else None,
            "cum_fee": fees, "reason": reason or result.reason,
        })
    return reports


async def _poll(ctx: ExecutionContext, memory: dict[str, OpenOrder], reports: list[dict],
                reason: str | None = None) -> None:
    for coid, oo in list(memory.items()):
        result = settled_at_placement(ctx, coid)
        if result is None:
            result = await ctx.broker.get_order_status(oo.row["broker_order_id"], oo.row["symbol"])
        _advance(memory, coid, oo, result, reports, reason)


def settled_at_placement(ctx: ExecutionContext, coid: str) -> OrderResult | None:
    """The broker's answer to the placement, if it already was final and complete (a
    market order filled at once, with its fills): the order cannot change any more, so
    a poll would only ask again. None otherwise (the order is polled)."""
    result = ctx.placement_results.get(coid)
    if result is None or not result.status.is_terminal:
        return None
    filled = sum(f.quantity for f in result.fills)
    if abs(filled - result.executed_quantity) > 1e-9 * max(1.0, result.executed_quantity):
        return None  # the answer does not carry every fill: ask for them
    return result


def _advance(memory: dict[str, OpenOrder], coid: str, oo: OpenOrder, result: OrderResult,
             reports: list[dict], reason: str | None = None) -> None:
    new = reports_for(oo, result, reason)
    reports.extend(new)
    fills = [r for r in new if r["last_qty"] > 0]
    if fills:
        last = fills[-1]
        memory[coid] = OpenOrder(oo.row, len(result.fills), last["cum_qty"], last["avg_px"], last["cum_fee"])
    if result.status.is_terminal:
        memory.pop(coid, None)


async def _cancel(ctx: ExecutionContext, memory: dict[str, OpenOrder], coids: list[str],
                  reports: list[dict], reason: str) -> None:
    for coid in coids:
        oo = memory[coid]
        result = await cancel_or_final(ctx, oo.row["broker_order_id"], oo.row["symbol"])
        _advance(memory, coid, oo, result, reports, reason)


async def cancel_or_final(ctx: ExecutionContext, order_id: str, symbol: str) -> OrderResult:
    """Cancel an order; if the broker refuses because the order is already over (it filled
    or expired since the last poll — or a re-sent cancel found it cancelled), its final
    state. A refusal for an order still open is the broker's error, raised."""
    try:
        return await ctx.broker.cancel_order(order_id, symbol)
    except (InvalidOrderError, OrderNotFoundError):
        result = await ctx.broker.get_order_status(order_id, symbol)
        if not result.status.is_terminal:
            raise
        return result


async def monitor_executions(placed: pd.DataFrame, ctx: ExecutionContext) -> StepResult:
    """Report fills and terminal states of every open order (this batch's and earlier ones)."""
    cfg = ctx.config
    memory = dict(ctx.open_orders)
    rows = records(placed)
    for row in rows:
        memory.setdefault(row["client_order_id"], OpenOrder(row))
    reports: list[dict] = []
    brackets = BracketPass(ctx, memory, reports)
    await brackets.start(rows)
    now = ctx.clock.now()
    deadline = ctx.monitor_until if ctx.monitor_until is not None else (
        now + pd.Timedelta(seconds=cfg.order_timeout_s or 0.0))
    await _poll(ctx, memory, reports)
    await brackets.advance()
    # a replay chunk moves the market to its end even when nothing is open (the equity
    # curve and the marks follow the clock); live monitoring stops once nothing but
    # bracket legs is open
    while (set(memory) - leg_coids(brackets.brackets) or ctx.monitor_until is not None) \
            and ctx.clock.now() < deadline:
        wake = ctx.clock.next_wake(deadline, cfg.poll_interval_s)
        await ctx.clock.sleep_until(next_bar_wake(ctx, brackets.brackets, wake))
        await _poll(ctx, memory, reports)
        await brackets.advance()
    if cfg.order_timeout_s is not None:
        limit = pd.Timedelta(seconds=cfg.order_timeout_s)
        legs = leg_coids(brackets.brackets)
        stale = [c for c, oo in memory.items() if c not in legs and ctx.clock.now() - oo.row["placed_at"] >= limit]
        await _cancel(ctx, memory, stale, reports, f"canceled: still open after the {cfg.order_timeout_s:g}s timeout")
        if stale:
            await brackets.advance()  # a timed-out entry that filled in part gets its bracket now
    if ctx.final:
        await _cancel(ctx, memory, list(memory), reports, END_OF_DATA)
        await brackets.advance()
    brackets.commit()
    ctx.open_orders = memory
    ctx.placement_results.clear()  # seen: from now on the broker is asked
    frame = _typed_frame(reports)
    if not any(r["exec_type"] == "REJECTED" for r in reports):
        return StepResult(frame)
    refused = frame[frame["exec_type"] == "REJECTED"]
    return StepResult(frame, rejections(refused["signal_id"], refused["reason"].fillna("rejected by the broker"),
                                        refused["client_order_id"]))


_UTC = pd.DatetimeTZDtype("ns", "UTC")
_OBJECT = np.dtype(object)
_TIMES = ("timestamp", "signal_time", "placed_at")
_FLOATS = ("last_qty", "last_px", "last_fee", "model_price", "order_qty", "cum_qty", "avg_px", "cum_fee",
           "reference_price")
_NULLABLE_TEXT = ("trade_id", "fee_currency", "reason")
_TEXT = ("client_order_id", "broker_order_id", "signal_id", "symbol", "side", "strategy", "exec_type", "status")
_NUMBER_TYPES = (float, int, np.float64, type(None))


def _typed_frame(reports: list[dict]) -> pd.DataFrame:
    """`_typed` of the reports' frame, made at once from the reports' values when they
    have their usual types (times as tz-aware Timestamps, numbers as float/int/None, flags
    as bool: what `reports_for` builds), so nothing needs converting; else the general way."""
    cols: dict = {}
    try:
        for col in COLUMNS:
            vals = [r[col] for r in reports]
            if col in _TIMES:
                if not all(type(v) is pd.Timestamp and v.tzinfo is not None for v in vals):
                    raise TypeError(col)
                cols[col] = utc_array([v.value for v in vals])
            elif col in _FLOATS:
                if not all(type(v) in _NUMBER_TYPES for v in vals):
                    raise TypeError(col)
                cols[col] = np.array(vals, dtype="float64")  # None: NaN
            elif col == "is_maker":
                if not all(type(v) is bool for v in vals):
                    raise TypeError(col)
                cols[col] = np.array(vals, dtype=bool)
            elif col in _NULLABLE_TEXT:
                cols[col] = strings([None if v is None or (type(v) is float and v != v) else v for v in vals])
                if not all(v is None or type(v) is str for v in cols[col]):
                    raise TypeError(col)
            else:
                cols[col] = strings(vals)
                if not all(type(v) is str for v in vals):
                    raise TypeError(col)
    except (TypeError, KeyError):
        return _typed(pd.DataFrame(reports, columns=COLUMNS))
    if len(reports) > 1:
        ts = cols["timestamp"].asi8
        if (np.diff(ts) < 0).any():  # in time order (stable: reports of one time stay in their order)
            order = np.argsort(ts, kind="stable")
            cols = {name: array[order] for name, array in cols.items()}
    return frame_of(cols)


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """The reports in the contract's types, in time order. A column already of its type
    is left as it is (the reports of a live pass usually are: a few rows, built typed)."""
    for col in ("timestamp", "signal_time", "placed_at"):
        if frame[col].dtype != _UTC:
            frame[col] = pd.to_datetime(frame[col], utc=True).astype("datetime64[ns, UTC]")
    for col in ("last_qty", "last_px", "last_fee", "model_price", "order_qty", "cum_qty", "avg_px", "cum_fee",
                "reference_price"):
        if frame[col].dtype != np.float64:
            frame[col] = pd.to_numeric(frame[col]).astype("float64")
    if frame["is_maker"].dtype != bool:
        frame["is_maker"] = frame["is_maker"].astype(bool)
    for col in ("client_order_id", "broker_order_id", "signal_id", "symbol", "side", "strategy", "exec_type", "status"):
        if frame[col].dtype != _OBJECT:
            frame[col] = frame[col].astype(object)
    for col in ("trade_id", "fee_currency", "reason"):
        if frame[col].dtype != _OBJECT or len(frame) > 64 or any(v is not None and v != v for v in frame[col]):
            frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    if len(frame) > 1 and not frame["timestamp"].is_monotonic_increasing:
        frame = frame.sort_values(["timestamp"], kind="stable")
    return frame.reset_index(drop=True)
