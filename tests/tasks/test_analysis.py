"""Step 8, analysis: slippage (positive = a cost), notional, fees and latency."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.analysis import analyse_executions, slippage_bps
from tasks.context import PipelineConfig
from tasks.contracts import ExecutionReport, validate
from tests.tasks.conftest import SYM, bars, build_context, raw_signals, run_through, t


def test_slippage_sign_convention() -> None:
    side = np.array(["buy", "buy", "sell", "sell", "buy"])
    price = np.array([101.0, 99.0, 99.0, 101.0, 100.0])
    reference = np.array([100.0, 100.0, 100.0, 100.0, np.nan])
    out = slippage_bps(side, price, reference)
    # a buy above and a sell below the reference cost us: positive
    np.testing.assert_allclose(out[:4], [100.0, -100.0, 100.0, -100.0], rtol=1e-9)
    assert np.isnan(out[4])


def booked(**kw) -> pd.DataFrame:
    base = {
        "client_order_id": "c1", "signal_id": "s1", "symbol": SYM, "side": "buy", "strategy": "x",
        "exec_type": "FILL", "timestamp": t(2), "signal_time": t(1), "last_qty": 2.0, "last_px": 100.5,
        "last_fee": 0.2, "reference_price": 100.0, "realized_pnl": 0.0,
    }
    return pd.DataFrame([{**base, **kw}]).astype({"timestamp": "datetime64[ns, UTC]",
                                                   "signal_time": "datetime64[ns, UTC]"})


def analyse(frame: pd.DataFrame) -> pd.DataFrame:
    out = analyse_executions(frame, None).frame
    validate(out, ExecutionReport, step="analysis")
    return out


def test_a_fill_hand_computed() -> None:
    [r] = analyse(booked()).to_dict("records")
    assert r["notional"] == pytest.approx(201.0)
    assert r["slippage_bps"] == pytest.approx(50.0)
    assert r["latency_s"] == 60.0
    assert (r["quantity"], r["price"], r["fee"], r["reference_price"]) == (2.0, 100.5, 0.2, 100.0)


def test_a_sell_below_its_reference_is_a_cost() -> None:
    [r] = analyse(booked(side="sell", last_px=99.0, realized_pnl=-3.0)).to_dict("records")
    assert r["slippage_bps"] == pytest.approx(100.0)
    assert r["realized_pnl"] == -3.0


def test_a_report_without_a_fill_has_no_slippage_and_no_notional() -> None:
    [r] = analyse(booked(exec_type="CANCELED", last_qty=0.0, last_px=np.nan, last_fee=0.0)).to_dict("records")
    assert (r["notional"], r["quantity"], r["fee"]) == (0.0, 0.0, 0.0)
    assert np.isnan(r["slippage_bps"]) and np.isnan(r["price"])


def test_latency_is_never_negative() -> None:
    [r] = analyse(booked(timestamp=t(0))).to_dict("records")
    assert r["latency_s"] == 0.0


def test_a_fill_without_reference_price_has_no_slippage() -> None:
    [r] = analyse(booked(reference_price=np.nan)).to_dict("records")
    assert np.isnan(r["slippage_bps"])
    assert r["notional"] == pytest.approx(201.0)


def test_through_the_pipeline_with_slippage_at_the_broker() -> None:
    rows = [(100, 100, 100, 100), (100, 100, 100, 100), (100, 100, 100, 100)]
    ctx = build_context(market={SYM: bars(rows)}, config=PipelineConfig(order_timeout_s=None), slippage_bps=20)
    ctx.monitor_until = t(3)
    raw = raw_signals({"timestamp": t(1)}, {"timestamp": t(1), "side": "sell", "quantity": 0.5})
    report = run_through(raw, ctx, "analysis")
    assert report["price"].tolist() == pytest.approx([100.2, 99.8])
    assert report["slippage_bps"].tolist() == pytest.approx([20.0, 20.0])
    assert report["latency_s"].tolist() == [60.0, 60.0]
    assert report["notional"].tolist() == pytest.approx([100.2, 49.9])
