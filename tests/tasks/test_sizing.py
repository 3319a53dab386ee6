"""Step 2, sizing: the signal's quantity, a fixed quantity or a fraction of equity."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tasks.context import PipelineConfig, SizingConfig
from tasks.contracts import SizedFrame, validate
from tasks.intake import intake_signals
from tasks.sizing import size_signals
from tests.tasks.conftest import build_context, raw_signals


def sized(raw: pd.DataFrame, sizing: SizingConfig, ctx=None):
    ctx = ctx or build_context(config=PipelineConfig(sizing=sizing))
    signals = intake_signals(raw, ctx).frame
    result = size_signals(signals, ctx)
    validate(result.frame, SizedFrame, step="sizing")
    return result


def test_signal_method_keeps_each_signals_quantity() -> None:
    result = sized(raw_signals({"quantity": 0.25}, {"quantity": 3.0}), SizingConfig("signal"))
    assert result.frame["quantity"].tolist() == [0.25, 3.0]
    assert result.frame["sizing_method"].tolist() == ["signal", "signal"]
    assert json.loads(result.frame.loc[0, "sizing_detail"]) == {"method": "signal"}
    assert result.rejected.empty


def test_signal_method_rejects_a_signal_without_quantity() -> None:
    result = sized(raw_signals({"quantity": np.nan}, {"quantity": 2.0}), SizingConfig("signal"))
    assert result.frame["signal_id"].tolist() == ["s2"]
    assert result.rejected[["signal_id", "reason"]].to_numpy().tolist() == [
        ["s1", "signal has no quantity and sizing method is 'signal'"]]


def test_fixed_method_gives_every_signal_the_same_quantity() -> None:
    raw = raw_signals({"quantity": 0.25}, {"quantity": np.nan}, {"side": "sell", "quantity": 9.0})
    result = sized(raw, SizingConfig("fixed", quantity=0.5))
    assert result.frame["quantity"].tolist() == [0.5, 0.5, 0.5]
    assert json.loads(result.frame.loc[0, "sizing_detail"]) == {"method": "fixed", "quantity": 0.5}


def test_fixed_fractional_sizes_a_fraction_of_equity_at_the_reference_price() -> None:
    ctx = build_context(cash=10_000.0, config=PipelineConfig(sizing=SizingConfig("fixed_fractional", fraction=0.1)))
    raw = raw_signals({"reference_price": 200.0}, {"reference_price": 50.0}, {"reference_price": 3.0})
    result = sized(raw, ctx.config.sizing, ctx)
    # 0.1 x 10,000 = 1,000 of quote per trade
    np.testing.assert_allclose(result.frame["quantity"], [5.0, 20.0, 1000.0 / 3.0], rtol=1e-12)
    assert json.loads(result.frame.loc[0, "sizing_detail"]) == {
        "method": "fixed_fractional", "fraction": 0.1, "equity": 10_000.0}


def test_fixed_fractional_counts_positions_at_their_last_price_in_equity() -> None:
    ctx = build_context(cash=800.0, config=PipelineConfig(sizing=SizingConfig("fixed_fractional", fraction=0.5)))
    ctx.book.positions["BTC/USDT"] = 2.0
    ctx.book.last_price["BTC/USDT"] = 100.0  # equity = 800 + 2 x 100 = 1,000
    result = sized(raw_signals({"reference_price": 25.0}), ctx.config.sizing, ctx)
    assert result.frame["quantity"].tolist() == pytest.approx([20.0])  # 0.5 x 1,000 / 25


def test_fixed_fractional_rejects_what_it_cannot_size() -> None:
    ctx = build_context(config=PipelineConfig(sizing=SizingConfig("fixed_fractional", fraction=0.1)))
    # no bars before T0, so intake finds no reference price for s1
    result = sized(raw_signals({}, {"reference_price": 100.0}), ctx.config.sizing, ctx)
    assert result.frame["signal_id"].tolist() == ["s2"]
    assert result.rejected["reason"].tolist() == ["no reference price to size against"]

    broke = build_context(cash=0.0, config=ctx.config)
    result = sized(raw_signals({"reference_price": 100.0}), ctx.config.sizing, broke)
    assert result.frame.empty
    assert result.rejected["reason"].tolist() == ["equity 0 leaves nothing to size"]


def test_an_empty_batch_stays_empty() -> None:
    result = sized(raw_signals({}).iloc[0:0], SizingConfig("fixed", quantity=1.0))
    assert result.frame.empty and result.rejected.empty


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "martingale"}, "sizing.method: expected one of signal, fixed, fixed_fractional, atr, kelly, got 'martingale'"),
        ({"method": "atr"}, "sizing.risk_fraction: must be in (0, 1] for method 'atr'"),
        ({"method": "fixed"}, "sizing.quantity: must be > 0 for method 'fixed'"),
        ({"method": "fixed", "quantity": 0.0}, "sizing.quantity: must be > 0 for method 'fixed'"),
        ({"method": "fixed", "quantity": -1.0}, "sizing.quantity: must be > 0 for method 'fixed'"),
        ({"method": "fixed_fractional"}, "sizing.fraction: must be in (0, 1]"),
        ({"method": "fixed_fractional", "fraction": 0.0}, "sizing.fraction: must be in (0, 1]"),
        ({"method": "fixed_fractional", "fraction": 1.5}, "sizing.fraction: must be in (0, 1]"),
    ],
)
def test_sizing_config_refuses_what_cannot_size(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        SizingConfig(**kwargs)
    assert str(info.value).startswith(message)


def test_sizing_config_accepts_the_edges() -> None:
    assert SizingConfig("fixed_fractional", fraction=1.0).fraction == 1.0
    assert SizingConfig("fixed", quantity=1e-8).quantity == 1e-8
    assert SizingConfig().method == "signal"
