"""Retrying a broker call outside a Prefect task (a flow's own calls: connect and load the
markets, the tickers, the account), with the same rule as the broker steps' task retries:
only retryable errors (connection, rate limit), 0.5 / 1 / 2 s apart, and an IP ban waited
out first (a ban longer than `MAX_VENUE_WAIT_S` is final: retrying inside it lengthens it)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from brokers.base.errors import BrokerError

T = TypeVar("T")
DELAYS = (0.5, 1.0, 2.0)
MAX_VENUE_WAIT_S = 60.0


async def wait_out_venue(exc: BaseException, now: datetime | None = None) -> None:
    """Wait as long as the venue said to (``banned_until``), or make the error final when
    that is longer than `MAX_VENUE_WAIT_S`."""
    until = getattr(exc, "banned_until", None)
    if until is None:
        return
    wait = (until - (now or datetime.now(UTC))).total_seconds()
    if wait > MAX_VENUE_WAIT_S:
        exc.retryable = False  # this instance only
    elif wait > 0:
        await asyncio.sleep(wait)


async def retrying(call: Callable[[], Awaitable[T]], delays: tuple[float, ...] = DELAYS) -> T:
    """``await call()``, again after each delay while it fails with a retryable error."""
    for delay in (*delays, None):
        try:
            return await call()
        except BrokerError as exc:
            await wait_out_venue(exc)
            if delay is None or not exc.retryable:
                raise
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")
