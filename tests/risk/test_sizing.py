"""risk.sizing: quantities per signal (NaN where unsizable) and a reason for each NaN."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from risk.sizing import size_fixed, size_fixed_fractional, size_from_signal, sizing_detail


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
