"""Fixtures for the ccxt adapter: the Binance emulator on a free loopback port, trading
the first 200 real 5-minute ETH/BTC candles of data/sample, and a connected broker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from brokers.ccxt import CcxtBroker
from brokers.emulator import EmulatorHandle, MarketSpec, serve

SAMPLE = Path(__file__).resolve().parents[3] / "data" / "sample" / "BITTREX_ETH-BTC_5m.csv"
SYMBOL = "ETH/BTC"
API_KEY = "emu-api-key-3b1d5e7f9a"
SECRET = "CANARY-SECRET-7f3a9c1e5d-must-never-be-printed"
SPEC = MarketSpec(SYMBOL, tick_size="0.00000001", step_size="0.001", min_qty="0.001",
                  max_qty="1000", min_notional="0.001")
BALANCES = {"BTC": "10", "ETH": "5"}
BINANCE_OPTIONS = {"defaultType": "spot", "fetchMarkets": {"types": ["spot"]},
                   "fetchCurrencies": False, "fetchMargins": False}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def bars() -> pd.DataFrame:
    return pd.read_csv(SAMPLE).head(200)


# the dialects every adapter test runs against; how each venue charges spot fees
VENUES = ("binance", "bybit")
COMMISSION = {"binance": "quote", "bybit": "received"}


@pytest.fixture(params=VENUES)
def venue(request: pytest.FixtureRequest) -> str:
    """The emulated venue (a test pins one with ``@pytest.mark.parametrize("venue", [...])``)."""
    return request.param


@pytest.fixture
def start_emulator(bars: pd.DataFrame, venue: str) -> Iterator[Callable[..., EmulatorHandle]]:
    """Start an emulator of ``venue`` (keywords override the defaults); every one is
    stopped after the test."""
    handles: list[EmulatorHandle] = []

    def start(**overrides: Any) -> EmulatorHandle:
        settings: dict[str, Any] = {"api_key": API_KEY, "secret": SECRET, "bars": {SYMBOL: bars},
                                    "balances": BALANCES, "specs": [SPEC], "commission": COMMISSION[venue]}
        settings.update(overrides)
        handle = serve(venue, **settings)
        handle.venue = venue  # type: ignore[attr-defined]
        handles.append(handle)
        return handle

    yield start
    for handle in handles:
        handle.stop()


@pytest.fixture
def emulator(start_emulator: Callable[..., EmulatorHandle]) -> EmulatorHandle:
    return start_emulator()


def make_broker(emulator: EmulatorHandle, **overrides: Any) -> CcxtBroker:
    venue = getattr(emulator, "venue", "binance")
    settings: dict[str, Any] = {"api_key": API_KEY, "secret": SECRET, "base_url": emulator.base_url,
                                "quote_currency": "BTC", "name": f"{venue}-emulator"}
    settings.update(overrides)
    return CcxtBroker(venue, **settings)


@pytest.fixture
async def broker(emulator: EmulatorHandle) -> AsyncIterator[CcxtBroker]:
    async with make_broker(emulator) as connected:
        yield connected
