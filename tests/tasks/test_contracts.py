"""The Pandera contracts: each accepts what its step produces and rejects, naming the
step, the column and the rows, what breaks it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks import contracts as c
from tasks.contracts import CONTRACTS, ContractViolation, validate
from tasks.pipeline import STEPS, run_step
from tests.tasks.conftest import SYM, bars, build_context, raw_signals, run, t


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    """Each contract's frame, as its step produced it: two buys (market at T0, limit 98
    at t(1)) that both fill; fees 0.1% so every money column is non-trivial."""
    ctx = build_context(market={SYM: bars([(100, 101, 99, 100), (102, 103, 97, 102), (104, 105, 103, 104)])},
                        maker_fee=0.001, taker_fee=0.001)
    ctx.monitor_until = t(3)
    frame = raw_signals({}, {"order_type": "limit", "limit_price": 98.0, "timestamp": t(1)})
    out = {}
    for step in STEPS:
        frame = run(run_step(step, frame, ctx))
        out[step.output.__name__] = frame
    return out


def broken(frames: dict[str, pd.DataFrame], contract: str, **columns) -> pd.DataFrame:
    return frames[contract].copy().assign(**columns)


def violation(frame: pd.DataFrame, contract: str, step: str = "the_step") -> ContractViolation:
    with pytest.raises(ContractViolation) as info:
        validate(frame, CONTRACTS[contract], step=step)
    return info.value


ALL = list(CONTRACTS)


def test_there_is_one_contract_per_step_output() -> None:
    assert [s.output.__name__ for s in STEPS] == ALL


@pytest.mark.parametrize("contract", ALL)
def test_accepts_the_frame_its_step_produced(frames: dict[str, pd.DataFrame], contract: str) -> None:
    frame = frames[contract]
    assert len(frame) == 2
    pd.testing.assert_frame_equal(validate(frame, CONTRACTS[contract], step="x"), frame)


@pytest.mark.parametrize("contract", ALL)
def test_rejects_an_unknown_column(frames: dict[str, pd.DataFrame], contract: str) -> None:
    err = violation(broken(frames, contract, surprise=1.0), contract, step="intake")
    assert "step 'intake'" in str(err)
    assert contract in str(err)
    assert "'surprise' is not in the contract (strict)" in str(err)


@pytest.mark.parametrize("contract", ALL)
def test_rejects_a_missing_column(frames: dict[str, pd.DataFrame], contract: str) -> None:
    frame = frames[contract].drop(columns="symbol")
    err = violation(frame, contract, step="sizing")
    assert "step 'sizing'" in str(err)
    assert "'symbol' not in dataframe" in str(err)


@pytest.mark.parametrize(
    ("contract", "column", "value"),
    [
        ("SignalFrame", "quantity", np.array([1, 2], dtype="int64")),
        ("OrderFrame", "price", ["98", "99"]),
        ("ExecutionFrame", "is_maker", [0.0, 1.0]),
    ],
    ids=["int-for-float", "str-for-float", "float-for-bool"],
)
def test_rejects_a_wrong_dtype(frames: dict[str, pd.DataFrame], contract: str, column: str, value) -> None:
    err = violation(broken(frames, contract, **{column: value}), contract)
    assert err.column == column
    assert f"column '{column}' failed" in str(err)


def test_rejects_a_naive_timestamp(frames: dict[str, pd.DataFrame]) -> None:
    frame = frames["SignalFrame"].copy()
    frame["timestamp"] = frame["timestamp"].dt.tz_localize(None)
    err = violation(frame, "SignalFrame")
    assert err.column == "timestamp"
    assert "datetime64[ns, UTC]" in str(err)


def test_rejects_a_non_string_in_a_str_column_naming_the_row(frames: dict[str, pd.DataFrame]) -> None:
    err = violation(broken(frames, "SizedFrame", strategy=["ok", 7]), "SizedFrame", step="sizing")
    assert (err.step, err.column, err.rows) == ("sizing", "strategy", [1])
    assert "dtype str" in str(err)
    assert "(rows: 1)" in str(err)


@pytest.mark.parametrize(
    ("contract", "column", "values", "rows"),
    [
        ("SignalFrame", "side", ["buy", "hold"], [1]),
        ("SignalFrame", "quantity", [-1.0, 1.0], [0]),
        ("SignalFrame", "symbol", ["BTC/USDT", "btcusdt"], [1]),
        ("SizedFrame", "quantity", [1.0, 0.0], [1]),
        ("SizedFrame", "quantity", [np.nan, 1.0], [0]),
        ("OrderFrame", "client_order_id", ["a" * 37, "b" * 36], [0]),
        ("OrderFrame", "time_in_force", ["GTC", "DAY"], [1]),
        ("PlacedFrame", "status", ["NEW", "ACCEPTED"], [1]),
        ("ExecutionFrame", "exec_type", ["FILL", "NEW"], [1]),
        ("ExecutionFrame", "last_fee", [0.0, -0.5], [1]),
        ("PositionFrame", "cash_after", [-1.0, 0.0], [0]),
        ("ExecutionReport", "latency_s", [1.0, -1.0], [1]),
    ],
)
def test_rejects_a_value_breaking_a_field_check(frames: dict[str, pd.DataFrame], contract: str, column: str,
                                                values: list, rows: list[int]) -> None:
    err = violation(broken(frames, contract, **{column: values}), contract, step="pre_checks")
    assert (err.step, err.contract, err.column, err.rows) == ("pre_checks", contract, column, rows)
    assert f"column '{column}'" in str(err)
    assert f"(rows: {', '.join(map(str, rows))})" in str(err)


def test_rejects_a_repeated_signal_id(frames: dict[str, pd.DataFrame]) -> None:
    err = violation(broken(frames, "SignalFrame", signal_id=["s1", "s1"]), "SignalFrame")
    assert (err.column, err.rows) == ("signal_id", [0, 1])
    assert "uniqueness" in str(err)


def test_rejects_a_limit_order_without_price(frames: dict[str, pd.DataFrame]) -> None:
    frame = broken(frames, "OrderFrame", price=np.nan)  # row 0 is a market order: fine
    err = violation(frame, "OrderFrame", step="order_creation")
    assert (err.column, err.rows) == (None, [1])
    assert str(err) == ("step 'order_creation' broke contract OrderFrame: frame failed "
                        "limit and stop_limit orders need a price (rows: 1)")


def test_rejects_a_stop_order_without_stop_price(frames: dict[str, pd.DataFrame]) -> None:
    frame = broken(frames, "CheckedFrame", order_type=["market", "stop_limit"])
    err = violation(frame, "CheckedFrame")
    assert err.rows == [1]
    assert "stop and stop_limit orders need a stop_price" in str(err)


def test_rejects_cum_qty_above_order_qty(frames: dict[str, pd.DataFrame]) -> None:
    frame = broken(frames, "ExecutionFrame", cum_qty=[1.0, 1.5])
    err = violation(frame, "ExecutionFrame", step="monitoring")
    assert (err.step, err.column, err.rows) == ("monitoring", None, [1])
    assert "cum_qty exceeds order_qty" in str(err)


def test_cum_qty_equal_to_order_qty_up_to_float_noise_passes(frames: dict[str, pd.DataFrame]) -> None:
    frame = broken(frames, "ExecutionFrame", cum_qty=[1.0 + 1e-12, 1.0])
    validate(frame, c.ExecutionFrame, step="monitoring")


@pytest.mark.parametrize("column", ["last_px", "trade_id"])
def test_rejects_a_fill_without_price_or_trade_id(frames: dict[str, pd.DataFrame], column: str) -> None:
    frame = frames["PositionFrame"].copy()
    frame[column] = frame[column].astype(object)
    frame.loc[0, column] = None
    if column == "last_px":
        frame[column] = frame[column].astype("float64")
    err = violation(frame, "PositionFrame", step="positions")
    assert (err.column, err.rows) == (None, [0])
    assert "a fill needs last_px and a trade_id" in str(err)


def test_a_report_without_a_fill_needs_no_price(frames: dict[str, pd.DataFrame]) -> None:
    frame = broken(frames, "ExecutionFrame", exec_type="CANCELED", status="CANCELED", last_qty=0.0,
                   last_px=np.nan, trade_id=None, cum_qty=0.0, avg_px=np.nan)
    validate(frame, c.ExecutionFrame, step="monitoring")


def test_the_message_shows_at_most_five_rows() -> None:
    err = ContractViolation("s", "C", "side", "isin", list(range(8)))
    assert str(err) == "step 's' broke contract C: column 'side' failed isin (rows: 0, 1, 2, 3, 4 ...)"
    assert err.rows == list(range(8))


def test_an_empty_frame_with_the_right_dtypes_passes(frames: dict[str, pd.DataFrame]) -> None:
    for name, frame in frames.items():
        validate(frame.iloc[0:0], CONTRACTS[name], step="x")
