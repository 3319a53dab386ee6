"""Step 5 — order placement. Idempotent: each order is first looked up at the broker by
its client order id and only sent if the broker has never seen it, so a retried task,
a re-delivered signal or a restarted process cannot place an order twice.

Refusals (insufficient funds, invalid order) reject that order and the rest go on;
retryable errors (connection, rate limit) propagate so the task retries."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

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
from tasks.context import ExecutionContext
from tasks.step import StepResult, rejections
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


async def place_one(ctx: ExecutionContext, order: Order) -> OrderResult:
    """Look up by client id first; place only if the broker has never seen the order."""
    existing = await ctx.broker.get_order_by_client_id(order.client_order_id, order.symbol)
    if existing is not None:
        return existing
    return await ctx.broker.place_order(order)


async def place_orders(checked: pd.DataFrame, ctx: ExecutionContext) -> StepResult:
    """Place each order (up to ``config.placement_concurrency`` in flight at once; the
    outcome is the same as one by one, in row order). The broker's answers are kept in
    ``ctx.placement_results`` for monitoring (an order already over needs no poll)."""
    rows = checked.to_dict("records")
    outcomes: list[tuple[str, Any]] = [("", None)] * len(rows)
    limit = asyncio.Semaphore(max(1, int(ctx.config.placement_concurrency)))

    async def one(i: int, row: dict) -> None:
        order = to_order(row)
        async with limit:
            crash_point("placement.sent")
            try:
                result = await place_one(ctx, order)
            except (InsufficientFundsError, InvalidOrderError) as exc:
                crash_point("placement.acked")
                outcomes[i] = ("refused", f"{type(exc).__name__}: {exc.broker_message}")
                return
        crash_point("placement.acked")  # the venue has it; the ledger does not yet
        outcomes[i] = ("answered", result)

    if len(rows) == 1 or ctx.config.placement_concurrency <= 1:
        for i, row in enumerate(rows):
            await one(i, row)
    else:
        try:
            async with asyncio.TaskGroup() as group:  # an error cancels the rest (a retry looks each one up)
                for i, row in enumerate(rows):
                    group.create_task(one(i, row))
        except BaseExceptionGroup as eg:  # the first error as itself: retries and the ledger judge it by its type
            raise eg.exceptions[0] from None
    placed: list[dict] = []
    refused: list[tuple[str, str, str]] = []
    for row, (kind, value) in zip(rows, outcomes, strict=True):
        if kind == "refused":
            refused.append((row["signal_id"], row["client_order_id"], value))
            continue
        result: OrderResult = value
        if result.status.value == "REJECTED":
            refused.append((row["signal_id"], row["client_order_id"], result.reason or "rejected by the broker"))
            continue
        ctx.placement_results[row["client_order_id"]] = result
        placed.append({**row, "broker_order_id": result.order_id, "status": result.status.value,
                       "placed_at": pd.Timestamp(result.timestamp).tz_convert("UTC")
                       if pd.Timestamp(result.timestamp).tzinfo else pd.Timestamp(result.timestamp, tz="UTC"),
                       "acked_at": pd.Timestamp(datetime.now(UTC))})
    frame = pd.DataFrame(placed, columns=[*checked.columns, "broker_order_id", "status", "placed_at", "acked_at"])
    for col in ("placed_at", "acked_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True).astype("datetime64[ns, UTC]")
    if frame.empty:
        frame = frame.astype({c: checked[c].dtype for c in checked.columns})
    ids, coids, why = zip(*refused, strict=True) if refused else ((), (), ())
    return StepResult(frame, rejections(ids, why, coids))
