"""One request rate per venue account, shared by every run: a Prefect global
concurrency limit used as a rate limit (``prefect.concurrency.asyncio.rate_limit``).

ccxt's own limiter spaces the requests of one client; two runs (two flows, two
workers) each have their own client and would together exceed the venue's limit. So
``CcxtBroker`` also awaits a *gate* before every HTTP request it sends, and this gate
takes one slot of the Prefect limit ``tradpal-venue-<venue>-<account>``, where
``<account>`` is the first 12 hex digits of SHA-256 of the API key (the key itself is
never sent or logged). The limit holds ``burst`` slots that free ``per_second`` slots
per second: a sustained ``per_second`` requests per second over all runs, with bursts
up to ``burst``.

* Off unless ``TRADPAL_VENUE_RATE_LIMIT`` is set (a number of requests per second, or
  ``profile`` for the venue profile's budget); unset or 0: ccxt's limiter only. Off by
  default because every request then pays a Prefect API round trip (measured with
  ``benchmarks.ccxt_latency --gate`` on the SQLite-backed ephemeral API: seconds per
  signal, not milliseconds); turn it on where several runs share an account, with
  Prefect on PostgreSQL.
* The limit is created on first use (``per_second`` from ``TRADPAL_VENUE_RATE_LIMIT``,
  ``burst`` from ``TRADPAL_VENUE_RATE_BURST`` else the profile's) unless it exists: one
  created beforehand (``prefect gcl create <name> --limit B --slot-decay-per-second R``)
  or edited in the UI is used as it is.
* If the Prefect API cannot create or serve the limit, the gate logs one warning and
  lets requests through with ccxt's limiter only: a rate limit must not stop trading.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass

log = logging.getLogger("tradpal.venue_limits")


def limit_name(venue: str, api_key: str) -> str:
    """``tradpal-venue-<venue>-<sha256(api_key)[:12]>`` (venue reduced to [a-z0-9.-])."""
    slug = re.sub(r"[^a-z0-9.-]+", "-", venue.lower()).strip("-") or "venue"
    account = hashlib.sha256(api_key.encode()).hexdigest()[:12]
    return f"tradpal-venue-{slug}-{account}"


@dataclass(frozen=True)
class VenueRateLimit:
    name: str
    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if not self.per_second > 0:
            raise ValueError(f"{self.name}: per_second must be > 0, got {self.per_second}")
        if self.burst < 1:
            raise ValueError(f"{self.name}: burst must be >= 1, got {self.burst}")


async def ensure_limit(limit: VenueRateLimit) -> bool:
    """Create the Prefect limit unless it exists; False if the API could not."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectNotFound

    try:
        async with get_client() as client:
            try:
                existing = await client.read_global_concurrency_limit_by_name(limit.name)
            except ObjectNotFound:
                await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(
                    name=limit.name, limit=limit.burst, slot_decay_per_second=limit.per_second))
                log.info("created the Prefect rate limit %s: %s requests/s, bursts of %d",
                         limit.name, limit.per_second, limit.burst)
            else:
                log.info("using the Prefect rate limit %s (%s slots, %s/s)", limit.name, existing.limit,
                         existing.slot_decay_per_second)
    except Exception as exc:  # noqa: BLE001 - any failure: fall back to ccxt's limiter
        log.warning("cannot create the Prefect rate limit %s (%s: %s); requests are spaced by ccxt's "
                    "limiter only", limit.name, type(exc).__name__, exc)
        return False
    return True


class PrefectRateGate:
    """An async callable: one slot of ``limit`` per call (see the module docstring)."""

    def __init__(self, limit: VenueRateLimit) -> None:
        self.limit = limit
        self._usable: bool | None = None  # None: not tried yet

    async def __call__(self) -> None:
        from prefect.concurrency.asyncio import rate_limit

        if self._usable is None:
            self._usable = await ensure_limit(self.limit)
        if not self._usable:
            return
        try:
            await rate_limit(self.limit.name, occupy=1, strict=True)
        except Exception as exc:  # noqa: BLE001 - the limit vanished or the API is down
            self._usable = False
            log.warning("the Prefect rate limit %s is not usable (%s: %s); requests are spaced by ccxt's "
                        "limiter only", self.limit.name, type(exc).__name__, exc)

    def __repr__(self) -> str:
        return f"PrefectRateGate({self.limit.name!r}, {self.limit.per_second}/s, burst {self.limit.burst})"
