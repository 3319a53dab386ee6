"""The one-go frame helpers the steps build their outputs with (`tasks.step`), and the
fast constructions in the steps that stand in for pandas' general ones: each must give
exactly what the general way gives (values, dtypes, index), or fall back to it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks import contracts as c
from tasks.context import Book
from tasks.contracts import CONTRACTS
from tasks.intake import COLUMNS as SIGNAL_COLUMNS
from tasks.intake import _normalise
from tasks.monitoring import COLUMNS as REPORT_COLUMNS
from tasks.monitoring import _typed, _typed_frame
from tasks.positions import POSITION_COLUMNS, snapshot, snapshot_rows
from tasks.step import column_arrays, frame_of, records, strings, utc_array
from tests.tasks.conftest import build_context, raw_signals
from tests.tasks.test_contracts import frames  # noqa: F401 - the steps' own frames (fixture)

T = pd.Timestamp("2024-01-02T03:04:05.123456789Z")


def mixed(n: int = 3) -> pd.DataFrame:
    return pd.DataFrame({
        "f": np.arange(n, dtype="float64") / 3, "s": ["a", None, "c"][:n], "t": pd.DatetimeIndex([T] * n),
        "b": [True, False, True][:n], "g": np.full(n, np.nan), "u": pd.DatetimeIndex([T, pd.NaT, T][:n]),
        "i": np.arange(n, dtype="int64"),
    })


def test_frame_of_keeps_the_dtypes_given_and_shares_no_memory() -> None:
    f, t = np.array([1.0, 2.0]), utc_array([T.value, T.value + 1])
    out = frame_of({"f": f, "s": strings(["x", None]), "t": t, "b": np.array([True, False])})
    assert out.dtypes.tolist() == [np.dtype("float64"), np.dtype(object), pd.DatetimeTZDtype("ns", "UTC"),
                                   np.dtype(bool)]
    assert out.index.equals(pd.RangeIndex(2))
    assert out["s"].tolist() == ["x", None] and out["t"].tolist() == [T, T + pd.Timedelta(1)]
    assert not np.shares_memory(out["f"].to_numpy(), f)
    assert not np.shares_memory(out["t"].array.asi8, t.asi8)
    pd.testing.assert_frame_equal(out, pd.DataFrame({"f": f, "s": ["x", None], "t": t, "b": [True, False]}))


def test_frame_of_refuses_what_is_not_a_finished_column() -> None:
    with pytest.raises(ValueError):
        frame_of({"a": [1.0, 2.0]})
    with pytest.raises(ValueError):
        frame_of({"a": np.ones(2), "b": np.ones(3)})


@pytest.mark.parametrize("n", [0, 1, 3])
def test_column_arrays_are_the_columns(n: int) -> None:
    df = mixed(n)
    arrays = column_arrays(df)
    assert len(arrays) == len(df.columns)
    for name, array in zip(df.columns, arrays, strict=True):
        assert array.dtype == df[name].dtype
        pd.testing.assert_series_equal(pd.Series(array, name=name), df[name])


@pytest.mark.parametrize("n", [0, 1, 3])
def test_records_are_to_dict_records(n: int) -> None:
    df = mixed(n)
    want, got = df.to_dict("records"), records(df)
    assert len(got) == len(want)
    for w, g in zip(want, got, strict=True):
        assert list(w) == list(g)
        for k in w:
            assert type(w[k]) is type(g[k]) and (w[k] == g[k] or (pd.isna(w[k]) and pd.isna(g[k])))


def test_intake_builds_the_signal_frame_in_the_contracts_column_order() -> None:
    ctx = build_context()
    frame = _normalise(raw_signals({}, {"side": "sell"}), ctx)
    assert list(frame.columns) == SIGNAL_COLUMNS


def report(minute: int, **kw) -> dict:
    at = T + pd.Timedelta(minutes=minute)
    base = {"client_order_id": f"tp-{minute}", "broker_order_id": f"b-{minute}", "signal_id": f"s-{minute}",
            "symbol": "BTC/USDT", "side": "buy", "strategy": "x", "exec_type": "FILL", "status": "FILLED",
            "timestamp": at, "trade_id": f"t-{minute}", "last_qty": 1.0, "last_px": 100.0, "last_fee": 0.1,
            "fee_currency": "USDT", "is_maker": False, "model_price": 99.5, "order_qty": 1.0, "cum_qty": 1.0,
            "avg_px": 100.0, "cum_fee": 0.1, "reference_price": 99.0, "signal_time": at, "placed_at": at,
            "reason": None}
    return {**base, **kw}


CANCELED = dict(exec_type="CANCELED", status="CANCELED", trade_id=None, last_qty=0.0, last_px=None, last_fee=0.0,
                fee_currency=None, model_price=None, cum_qty=0, avg_px=None, cum_fee=0.0, reason="timeout")
REPORT_CASES = {
    "none": [],
    "one fill": [report(0)],
    "out of time order, ties kept in order": [report(3), report(1), report(2, client_order_id="a"), report(1, signal_id="z"),
                                              report(0, **CANCELED)],
    "a NaN for a missing trade id": [report(0, trade_id=float("nan"), last_qty=0.0)],
    "naive times and numpy numbers: the general way": [report(0, timestamp=pd.Timestamp("2024-01-01"),
                                                              last_px=np.float32(1.5))],
    "a numeric string: the general way": [report(0, last_fee="0.5")],
}


@pytest.mark.parametrize("case", list(REPORT_CASES))
def test_the_reports_frame_is_the_general_ones(case: str) -> None:
    reports = REPORT_CASES[case]
    want = _typed(pd.DataFrame(reports, columns=REPORT_COLUMNS))
    got = _typed_frame(reports)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert got["trade_id"].tolist() == want["trade_id"].tolist()  # None, not NaN


@pytest.mark.parametrize("positions,marks,as_of", [
    ({}, {}, T),
    ({"BTC/USDT": 0.5}, {}, T),
    ({"BTC/USDT": 0.5, "ETH/USDT": 0.0}, {"BTC/USDT": 2.0}, T),
    ({"BTC/USDT": 1.0}, {"BTC/USDT": 3.0}, pd.Timestamp("2024-01-01T00:00:00.5", tz="UTC").as_unit("us")),
    ({"BTC/USDT": 1}, {}, T),  # an int position: the general way
    ({"BTC/USDT": 1.0}, {}, pd.Timestamp("2024-01-01T00:00:00", tz="Europe/Berlin")),
])
def test_the_positions_snapshot_is_the_general_one(positions: dict, marks: dict, as_of: pd.Timestamp) -> None:
    book = Book(cash=1.0, quote_currency="USDT")
    book.positions.update(positions)
    book.last_price.update(marks)
    book.cost_basis.update({s: 0.25 for s in positions})
    # the fast construction against pandas' general one over the same rows
    general = pd.DataFrame(snapshot_rows(book, as_of), columns=POSITION_COLUMNS)
    pd.testing.assert_frame_equal(snapshot(book, as_of), general, check_exact=True)


def test_every_frame_level_check_has_its_fast_twin() -> None:
    for contract in CONTRACTS.values():
        for check in contract.to_schema().checks:
            assert check.name in c.FAST_FRAME_CHECKS, f"{contract.__name__}.{check.name} has no fast twin"


@pytest.mark.parametrize("contract,columns", [
    ("OrderFrame", {"order_type": "limit", "price": np.nan}),
    ("OrderFrame", {"order_type": "stop_limit", "price": 1.0, "stop_price": np.nan}),
    ("OrderFrame", {"order_type": "stop", "price": np.nan, "stop_price": 1.0}),
    ("CheckedFrame", {"order_type": "stop_limit", "price": 1.0, "stop_price": 1.0}),
    ("ExecutionFrame", {"last_qty": 1.0, "trade_id": None}),
    ("ExecutionFrame", {"last_qty": 1.0, "last_px": np.nan}),
    ("ExecutionFrame", {"last_qty": 0.0, "last_px": np.nan, "trade_id": None}),
    ("PositionFrame", {"cum_qty": 2.0, "order_qty": 1.0}),
    ("PositionFrame", {"cum_qty": 1.0 + 1e-12, "order_qty": 1.0}),
])
def test_the_fast_twins_agree_with_the_checks(frames: dict, contract: str, columns: dict) -> None:  # noqa: F811
    frame = frames[contract].copy().assign(**columns)
    for check in CONTRACTS[contract].to_schema().checks:
        needed, twin = c.FAST_FRAME_CHECKS[check.name]
        arrays = dict(zip(frame.columns, column_arrays(frame), strict=True))
        assert twin(*(arrays[n] for n in needed)) == bool(check._check_fn(frame, **check._check_kwargs).all()), \
            check.name
