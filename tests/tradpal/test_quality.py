"""Great Expectations quality gates: real data passes, each expectation fails on a crafted
frame and is named, Data Docs are built, and importing the module does not import GX.

GX is imported once per test session (on the first check, ~2-6 s); each check after that
costs ~0.1 s."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import SAMPLE
from tradpal.io import load_ohlcv
from tradpal.quality import (
    EXECUTIONS,
    MARKET_DATA,
    QualityGateError,
    QualityResult,
    check_executions,
    check_market_data,
)

REPO = Path(__file__).resolve().parents[2]
SAMPLE_BARS = SAMPLE / "BITTREX_ETH-BTC_5m.csv"

UNIQUE = "bar timestamps are unique"
INCREASING = "bar timestamps strictly increase"
HIGH_OPEN, HIGH_CLOSE, LOW_OPEN, LOW_CLOSE = "high >= open", "high >= close", "low <= open", "low <= close"
VOLUME = "volume >= 0"
QUANTITY, FEE, ORDER, PRICE = ("fill quantity > 0", "fill fee >= 0", "every fill's order_pk is a known order id",
                               "fill price within its bar's [low, high]")


@pytest.fixture(scope="session")
def sample_bars() -> pd.DataFrame:
    return load_ohlcv(SAMPLE_BARS)


@pytest.fixture(scope="session")
def replay_run(tmp_path_factory: pytest.TempPathFactory, sample_bars: pd.DataFrame):
    """A real paper replay of the demo strategy over the sample bars (plain step functions,
    no Prefect, no slippage): its ledger fills and orders, and the bars."""
    from tradpal.ledger import Ledger
    from tradpal.replay import ReplayParams, load_inputs, run_replay
    from tradpal.strategies import sma_crossover, write_signals_csv

    tmp = tmp_path_factory.mktemp("quality-replay")
    write_signals_csv(sma_crossover(sample_bars, symbol="ETH/BTC", quantity=1.0), tmp / "signals.csv")
    params = ReplayParams(str(SAMPLE_BARS), str(tmp / "signals.csv"), "ETH/BTC", cash=1.0, slippage_bps=0.0)
    ledger = Ledger(f"sqlite:///{tmp / 'ledger.db'}")
    try:
        run = asyncio.run(run_replay(params, load_inputs(params), ledger)).summary["run_id"]
        fills, orders = ledger.frame("fills", run_id=run), ledger.frame("orders", run_id=run)
    finally:
        ledger.close()
    assert len(fills) > 100
    return fills, orders, sample_bars


def failed_descriptions(result: QualityResult) -> set[str]:
    return {f["description"] for f in result.failed}


def only_failure(result: QualityResult, description: str) -> dict:
    assert not result.success
    assert failed_descriptions(result) == {description}, result.summary
    assert description in result.summary
    return result.failed[0]


# -- market data -----------------------------------------------------------------------

def test_real_sample_bars_pass(sample_bars):
    result = check_market_data(sample_bars)
    assert result.suite == MARKET_DATA
    assert result.success, result.summary
    assert result.evaluated == 8 and result.failed == []
    assert result.summary.startswith("market_data: passed: 8 of 8 expectations met on 5,760 rows")
    assert result.data_docs is None
    result.raise_for_failure()  # no error


def _up_bar(bars: pd.DataFrame) -> int:
    """Position of a bar with close > open (so a crafted high/low breaks one rule only)."""
    return int((bars["close"] > bars["open"]).to_numpy().nonzero()[0][3])


def _craft(bars: pd.DataFrame, how: str) -> tuple[pd.DataFrame, int]:
    df = bars.iloc[:300].copy()
    i = _up_bar(df)
    mid = (df.at[i, "open"] + df.at[i, "close"]) / 2
    if how == "duplicate":
        df.loc[i, "timestamp"] = df.at[i - 1, "timestamp"]
    elif how == "decreasing":
        df.loc[[i, i + 1], "timestamp"] = df.loc[[i + 1, i], "timestamp"].to_numpy()
        i += 1
    elif how == "high_below_close":
        df.loc[i, "high"] = mid
    elif how == "low_above_open":
        df.loc[i, "low"] = mid
    elif how == "negative_volume":
        df.loc[i, "volume"] = -1.0
    return df, i


@pytest.mark.parametrize("how, expected, column", [
    ("duplicate", {UNIQUE, INCREASING}, "timestamp"),
    ("decreasing", {INCREASING}, "timestamp"),
    ("high_below_close", {HIGH_CLOSE}, "high"),
    ("low_above_open", {LOW_OPEN}, "low"),
    ("negative_volume", {VOLUME}, "volume"),
])
def test_each_market_expectation_fails_and_is_named(sample_bars, how, expected, column):
    bars, row = _craft(sample_bars, how)
    result = check_market_data(bars)
    assert not result.success
    assert failed_descriptions(result) == expected, result.summary
    for f in result.failed:
        assert f["unexpected_count"] >= 1
        assert row in [r["row"] for r in f["unexpected_rows"]]
        assert f["description"] in result.summary
    first = result.failed[0]
    assert column in first["columns"]
    assert first["unexpected_rows"][0][column] is not None
    json.dumps(result.failed)  # JSON-safe (for artifacts and logs)


def test_low_above_close_is_its_own_expectation(sample_bars):
    df = sample_bars.iloc[:300].copy()
    i = int((df["close"] < df["open"]).to_numpy().nonzero()[0][3])  # a down bar: close < open
    df.loc[i, "low"] = (df.at[i, "open"] + df.at[i, "close"]) / 2
    assert only_failure(check_market_data(df), LOW_CLOSE)["unexpected_rows"][0]["row"] == i
    df = sample_bars.iloc[:300].copy()
    df.loc[i, "high"] = (df.at[i, "open"] + df.at[i, "close"]) / 2
    assert only_failure(check_market_data(df), HIGH_OPEN)["unexpected_rows"][0]["row"] == i


def test_a_gap_of_20_bars_fails_with_multiple_10(sample_bars):
    bars = pd.concat([sample_bars.iloc[:100], sample_bars.iloc[120:300]], ignore_index=True)  # 20 bars missing
    result = check_market_data(bars, max_gap_multiple=10)
    f = only_failure(result, "no gap between consecutive bars longer than 10 x 5min")
    assert f["columns"] == ["gap_ratio"] and f["unexpected_count"] == 1
    row = f["unexpected_rows"][0]
    assert row["row"] == 100 and row["gap_ratio"] == pytest.approx(21.0)
    assert row["previous_timestamp"] == sample_bars["timestamp"].iloc[99].isoformat()
    assert check_market_data(bars, max_gap_multiple=25).success
    # an explicit timeframe instead of the median spacing
    assert not check_market_data(sample_bars.iloc[:50], timeframe=pd.Timedelta("10s")).success


def test_a_column_gx_cannot_evaluate_fails_closed(sample_bars):
    bars = sample_bars.iloc[:50].assign(volume=lambda d: d["volume"].astype(str))
    result = check_market_data(bars)
    f = only_failure(result, VOLUME)
    assert f["unexpected_count"] is None and "same type" in f["exception"]
    assert "error:" in str(QualityGateError(result))


def test_bad_arguments_raise(sample_bars):
    with pytest.raises(ValueError, match="missing column.*volume"):
        check_market_data(sample_bars.drop(columns="volume"))
    with pytest.raises(ValueError, match="timeframe must be > 0"):
        check_market_data(sample_bars, timeframe=pd.Timedelta(0))


# -- executions -----------------------------------------------------------------------

def test_real_replay_fills_pass(replay_run):
    fills, orders, bars = replay_run
    result = check_executions(fills, orders, bars=bars)
    assert result.suite == EXECUTIONS
    assert result.success, result.summary
    assert result.evaluated == 4
    without_bars = check_executions(fills, orders)
    assert without_bars.success and without_bars.evaluated == 3


def test_each_execution_expectation_fails_and_is_named(replay_run):
    fills, orders, bars = replay_run
    i = 7
    cases = {
        QUANTITY: ("quantity", 0.0),
        FEE: ("fee", -0.01),
        ORDER: ("order_pk", int(orders["id"].max()) + 1000),
        PRICE: ("price", float(bars.set_index("timestamp").at[fills.at[i, "timestamp"], "high"]) * 1.01),
    }
    for description, (column, value) in cases.items():
        bad = fills.copy()
        bad.loc[i, column] = value
        f = only_failure(check_executions(bad, orders, bars=bars), description)
        assert f["unexpected_count"] == 1
        row = f["unexpected_rows"][0]
        assert row["row"] == i and row["id"] == fills.at[i, "id"] and row["trade_id"] == fills.at[i, "trade_id"]
        assert row[column] == pytest.approx(value)


def test_fill_price_rules(replay_run):
    fills, orders, bars = replay_run
    bad = fills.copy()
    high = float(bars.set_index("timestamp").at[fills.at[3, "timestamp"], "high"])
    bad.loc[3, "price"] = high * (1 + 3e-4)  # 3 bps above the bar
    row = only_failure(check_executions(bad, orders, bars=bars), PRICE)["unexpected_rows"][0]
    assert row["bar_high"] == pytest.approx(high)
    assert check_executions(bad, orders, bars=bars, price_tolerance_bps=5).success
    bad = fills.copy()
    bad.loc[5, "timestamp"] += pd.Timedelta("1s")  # no bar at that time
    row = only_failure(check_executions(bad, orders, bars=bars), PRICE)["unexpected_rows"][0]
    assert row["row"] == 5 and row["bar_low"] is None


# -- reporting ------------------------------------------------------------------------

def test_gate_error_names_the_suite_and_first_failure(replay_run):
    fills, orders, _ = replay_run
    bad = fills.copy()
    bad.loc[2, "fee"] = -1.0
    bad.loc[4, "quantity"] = 0.0
    result = check_executions(bad, orders)
    with pytest.raises(QualityGateError) as info:
        result.raise_for_failure()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"quality gate 'executions' failed: {QUANTITY} ")
    assert "1 unexpected row" in message and "(+1 more failed)" in message
    assert info.value.result is result
    md = result.to_markdown()
    assert md.startswith("## Data quality: `executions` **FAILED**")
    assert f"| {QUANTITY} (`expect_column_values_to_be_between`) | quantity | 1 unexpected row |" in md


def test_data_docs_built_only_into_the_given_folder(sample_bars, tmp_path, monkeypatch, capfd):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    bars, _ = _craft(sample_bars, "negative_volume")
    result = check_market_data(bars, data_docs_dir=tmp_path / "docs")
    index = Path(result.data_docs)
    assert index == tmp_path / "docs" / "index.html" and index.is_file()
    pages = list((tmp_path / "docs").rglob("*.html"))
    assert any("validations" in p.parts for p in pages)
    assert f"Data Docs: `{index}`" in result.to_markdown()
    assert list(cwd.iterdir()) == []  # nothing written to the current directory
    out, err = capfd.readouterr()
    assert "Calculating Metrics" not in out + err  # no GX progress bars


def test_data_docs_on_failure_only_skip_a_passing_suite(sample_bars, tmp_path):
    passed = check_market_data(sample_bars, data_docs_dir=tmp_path / "ok", data_docs="on-failure")
    assert passed.success and passed.data_docs is None and not (tmp_path / "ok").exists()
    bars, _ = _craft(sample_bars, "negative_volume")
    failed = check_market_data(bars, data_docs_dir=tmp_path / "bad", data_docs="on-failure")
    assert not failed.success and Path(failed.data_docs) == tmp_path / "bad" / "index.html"
    assert Path(failed.data_docs).is_file()
    with pytest.raises(ValueError, match="data_docs must be one of"):
        check_market_data(sample_bars, data_docs_dir=tmp_path / "x", data_docs="sometimes")


def test_a_passing_suite_runs_once_asking_only_pass_or_fail(sample_bars, monkeypatch):
    import tradpal.quality as quality

    formats: list[str] = []
    run_suite = quality._run_suite

    def spy(name, frame, expectations, result_format, docs_dir):
        formats.append(result_format)
        return run_suite(name, frame, expectations, result_format, docs_dir)

    monkeypatch.setattr(quality, "_run_suite", spy)
    assert check_market_data(sample_bars).success
    assert formats == ["BOOLEAN_ONLY"]
    formats.clear()
    bars, _ = _craft(sample_bars, "negative_volume")
    failure = only_failure(check_market_data(bars), "volume >= 0")
    assert formats == ["BOOLEAN_ONLY", "SUMMARY"]  # the details come from the second run
    assert failure["unexpected_count"] == 1 and failure["unexpected_rows"]


def test_the_suites_do_not_hash_the_frame_and_leave_gx_as_it_was(sample_bars, monkeypatch):
    """GX fingerprints every frame under its HASH_THRESHOLD (a hash of every row); our
    validations skip it, and the threshold is GX's own again after them, failing or not."""
    from great_expectations.execution_engine import pandas_execution_engine as engine

    hashed: list[int] = []
    real_hash = engine.hash_pandas_dataframe
    monkeypatch.setattr(engine, "hash_pandas_dataframe", lambda df: hashed.append(len(df)) or real_hash(df))
    before = engine.HASH_THRESHOLD
    assert check_market_data(sample_bars).success
    bars, _ = _craft(sample_bars, "negative_volume")
    assert not check_market_data(bars).success
    assert hashed == []
    assert before == engine.HASH_THRESHOLD
    # outside our validations GX fingerprints as it always did
    import tradpal.quality as quality

    gx = quality._gx()
    ctx = quality._context(gx)
    batch = ctx.data_sources.add_pandas("own").add_dataframe_asset("own").add_batch_definition_whole_dataframe("w")
    batch.get_batch(batch_parameters={"dataframe": sample_bars})
    assert hashed == [len(sample_bars)]


def test_naive_timestamps_are_read_as_utc(sample_bars):
    naive = sample_bars.assign(timestamp=sample_bars["timestamp"].dt.tz_localize(None))
    assert check_market_data(naive).success
    gapped = pd.concat([naive.iloc[:100], naive.iloc[160:]])
    described = failed_descriptions(check_market_data(gapped))
    assert len(described) == 1 and described.pop().startswith("no gap between consecutive bars")


def test_import_does_not_import_great_expectations():
    code = "import tradpal.quality, sys; assert 'great_expectations' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)
