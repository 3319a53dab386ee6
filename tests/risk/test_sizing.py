"""risk.sizing: quantities per signal (NaN where unsizable) and a reason for each NaN."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from risk.sizing import (
    TradeHistory,
    average_true_range,
    kelly_fraction,
    size_atr,
    size_fixed,
    size_fixed_fractional,
    size_from_signal,
    size_kelly,
    sizing_detail,
)


def frame(**columns) -> pd.DataFrame:
    return pd.DataFrame(columns)


def test_size_from_signal() -> None:
    qty, why = size_from_signal(frame(quantity=[1.5, np.nan, 0.0]))
    np.testing.assert_array_equal(qty, [1.5, np.nan, 0.0])
    assert why == [None, "signal has no quantity and sizing method is 'signal'",
                   "signal has no quantity and sizing method is 'signal'"]


def test_size_fixed() -> None:
    qty, why = size_fixed(frame(quantity=[1.0, np.nan]), 0.3)
    assert qty.tolist() == [0.3, 0.3]
    assert why == [None, None]


def test_size_fixed_fractional_hand_computed() -> None:
    qty, why = size_fixed_fractional(frame(reference_price=[250.0, 0.5, np.nan, 0.0]), 0.02, 5_000.0)
    # 0.02 x 5,000 = 100 of quote: 100/250, 100/0.5
    np.testing.assert_allclose(qty[:2], [0.4, 200.0], rtol=1e-12)
    assert np.isnan(qty[2:]).all()
    assert why == [None, None, "no reference price to size against", "no reference price to size against"]


def test_size_fixed_fractional_with_no_equity() -> None:
    _, why = size_fixed_fractional(frame(reference_price=[100.0]), 0.5, -10.0)
    assert why == ["equity -10 leaves nothing to size"]


def test_sizing_detail_is_sorted_json_without_none() -> None:
    text = sizing_detail("fixed_fractional", fraction=0.1, equity=None, quantity=2.0)
    assert text == '{"fraction": 0.1, "method": "fixed_fractional", "quantity": 2.0}'
    assert json.loads(sizing_detail("signal")) == {"method": "signal"}


# -- ATR and Kelly ---------------------------------------------------------------------




def test_average_true_range_hand_computed():
    high = np.array([10.0, 12.0, 11.0, 13.0])
    low = np.array([9.0, 10.0, 9.5, 11.0])
    close = np.array([9.5, 11.0, 10.0, 12.5])
    # TR: 1 (h-l); max(2, |12-9.5|=2.5, |10-9.5|=.5)=2.5; max(1.5, 0, 1.5)=1.5; max(2, 3, 1)=3
    atr = average_true_range(high, low, close, 2)
    assert np.isnan(atr[0]) and atr[1:].tolist() == [1.75, 2.0, 2.25]


def test_size_atr():
    sig = pd.DataFrame({"reference_price": [100.0, 100.0]})
    qty, reasons = size_atr(sig, 10_000.0, 0.01, 2.0, np.array([2.5, np.nan]))
    assert qty[0] == 20.0  # 10,000 x 1% / (2 x 2.5)
    assert reasons == [None, "no ATR yet (too few bars before the signal)"]


def test_kelly_fraction_and_history():
    assert kelly_fraction(0.6, 1.5) == pytest.approx(0.6 - 0.4 / 1.5)
    h = TradeHistory.from_pnl(np.array([2.0, 2.0, 2.0, -1.0, -3.0]))  # W 0.6, R 2 / 2 = 1
    assert (h.trades, h.win_rate, h.payoff) == (5, 0.6, 1.0)


def test_size_kelly_capped_and_fallback():
    sig = pd.DataFrame({"reference_price": [50.0]})
    h = TradeHistory(40, 0.6, 2.0)  # f* = 0.6 - 0.4/2 = 0.4; half Kelly 0.2; cap 0.1
    qty, reasons, inputs = size_kelly(sig, 10_000.0, h, multiplier=0.5, cap=0.1, min_trades=30, fallback_fraction=None)
    assert qty[0] == pytest.approx(0.1 * 10_000 / 50) and inputs["fraction_used"] == 0.1
    qty, reasons, _ = size_kelly(sig, 10_000.0, TradeHistory(5, 1.0, float("inf")), multiplier=0.5, cap=0.1,
                                 min_trades=30, fallback_fraction=0.01)
    assert qty[0] == pytest.approx(2.0)  # fallback: 1% of 10,000 at 50
    qty, reasons, _ = size_kelly(sig, 10_000.0, TradeHistory(40, 0.3, 1.0), multiplier=0.5, cap=0.1,
                                 min_trades=30, fallback_fraction=0.01)
    assert np.isnan(qty[0]) and "no edge" in reasons[0]
