"""Builders for tests that trade through the real ccxt client against the emulator
(Binance by default, or Bybit) on 127.0.0.1 (ETH/BTC, the first 200 real 5-minute candles of data/sample)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pandas as pd

from brokers.emulator import EmulatorHandle, MarketSpec, serve

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "BITTREX_ETH-BTC_5m.csv"
SYMBOL = "ETH/BTC"
API_KEY = "emu-key-live-3b1d5e"
SPEC = MarketSpec(SYMBOL, tick_size="0.00000001", step_size="0.001", min_qty="0.001",
                  max_qty="1000", min_notional="0.001")
BALANCES = {"BTC": "10", "ETH": "5"}


def canary() -> str:
    """A fresh random secret: a test asserts it appears nowhere."""
    return "CANARY" + secrets.token_hex(16)


COMMISSION = {"binance": "quote", "bybit": "received"}  # how each venue charges spot fees


def start_emulator(secret: str, venue: str = "binance", **overrides) -> EmulatorHandle:
    """The emulator speaking ``venue``'s dialect (binance or bybit)."""
    settings = {"api_key": API_KEY, "secret": secret, "bars": {SYMBOL: pd.read_csv(SAMPLE).head(200)},
                "balances": BALANCES, "specs": [SPEC], "commission": COMMISSION[venue]}
    settings.update(overrides)
    handle = serve(venue, **settings)
    handle.venue = venue
    return handle


def use_emulator(monkeypatch, handle: EmulatorHandle, secret: str) -> None:
    """Configure ``live_execution`` for the emulator through the environment."""
    monkeypatch.setenv("TRADPAL_BROKER", "ccxt")
    monkeypatch.setenv("TRADPAL_EXCHANGE", getattr(handle, "venue", "binance"))
    monkeypatch.setenv("TRADPAL_EXCHANGE_URL", handle.base_url)
    monkeypatch.setenv("TRADPAL_API_KEY", API_KEY)
    monkeypatch.setenv("TRADPAL_API_SECRET", secret)
    for name in ("TRADPAL_API_KEY_BLOCK", "TRADPAL_API_SECRET_BLOCK", "TRADPAL_SANDBOX"):
        monkeypatch.delenv(name, raising=False)
