from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from risk.breakers import blocking_breaker, loss_limit_trip, return_zscores, volatility_trip


def test_return_zscores_hand_computed():
    closes = np.array([100.0, 101.0, 100.0, 101.0, 110.0])
    z = return_zscores(closes, lookback=3)
    # returns: nan, .01, -.00990099, .01, .0891089; z[4] against r1..r3
    prev = np.array([0.01, -0.00990099009901, 0.01])
    assert z[4] == pytest.approx((0.0891089108910891 - prev.mean()) / prev.std(ddof=1))
    assert np.isnan(z[:4]).all()


def test_volatility_trip_takes_the_latest_outlier_in_the_window():
    closes = np.array([100.0, 100.1, 100.0, 100.1, 100.0, 100.1, 100.0, 120.0, 120.1])
    stamps = pd.date_range("2024-01-01", periods=9, freq="1min", tz="UTC").to_numpy("datetime64[ns]").view("int64")
    trip = volatility_trip("X/Y", stamps, closes, stamps[0], stamps[-1], lookback=5, z_threshold=5,
                           cooldown=pd.Timedelta(minutes=30))
    assert trip.name == "volatility_halt" and trip.scope == "X/Y" and trip.value > 5
    assert trip.at == pd.Timestamp("2024-01-01 00:07", tz="UTC") and trip.until == trip.at + pd.Timedelta(minutes=30)
    assert volatility_trip("X/Y", stamps, closes, stamps[7], stamps[-1], lookback=5, z_threshold=5,
                           cooldown=pd.Timedelta(minutes=30)) is None  # the spike is outside (start, end]


def test_loss_limit_exactly_at_threshold_does_not_trip():
    at = pd.Timestamp("2024-01-01", tz="UTC")
    assert loss_limit_trip(9_000.0, 10_000.0, 0.10, at) is None
    trip = loss_limit_trip(8_999.0, 10_000.0, 0.10, at)
    assert trip.value == pytest.approx(0.1001) and trip.until is None and trip.scope == "portfolio"


def test_blocking_breaker_scopes():
    active = [{"name": "volatility_halt", "scope": "live|BTC/USDT", "reason": "spike"},
              {"name": "loss_limit", "scope": "replay:abc|portfolio", "reason": "down 12%"}]
    assert blocking_breaker("BTC/USDT", False, active, "live") == "breaker volatility_halt (BTC/USDT): spike"
    assert blocking_breaker("ETH/USDT", True, active, "live") is None  # the replay's halt is not live's
    assert blocking_breaker("ETH/USDT", True, active, "replay:abc") == "breaker loss_limit (portfolio): down 12%"
    assert blocking_breaker("ETH/USDT", False, active, "replay:abc") is None  # reducing risk is allowed
