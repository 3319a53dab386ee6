"""Step 5 — order placement. Idempotent: each order is first looked up at the broker by
its client order id and only sent if the broker has never seen it, so a retried task,
a re-delivered signal or a restarted process cannot place an order twice.

Refusals (insufficient funds, invalid order) reject that order and the rest go on;
retryable errors (connection, rate limit) propagate so the task retries."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import numpy as np
import pandas as pd

from brokers.base import (
    InsufficientFundsError,
    InvalidOrderError,
    Order,
    OrderResult,
    OrderType,
    Side,
    TimeInForce,
)
from brokers.base.clock import utc
from tasks.context import ExecutionContext
from tasks.step import StepResult, column_arrays, frame_of, records, rejections, strings, utc_array
from tradpal.faults import crash_point


def to_order(row: dict) -> Order:
    def price(v: float) -> float | None:
        return None if v != v else float(v)

    return Order(
        symbol=row["symbol"],
        side=Side(row["side"]),
        order_type=OrderType(row["order_type"]),
        quantity=float(row["quantity"]),
        client_order_id=row["client_order_id"],
        price=price(row["price"]),
        stop_price=price(row["stop_price"]),
        time_in_force=TimeInForce(row["time_in_force"]),
        placed_at=row["signal_time"].to_pydatetime(),
    )


async def place_one(ctx: ExecutionContext, order: Order, *, first_send: bool = False) -> OrderResult:
    """Look up by client id first; place only if the broker has never seen the order.

    ``first_send``: the caller knows the order cannot have been sent before (see
    `never_sent`), so the lookup is skipped. Every send is remembered in
    ``ctx.sent_client_ids`` first, so a retry of the same order always looks it up."""
    if not (first_send and order.client_order_id not in ctx.sent_client_ids):
        existing = await ctx.broker.get_order_by_client_id(order.client_order_id, order.symbol)
        if existing is not None:
            return existing
    ctx.sent_client_ids.add(order.client_order_id)
    return await ctx.broker.place_order(order)


def never_sent(ctx: ExecutionContext, row: dict, *, lookup_always: bool | None = None) -> bool:
    """An order step 3 made for a signal this run claimed in the ledger (the claim is the
    database's ``INSERT .. ON CONFLICT DO NOTHING``: no run sharing the ledger has seen the
    signal), and this process has not sent yet: it cannot be at the venue, so placing it
    needs no lookup first. ``TRADPAL_PLACEMENT_LOOKUP=always`` looks up every order anyway
    (several ledgers trading one account, or a ledger restored from an old backup);
    ``lookup_always``: that setting, read once by the caller for a whole batch."""
    if lookup_always is None:
        lookup_always = _lookup_always()
    if lookup_always:
        return False
    claimed = getattr(ctx.recorder, "claimed_here", None)
    return bool(claimed is not None and claimed(str(row["signal_id"])))


def _lookup_always() -> bool:
    return os.environ.get("TRADPAL_PLACEMENT_LOOKUP", "").strip().lower() == "always"


def _utc_ns(at: Any) -> int:
    """A broker's timestamp as int64 UTC nanoseconds (naive: UTC); an aware Timestamp as it is."""
    return at.value if type(at) is pd.Timestamp and at.tzinfo is not None else utc(at).value


async def place_orders(checked: pd.DataFrame, ctx: ExecutionContext) -> StepResult:
    """Place each order (up to ``config.placement_concurrency`` in flight at once, for a
    broker that `waits_on_network`; the outcome is the same as one by one, in row order).
    The broker's answers are kept in ``ctx.placement_results`` for monitoring (an order
    already over needs no poll)."""
    rows = records(checked)
    outcomes: list[tuple[str, Any]] = [("", None)] * len(rows)
    acked_ns = np.zeros(len(rows), dtype="int64")  # when each answer came
    limit = asyncio.Semaphore(max(1, int(ctx.config.placement_concurrency)))
    lookup_always = _lookup_always()

    async def one(i: int, row: dict) -> None:
        order = to_order(row)
        async with limit:
            crash_point("placement.sent")
            try:
                result = await place_one(ctx, order, first_send=never_sent(ctx, row, lookup_always=lookup_always))
            except (InsufficientFundsError, InvalidOrderError) as exc:
                crash_point("placement.acked")
                outcomes[i] = ("refused", f"{type(exc).__name__}: {exc.broker_message}")
                return
        acked_ns[i] = time.time_ns()
        crash_point("placement.acked")  # the venue has it; the ledger does not yet
        outcomes[i] = ("answered", result)

    concurrent = ctx.config.placement_concurrency > 1 and getattr(ctx.broker, "waits_on_network", True)
    if len(rows) == 1 or not concurrent:
        for i, row in enumerate(rows):
            await one(i, row)
    else:
        try:
            async with asyncio.TaskGroup() as group:  # an error cancels the rest (a retry looks each one up)
                for i, row in enumerate(rows):
                    group.create_task(one(i, row))
        except BaseExceptionGroup as eg:  # the first error as itself: retries and the ledger judge it by its type
            raise eg.exceptions[0] from None
    placed = np.zeros(len(rows), dtype=bool)
    broker_ids: list[str] = []
    statuses: list[str] = []
    placed_ns: list[int] = []
    refused: list[tuple[str, str, str]] = []
    for i, (row, (kind, value)) in enumerate(zip(rows, outcomes, strict=True)):
        if kind == "refused":
            refused.append((row["signal_id"], row["client_order_id"], value))
            continue
        result: OrderResult = value
        if result.status.value == "REJECTED":
            refused.append((row["signal_id"], row["client_order_id"], result.reason or "rejected by the broker"))
            continue
        ctx.placement_results[row["client_order_id"]] = result
        placed[i] = True
        broker_ids.append(result.order_id)
        statuses.append(result.status.value)
        placed_ns.append(_utc_ns(result.timestamp))
    # the checked orders placed, with the broker's answer: one frame made at once
    cols = dict(zip(checked.columns, column_arrays(checked), strict=True))
    if not placed.all():
        cols = {name: array[placed] for name, array in cols.items()}
    cols.update(broker_order_id=strings(broker_ids), status=strings(statuses), placed_at=utc_array(placed_ns),
                acked_at=utc_array(acked_ns[placed]))
    frame = frame_of(cols)
    ids, coids, why = zip(*refused, strict=True) if refused else ((), (), ())
    return StepResult(frame, rejections(ids, why, coids))
