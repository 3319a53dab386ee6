"""Step 1, intake: normalisation, row-by-row rejections, duplicates, re-deliveries and
reference prices from market data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.contracts import SignalFrame, validate
from tasks.intake import intake_signals
from tasks.pipeline import STEP_BY_NAME, run_step
from tests.tasks.conftest import SYM, T0, bars, build_context, ledger_context, raw_signals, run, t
from tradpal.ledger import Ledger


def intake(raw: pd.DataFrame, ctx=None):
    ctx = ctx or build_context()
    result = intake_signals(raw, ctx)
    validate(result.frame, SignalFrame, step="intake")
    return result


def reasons(result) -> dict[str, str]:
    return dict(zip(result.rejected["signal_id"], result.rejected["reason"], strict=True))


# ---------------------------------------------------------------- normalisation


def test_normalises_case_and_whitespace_of_side_and_symbol() -> None:
    raw = raw_signals({"side": " BUY "}, {"side": "Sell", "symbol": " eth/usdt "})
    out = intake(raw).frame
    assert out["side"].tolist() == ["buy", "sell"]
    assert out["symbol"].tolist() == ["BTC/USDT", "ETH/USDT"]


def test_defaults_strategy_order_type_and_received_at() -> None:
    ctx = build_context(start=t(7))
    ctx.default_strategy = "momo"
    raw = raw_signals({}, {"strategy": "carry", "order_type": "LIMIT", "limit_price": 90.0})
    raw.loc[0, "strategy"] = None
    out = intake(raw, ctx).frame
    assert out["strategy"].tolist() == ["momo", "carry"]
    assert out["order_type"].tolist() == ["market", "limit"]
    assert out["received_at"].tolist() == [t(7), t(7)]  # the clock's now


def test_without_order_type_and_strategy_columns_uses_the_defaults() -> None:
    out = intake(raw_signals({})).frame
    assert (out.loc[0, "order_type"], out.loc[0, "strategy"]) == ("market", "default")
    assert np.isnan(out.loc[0, "limit_price"]) and np.isnan(out.loc[0, "stop_price"])


def test_keeps_a_given_received_at_and_parses_timestamp_strings() -> None:
    raw = raw_signals({"timestamp": "2024-01-01T00:05:00Z", "received_at": "2024-01-01 00:05:01+00:00"},
                      {"timestamp": "2024-01-01 00:06"})
    out = intake(raw).frame
    assert out["timestamp"].tolist() == [t(5), t(6)]
    assert out.loc[0, "received_at"] == t(5) + pd.Timedelta(seconds=1)


def test_generates_signal_ids_unique_over_the_batches_of_a_run() -> None:
    ctx = build_context(run_id="abcdef0123456789")
    raw = raw_signals({}, {}).drop(columns="signal_id")
    first = intake(raw, ctx).frame["signal_id"].tolist()
    second = intake(raw, ctx).frame["signal_id"].tolist()
    assert first == ["abcdef01-1", "abcdef01-2"]
    assert second == ["abcdef01-3", "abcdef01-4"]


def test_generates_an_id_for_a_signal_whose_id_is_null_and_strips_the_others() -> None:
    ctx = build_context(run_id="abcdef0123456789")
    raw = raw_signals({"signal_id": None}, {"signal_id": "  x-1 "}, {"signal_id": np.nan})
    result = intake(raw, ctx)
    assert result.frame["signal_id"].tolist() == ["abcdef01-1", "x-1", "abcdef01-2"]
    assert result.rejected.empty


def test_a_signal_without_quantity_passes_for_sizing_to_decide() -> None:
    result = intake(raw_signals({"quantity": np.nan}, {}))
    assert result.rejected.empty
    assert np.isnan(result.frame.loc[0, "quantity"])
    out = intake(raw_signals({}).drop(columns="quantity")).frame
    assert np.isnan(out.loc[0, "quantity"])


# ---------------------------------------------------------------- bad rows


@pytest.mark.parametrize(
    ("bad", "column", "detail"),
    [
        ({"side": "hold"}, "side", "unknown side 'hold'"),
        ({"side": None}, "side", "unknown side"),
        ({"quantity": -1.0}, "quantity", "quantity must be a number > 0"),
        ({"quantity": 0.0}, "quantity", "quantity must be a number > 0"),
        ({"quantity": "lots"}, "quantity", "quantity must be a number > 0"),
        ({"symbol": "BTCUSDT"}, "symbol", "symbol must look like BASE/QUOTE, got 'BTCUSDT'"),
        ({"order_type": "iceberg"}, "order_type", "unknown order_type 'iceberg'"),
        ({"order_type": "limit"}, "limit_price", "limit order needs limit_price > 0"),
        ({"order_type": "stop_limit", "stop_price": 99.0}, "limit_price", "stop_limit order needs limit_price > 0"),
        ({"order_type": "stop", "stop_price": -2.0}, "stop_price", "stop order needs stop_price > 0"),
        ({"reference_price": -5.0}, "reference_price", "reference_price must be > 0"),
        ({"signal_id": ""}, "signal_id", "signal_id must be 1 to 128 characters"),
        ({"signal_id": "x" * 129}, "signal_id", "signal_id must be 1 to 128 characters"),
        ({"timestamp": "yesterday-ish"}, "timestamp", "cannot parse timestamp 'yesterday-ish'"),
    ],
)
def test_rejects_a_bad_row_naming_the_column_and_keeps_the_good_ones(bad: dict, column: str, detail: str) -> None:
    raw = raw_signals({}, {"signal_id": "bad", **bad}, {"side": "sell"})
    result = intake(raw)
    assert result.frame["signal_id"].tolist() == ["s1", "s3"]
    [[sid, coid, reason]] = result.rejected.to_numpy().tolist()
    assert sid == ("bad" if column != "signal_id" else bad["signal_id"])
    assert coid is None
    assert reason.startswith(f"{column}: ")
    assert detail in reason


def test_each_bad_row_gets_its_first_problem_only() -> None:
    raw = raw_signals({"side": "hold", "quantity": -1.0, "symbol": "nope"})
    assert intake(raw).rejected["reason"].tolist() == ["side: unknown side 'hold' (expected buy or sell)"]


def test_rejects_a_signal_id_repeated_in_the_batch_keeping_the_first() -> None:
    raw = raw_signals({"signal_id": "a", "quantity": 1.0}, {"signal_id": "a", "quantity": 2.0}, {"signal_id": "b"})
    result = intake(raw)
    assert result.frame["signal_id"].tolist() == ["a", "b"]
    assert result.frame["quantity"].tolist() == [1.0, 1.0]
    assert result.rejected["reason"].tolist() == ["duplicate signal_id in this batch"]


def test_an_id_used_twice_is_refused_twice_when_its_first_row_is_bad() -> None:
    raw = raw_signals({"signal_id": "a", "side": "hold"}, {"signal_id": "a"}, {"signal_id": "b"})
    result = intake(raw)
    assert result.frame["signal_id"].tolist() == ["b"]
    assert result.rejected["signal_id"].tolist() == ["a", "a"]
    assert result.rejected["reason"].str.split(":").str[0].tolist() == ["side", "duplicate signal_id in this batch"]


def test_rejects_a_signal_the_ledger_has_already_received(ledger: Ledger) -> None:
    ctx = ledger_context(ledger)
    first = run(run_step(STEP_BY_NAME["intake"], raw_signals({"signal_id": "old"}), ctx))
    assert first["signal_id"].tolist() == ["old"]

    result = intake_signals(raw_signals({"signal_id": "old"}, {"signal_id": "new"}), ctx)
    assert result.frame["signal_id"].tolist() == ["new"]
    assert reasons(result) == {
        "old": "signal already received (re-delivery ignored; see its first record in the ledger)"}


def test_an_empty_batch_gives_an_empty_signal_frame() -> None:
    result = intake(raw_signals({}).iloc[0:0])
    assert result.frame.empty and result.rejected.empty


# ---------------------------------------------------------------- reference prices


def test_reference_price_is_the_last_close_at_or_before_the_signal_time() -> None:
    market = {SYM: bars([(100, 101, 99, 101), (101, 103, 100, 102), (102, 104, 101, 103)]),
              "ETH/USDT": bars([(10, 11, 9, 10.5)], first=2)}
    ctx = build_context(market=market)
    raw = raw_signals(
        {"timestamp": T0},  # before the first bar
        {"timestamp": t(2)},  # exactly at a bar: that bar's close
        {"timestamp": t(2) + pd.Timedelta(seconds=59)},
        {"timestamp": t(9)},  # after the last bar: the last close
        {"timestamp": t(2), "reference_price": 99.5},  # given: kept
        {"timestamp": t(2), "symbol": "ETH/USDT"},
        {"timestamp": t(2), "symbol": "XRP/USDT"},  # no market data
    )
    refs = intake(raw, ctx).frame["reference_price"].tolist()
    np.testing.assert_array_equal(refs, [np.nan, 102.0, 102.0, 103.0, 99.5, 10.5, np.nan])
