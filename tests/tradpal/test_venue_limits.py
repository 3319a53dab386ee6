"""One request rate per venue account (a Prefect rate limit): its name, its settings,
creation on first use, and the fallback when the Prefect API cannot serve it."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from brokers.factory import venue_rate_gate
from tradpal.config import Settings
from tradpal.venue_limits import PrefectRateGate, VenueRateLimit, ensure_limit, limit_name

KEY = "CANARY-rate-key-4f1e9a"


def test_the_limit_is_named_by_venue_and_a_hash_of_the_key() -> None:
    name = limit_name("binance@127.0.0.1:8765", KEY)
    assert name.startswith("tradpal-venue-binance-127.0.0.1-8765-") and len(name.rsplit("-", 1)[1]) == 12
    assert KEY not in name and name == limit_name("binance@127.0.0.1:8765", KEY)
    assert name != limit_name("binance@127.0.0.1:8765", KEY + "x")


def test_the_gate_is_off_unless_configured_and_profile_takes_the_venues_budget() -> None:
    assert venue_rate_gate(Settings(exchange="binance"), "binance", KEY) is None
    assert venue_rate_gate(Settings(exchange="binance", venue_rate_limit="0"), "binance", KEY) is None
    gate = venue_rate_gate(Settings(exchange="binance", venue_rate_limit="profile"), "binance", KEY)
    assert isinstance(gate, PrefectRateGate) and (gate.limit.per_second, gate.limit.burst) == (50.0, 100)
    gate = venue_rate_gate(Settings(exchange="kraken", venue_rate_limit="2", venue_rate_burst=4), "kraken", KEY)
    assert (gate.limit.per_second, gate.limit.burst) == (2.0, 4) and KEY not in repr(gate)
    with pytest.raises(ValueError, match="burst"):
        VenueRateLimit("x", 1.0, 0)


@pytest.mark.parametrize("value", ["fast", "-1", "inf"])
def test_a_bad_rate_names_the_key(monkeypatch, value: str) -> None:
    from tradpal.config import load_settings
    from tradpal.errors import ConfigError

    monkeypatch.setenv("TRADPAL_VENUE_RATE_LIMIT", value)
    with pytest.raises(ConfigError, match="TRADPAL_VENUE_RATE_LIMIT"):
        load_settings()


def test_the_limit_is_created_once_and_an_existing_one_is_kept(prefect_api) -> None:
    from prefect.client.orchestration import get_client

    name = limit_name(f"test-{time.time_ns()}", KEY)

    async def scenario() -> tuple:
        assert await ensure_limit(VenueRateLimit(name, 7.0, 9))
        assert await ensure_limit(VenueRateLimit(name, 1.0, 1))  # exists: left as it is
        gate = PrefectRateGate(VenueRateLimit(name, 1.0, 1))
        for _ in range(3):
            await gate()
        async with get_client() as client:
            return await client.read_global_concurrency_limit_by_name(name)

    made = asyncio.run(scenario())
    assert (made.limit, made.slot_decay_per_second) == (9, 7.0)


def test_without_a_usable_prefect_api_the_gate_lets_requests_through(caplog) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    gate = PrefectRateGate(VenueRateLimit(limit_name("binance", KEY), 5.0, 1))
    caplog.set_level(logging.WARNING, "tradpal.venue_limits")
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        asyncio.run(gate())
        asyncio.run(gate())
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "ccxt's limiter only" in warnings[0]
