"""Each limit with a hand-computed case, including the edge where it is exactly reached."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from risk.config import parse_risk_config
from risk.limits import check_limits

NOW = pd.Timestamp("2024-01-01", tz="UTC")
BASE = "portfolio: {max_drawdown: 0.2, max_daily_loss: 0.05, max_gross_exposure: 1.0%s}\n"


def cfg(extra_portfolio: str = "", rest: str = ""):
    return parse_risk_config(BASE % extra_portfolio + rest)


def orders(*rows):
    return pd.DataFrame([{"symbol": r[0], "side": r[1], "quantity": r[2], "reference_price": r[3], "price": np.nan}
                         for r in rows])


def run(config, frame, *, equity=10_000.0, peak=None, day_start=None, positions=None, marks=None, open_orders=0):
    out = check_limits(frame, config, equity=equity, peak_equity=peak or equity, day_start_equity=day_start or equity,
                       positions=positions or {}, marks=marks or {}, open_orders=open_orders, now=NOW)
    return [None if b is None else str(b) for b in out]


def test_order_notional_exactly_at_the_limit_passes_one_unit_over_fails():
    c = cfg(", max_order_notional: 5000")
    # 50 x 100 = 5000 (= limit) passes; 50.01 x 100 = 5001 fails
    assert run(c, orders(("BTC/USDT", "buy", 50, 100.0))) == [None]
    assert run(c, orders(("BTC/USDT", "buy", 50.01, 100.0))) == ["max_order_notional: 5001 > limit 5000 (buy 50.01 BTC/USDT)"]


def test_max_open_orders_counts_the_batch():
    c = cfg(", max_open_orders: 3")
    got = run(c, orders(("A/USDT", "buy", 1, 1.0), ("A/USDT", "buy", 1, 1.0), ("A/USDT", "buy", 1, 1.0)), open_orders=1)
    assert got == [None, None, "max_open_orders: 4 > limit 3"]


def test_max_position_per_asset_projected_over_the_batch():
    c = cfg(rest="assets: {BTC/USDT: {max_position: 1.5}}")
    # held 1.0; +0.5 reaches 1.5 exactly (passes); the next +0.1 would make 1.6
    got = run(c, orders(("BTC/USDT", "buy", 0.5, 100.0), ("BTC/USDT", "buy", 0.1, 100.0), ("BTC/USDT", "sell", 1.0, 100.0)),
              positions={"BTC/USDT": 1.0}, marks={"BTC/USDT": 100.0})
    assert got == [None, "max_position BTC/USDT: 1.6 > limit 1.5", None]  # reducing is always allowed


def test_gross_exposure():
    c = cfg()
    # equity 10,000; ETH held 20 @ 250 = 5,000; buying 50 BTC-units @ 100 = 5,000 -> 1.0 exactly: passes
    assert run(c, orders(("BTC/USDT", "buy", 50, 100.0)), positions={"ETH/USDT": 20}, marks={"ETH/USDT": 250.0}) == [None]
    got = run(c, orders(("BTC/USDT", "buy", 51, 100.0)), positions={"ETH/USDT": 20}, marks={"ETH/USDT": 250.0})
    assert got == ["max_gross_exposure: 1.01 > limit 1"]


def test_sector_exposure():
    c = cfg(rest="assets: {BTC/USDT: {sector: majors}, ETH/USDT: {sector: majors}, DOGE/USDT: {sector: memes}}\n"
                 "sectors: {majors: {max_exposure: 0.6}, memes: {max_exposure: 0.1}}")
    marks = {"ETH/USDT": 250.0}
    # majors: ETH 20 x 250 = 5,000 (0.5) + BTC 10 x 100 = 1,000 -> 0.6 exactly: passes; 11 -> 0.61 fails
    assert run(c, orders(("BTC/USDT", "buy", 10, 100.0)), positions={"ETH/USDT": 20}, marks=marks) == [None]
    assert run(c, orders(("BTC/USDT", "buy", 11, 100.0)), positions={"ETH/USDT": 20}, marks=marks) == [
        "max_sector_exposure: 0.61 > limit 0.6 (sector majors)"]


def test_daily_loss_halts_new_risk_but_not_reductions():
    c = cfg()
    # day opened at 10,000; equity 9,499 -> loss 0.0501 > 0.05
    got = run(c, orders(("BTC/USDT", "buy", 1, 100.0), ("BTC/USDT", "sell", 1, 100.0)), equity=9_499.0,
              day_start=10_000.0, positions={"BTC/USDT": 2.0}, marks={"BTC/USDT": 100.0})
    assert got[0].startswith("max_daily_loss: 0.0501 > limit 0.05") and got[1] is None
    # exactly 5% lost: still allowed
    assert run(c, orders(("BTC/USDT", "buy", 1, 100.0)), equity=9_500.0, day_start=10_000.0) == [None]


def test_drawdown_halts_new_risk():
    c = cfg()
    got = run(c, orders(("BTC/USDT", "buy", 1, 100.0)), equity=7_999.0, peak=10_000.0)
    assert got == ["max_drawdown: 0.2001 > limit 0.2 (new risk halted)"]
    assert run(c, orders(("BTC/USDT", "buy", 1, 100.0)), equity=8_000.0, peak=10_000.0) == [None]


def test_breach_fields():
    c = cfg(", max_order_notional: 100")
    breach = check_limits(orders(("BTC/USDT", "buy", 2, 100.0)), c, equity=1e4, peak_equity=1e4, day_start_equity=1e4,
                          positions={}, marks={}, open_orders=0, now=NOW)[0]
    assert breach.as_dict(NOW) == {"time": str(NOW), "rule": "max_order_notional", "symbol": "BTC/USDT",
                                   "value": pytest.approx(200.0), "threshold": 100.0}
