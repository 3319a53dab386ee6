"""Step 3, order creation: deterministic client order ids, lot and tick rounding."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from tasks.context import PipelineConfig, SymbolRules
from tasks.contracts import OrderFrame, validate
from tasks.orders import client_order_id, create_orders
from tasks.pipeline import run_step
from tests.tasks.conftest import SYM, build_context, raw_signals, run, run_through, step, t


def orders(raw: pd.DataFrame, ctx=None):
    ctx = ctx or build_context()
    sized = run_through(raw, ctx, "sizing")
    result = create_orders(sized, ctx)
    validate(result.frame, OrderFrame, step="order_creation")
    return result


# ---------------------------------------------------------------- client order ids


def test_client_order_id_is_deterministic_short_and_prefixed() -> None:
    a = client_order_id("sig-1")
    assert a == client_order_id("sig-1")
    assert re.fullmatch(r"tp-[0-9a-f]{24}-0", a)
    assert len(a) <= 36


def test_client_order_ids_differ_by_signal_leg_and_prefix() -> None:
    ids = {client_order_id("sig-1"), client_order_id("sig-2"), client_order_id("sig-1", leg=1),
           client_order_id("sig-1", prefix="xy")}
    assert len(ids) == 4
    assert client_order_id("sig-1", leg=1).endswith("-1")
    assert client_order_id("sig-1", prefix="xy").startswith("xy-")


def test_client_order_id_of_a_long_signal_id_still_fits() -> None:
    coid = client_order_id("s" * 128, leg=3, prefix="tradpal")
    assert len(coid) <= 36
    assert re.fullmatch(r"[A-Za-z0-9-]+", coid)


def test_the_same_signal_gets_the_same_order_id_in_another_run() -> None:
    raw = raw_signals({"signal_id": "abc"})
    first = orders(raw).frame["client_order_id"].tolist()
    again = orders(raw, build_context(run_id="another")).frame["client_order_id"].tolist()
    assert first == again == [client_order_id("abc")]


def test_the_configured_prefix_is_used() -> None:
    ctx = build_context(config=PipelineConfig(client_id_prefix="px"))
    assert orders(raw_signals({}), ctx).frame.loc[0, "client_order_id"] == client_order_id("s1", prefix="px")


# ---------------------------------------------------------------- the order frame


def test_order_fields_come_from_the_sized_signal() -> None:
    ctx = build_context(start=t(3), config=PipelineConfig(time_in_force="IOC"))
    raw = raw_signals({"timestamp": t(1), "order_type": "limit", "limit_price": 99.0, "reference_price": 100.0},
                      {"timestamp": t(5), "side": "sell", "order_type": "stop", "stop_price": 98.0,
                       "strategy": "x"})
    out = orders(raw, ctx).frame
    assert out["order_type"].tolist() == ["limit", "stop"]
    assert out["side"].tolist() == ["buy", "sell"]
    np.testing.assert_array_equal(out["price"], [99.0, np.nan])
    np.testing.assert_array_equal(out["stop_price"], [np.nan, 98.0])
    assert out["time_in_force"].tolist() == ["IOC", "IOC"]
    assert out["strategy"].tolist() == ["default", "x"]
    assert out["signal_time"].tolist() == [t(1), t(5)]
    assert out["created_at"].tolist() == [t(3), t(5)]  # not before now, not before the signal


def test_quantity_is_floored_to_the_lot_and_prices_rounded_to_the_tick() -> None:
    rules = {SYM: SymbolRules(lot_size=0.001, tick_size=0.05)}
    ctx = build_context(config=PipelineConfig(rules=rules))
    raw = raw_signals(
        {"quantity": 0.123456, "order_type": "limit", "limit_price": 100.037},
        {"quantity": 2.0, "order_type": "stop_limit", "limit_price": 100.024, "stop_price": 99.976},
        {"quantity": 0.3, "symbol": "ETH/USDT", "order_type": "limit", "limit_price": 10.123},  # no rules
    )
    out = orders(raw, ctx).frame
    assert out["quantity"].tolist() == pytest.approx([0.123, 2.0, 0.3], abs=1e-15)
    assert out["price"].tolist() == pytest.approx([100.05, 100.0, 10.123], abs=1e-12)
    assert out.loc[1, "stop_price"] == pytest.approx(100.0, abs=1e-12)


def test_a_quantity_already_on_the_lot_is_not_floored_below_it() -> None:
    ctx = build_context(config=PipelineConfig(rules={SYM: SymbolRules(lot_size=0.1)}))
    out = orders(raw_signals({"quantity": 0.3}, {"quantity": 0.7}), ctx).frame  # 0.3/0.1 = 2.9999999999999996
    assert out["quantity"].tolist() == pytest.approx([0.3, 0.7], abs=1e-15)


def test_a_quantity_that_rounds_to_zero_is_rejected() -> None:
    ctx = build_context(config=PipelineConfig(rules={SYM: SymbolRules(lot_size=0.01)}))
    result = orders(raw_signals({"quantity": 0.004}, {"quantity": 0.01}), ctx)
    assert result.frame["signal_id"].tolist() == ["s2"]
    assert result.rejected.to_numpy().tolist() == [
        ["s1", client_order_id("s1"), "quantity 0.004 rounds to zero at the lot size"]]


def test_an_empty_batch_gives_an_empty_order_frame() -> None:
    ctx = build_context()
    sized = run_through(raw_signals({"side": "hold"}), ctx, "sizing")
    assert sized.empty
    out = run(run_step(step("order_creation"), sized, ctx))
    assert out.empty and list(out.columns) == list(OrderFrame.to_schema().columns)
