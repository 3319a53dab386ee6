"""`check_signal_rows`: the plain-Python path for a few typed rows gives the same problems,
in the same order, with the same messages, as the vectorised path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tradpal import io

TEXT = st.sampled_from(["buy", " Sell ", "hold", "", "BTC/USDT", "btc", "eth/btc:USDT", "limit", "stop_limit",
                        "STOP", "market", "x" * 129, "s-1"])
NUM = st.sampled_from([1.0, 0.5, 0.0, -1.0, np.nan, np.inf, 1e-12])


@st.composite
def frames(draw):
    n = draw(st.integers(1, 6))
    cols = {"side": draw(st.lists(TEXT, min_size=n, max_size=n)),
            "quantity": draw(st.lists(NUM, min_size=n, max_size=n)),
            "symbol": draw(st.lists(TEXT, min_size=n, max_size=n))}
    for name in ("order_type", "signal_id"):
        if draw(st.booleans()):
            cols[name] = draw(st.lists(TEXT, min_size=n, max_size=n))
    for name in ("limit_price", "stop_price", "reference_price"):
        if draw(st.booleans()):
            cols[name] = draw(st.lists(NUM, min_size=n, max_size=n))
    return pd.DataFrame(cols)


@settings(max_examples=300, deadline=None)
@given(df=frames())
def test_small_path_agrees_with_the_vectorised_one(df):
    quick = io._check_small(df)
    assert quick is not None  # typed rows: the quick path applies
    original = io.SMALL
    try:
        io.SMALL = 0
        assert quick == io.check_signal_rows(df)
    finally:
        io.SMALL = original


def test_untyped_values_take_the_vectorised_path():
    df = pd.DataFrame({"side": ["buy"], "quantity": ["1.5"], "symbol": ["BTC/USDT"]})
    assert io._check_small(df) is None
    assert io.check_signal_rows(df) == []


@pytest.mark.parametrize("value", [-1.0, np.float64(-1.0)])
def test_messages_show_plain_numbers(value):
    df = pd.DataFrame({"side": ["buy"], "quantity": pd.Series([value], dtype="float64"), "symbol": ["BTC/USDT"]})
    io.SMALL, original = 0, io.SMALL
    try:
        assert io.check_signal_rows(df) == [(0, "quantity", "quantity must be a number > 0, got -1.0")]
    finally:
        io.SMALL = original


@settings(max_examples=300, deadline=None)
@given(df=frames())
def test_one_record_agrees_with_its_one_row_frame(df):
    row = df.iloc[:1].to_dict("records")[0]
    row = {k: (float(v) if isinstance(v, np.floating) else v) for k, v in row.items()}  # as JSON hands them over
    original = io.SMALL
    try:
        io.SMALL = 0
        assert io.check_signal_record(row) == io.check_signal_rows(df.iloc[:1])
    finally:
        io.SMALL = original


def test_a_record_with_untyped_values_is_left_to_the_frame():
    assert io.check_signal_record({"side": "buy", "quantity": "1.5", "symbol": "BTC/USDT"}) is None
