"""The replay with the advanced simulator's options (no Prefect unless told): venue fees,
fill models, latency, participation, trade-through limits, determinism, several symbols
on one account, and the CLI's one-line errors for every new flag."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import SAMPLE
from tradpal.cli import main
from tradpal.ledger import Ledger
from tradpal.replay import ReplayParams, load_inputs, params_record, run_replay, write_outputs
from tradpal.strategies import sma_crossover, write_signals_csv

ROOT = Path(__file__).resolve().parents[2]
approx = pytest.approx
FILLS_HEADER = "timestamp,signal_id,side,quantity,price,fee"


def write_bars(path: Path, start: str, rows, freq: str = "1min") -> Path:
    """(open, high, low, close[, volume]) rows, one per ``freq`` from ``start`` (UTC)."""
    ts = pd.date_range(start, periods=len(rows), freq=freq, tz="UTC")
    pd.DataFrame({"timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "open": [r[0] for r in rows],
                  "high": [r[1] for r in rows], "low": [r[2] for r in rows], "close": [r[3] for r in rows],
                  "volume": [r[4] if len(r) > 4 else 1000.0 for r in rows]}).to_csv(path, index=False)
    return path


def write_sigs(path: Path, rows: list[str]) -> Path:
    path.write_text("timestamp,symbol,side,quantity,signal_id,order_type,limit_price\n" + "\n".join(rows) + "\n")
    return path


def run(tmp_path: Path, params: ReplayParams, out: str = "out"):
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        result = asyncio.run(run_replay(params, load_inputs(params), ledger))
        write_outputs(tmp_path / out, result.reports, result.summary, result.equity)
    finally:
        ledger.close()
    return result


def fills_csv(tmp_path: Path, out: str = "out") -> list[list[str]]:
    return [line.split(",") for line in (tmp_path / out / "fills.csv").read_text().splitlines()]


BARS = [(100, 101, 99, 100.5, 50), (101, 102, 100, 101.5, 50), (102, 103, 101, 102.5, 50), (103, 104, 102, 103.5, 50)]


@pytest.fixture
def one(tmp_path: Path) -> tuple[Path, Path]:
    """Four one-minute BTC/USDT bars from 00:01 and a market buy at 00:01 then a sell at 00:02."""
    bars = write_bars(tmp_path / "btc.csv", "2024-01-01T00:01:00Z", BARS)
    sigs = write_sigs(tmp_path / "s.csv", ["2024-01-01T00:01:00Z,BTC/USDT,buy,2,b,market,",
                                           "2024-01-01T00:02:00Z,BTC/USDT,sell,2,s,market,"])
    return bars, sigs


def params(one, **kw) -> ReplayParams:
    return ReplayParams(str(one[0]), str(one[1]), "BTC/USDT", 1000.0, **kw)


# ---------------------------------------------------------------- defaults unchanged


def test_default_parameters_record_as_before():
    p = ReplayParams("a.csv", "s.csv", "BTC/USDT", 1.0, 0.001, 5.0, None, 50)
    assert params_record(p) == {"ohlcv": "a.csv", "signals": "s.csv", "symbol": "BTC/USDT", "cash": 1.0,
                                "fee_rate": 0.001, "slippage_bps": 5.0, "out": None, "chunk_signals": 50,
                                "risk_config": None}
    assert params_record(replace(p, fee_rate=None))["fee_rate"] == 0.001  # no venue: the default fee


def test_default_run_keeps_the_summary_keys_and_fills_header(tmp_path, one):
    result = run(tmp_path, params(one, fee_rate=0.001))
    assert fills_csv(tmp_path)[0] == FILLS_HEADER.split(",")
    assert not {"symbols", "final_positions", "fees"} & set(result.summary)
    assert result.summary["final_position"] == 0.0


# ---------------------------------------------------------------- venue fees


def test_venue_fees_and_an_explicit_fee_rate_wins(tmp_path, one):
    result = run(tmp_path, params(one, venue="kraken"))
    rows = fills_csv(tmp_path)[1:]
    assert [float(r[5]) for r in rows] == approx([0.004 * 2 * 101, 0.004 * 2 * 102])  # taker, 0.40 %
    assert result.summary["fees"] == {"venue": "kraken", "maker": 0.0025, "taker": 0.004}
    assert result.summary["params"]["venue"] == "kraken" and result.summary["params"]["fee_rate"] is None
    run(tmp_path, params(one, venue="kraken", fee_rate=0.0001), out="explicit")
    assert [float(r[5]) for r in fills_csv(tmp_path, "explicit")[1:]] == approx([0.0001 * 202, 0.0001 * 204])


def test_resting_limit_signal_pays_maker_and_trades_through_in_the_advanced_model(tmp_path):
    bars = write_bars(tmp_path / "b.csv", "2024-01-01T00:01:00Z",
                      [(100, 101, 99, 100, 50), (100, 101, 98, 99, 50), (99, 100, 97.5, 98, 50)])
    sigs = write_sigs(tmp_path / "s.csv", ["2024-01-01T00:01:00Z,BTC/USDT,buy,1,l,limit,98"])
    p = ReplayParams(str(bars), str(sigs), "BTC/USDT", 1000.0, venue="okx")
    run(tmp_path, p, out="basic")  # basic: bar 00:02 touches 98 -> maker at 98 (0.08 %)
    assert fills_csv(tmp_path, "basic")[1] == ["2024-01-01T00:02:00Z", "l", "buy", "1.0", "98.0", repr(0.0008 * 98)]
    run(tmp_path, replace(p, slippage_model="volatility"), out="advanced")  # through 98 only at 00:03
    assert fills_csv(tmp_path, "advanced")[1] == ["2024-01-01T00:03:00Z", "l", "buy", "1.0", "98.0",
                                                  repr(0.0008 * 98)]


# ---------------------------------------------------------------- fill models, latency, participation


def test_close_fill_model_fills_at_the_close_of_the_signal_bar(tmp_path, one):
    run(tmp_path, params(one, fee_rate=0.0, fill_model="close"))
    assert [r[:5] for r in fills_csv(tmp_path)[1:]] == [["2024-01-01T00:01:00Z", "b", "buy", "2.0", "100.5"],
                                                       ["2024-01-01T00:02:00Z", "s", "sell", "2.0", "101.5"]]


def test_vwap_bar_fill_model_fills_at_the_next_bars_typical_price(tmp_path, one):
    run(tmp_path, params(one, fee_rate=0.0, fill_model="vwap-bar"))
    rows = fills_csv(tmp_path)[1:]
    assert [r[0] for r in rows] == ["2024-01-01T00:02:00Z", "2024-01-01T00:03:00Z"]
    assert [float(r[4]) for r in rows] == approx([(102 + 100 + 101.5) / 3, (103 + 101 + 102.5) / 3])


def test_latency_moves_the_fill_to_a_later_bar(tmp_path, one):
    run(tmp_path, params(one, fee_rate=0.0, latency_ms=60_000))
    rows = fills_csv(tmp_path)[1:]
    assert [(r[0], r[4]) for r in rows] == [("2024-01-01T00:03:00Z", "102.0"), ("2024-01-01T00:04:00Z", "103.0")]


def test_participation_spreads_a_signal_over_bars_with_impact(tmp_path, one):
    # volume 50, cap 10 % -> 5 per bar: a buy of 12 fills 5 + 5 + 2 at 00:02, 00:03, 00:04
    sigs = write_sigs(tmp_path / "big.csv", ["2024-01-01T00:01:00Z,BTC/USDT,buy,12,b,market,"])
    result = run(tmp_path, ReplayParams(str(one[0]), str(sigs), "BTC/USDT", 10_000.0, 0.0,
                                        slippage_model="sqrt-impact", impact_k=0.5))
    rows = fills_csv(tmp_path)[1:]
    assert [(r[0], float(r[3])) for r in rows] == [("2024-01-01T00:02:00Z", 5.0), ("2024-01-01T00:03:00Z", 5.0),
                                                   ("2024-01-01T00:04:00Z", 2.0)]
    expected = [101 * (1 + 0.5 * 2 / 101 * 0.1 ** 0.5), 102 * (1 + 0.5 * 2 / 102 * 0.1 ** 0.5),
                103 * (1 + 0.5 * 2 / 103 * 0.04 ** 0.5)]
    assert [float(r[4]) for r in rows] == approx(expected, rel=1e-12)
    assert result.summary["final_position"] == approx(12.0) and result.summary["n_fills"] == 3


# ---------------------------------------------------------------- determinism


def test_same_inputs_and_seed_give_identical_outputs(tmp_path):
    bars_path = SAMPLE / "BITTREX_ETH-BTC_5m.csv"
    from tradpal.io import load_ohlcv

    sig = sma_crossover(load_ohlcv(bars_path).head(1500), symbol="ETH/BTC", quantity=1.0)
    write_signals_csv(sig, tmp_path / "sig.csv")
    p = ReplayParams(str(bars_path), str(tmp_path / "sig.csv"), "ETH/BTC", 1.0, slippage_model="sqrt-impact",
                     participation=0.05, latency_ms=30_000, venue="binance", seed=7, chunk_signals=7)
    outputs = []
    for _ in range(2):
        result = run(tmp_path, p)
        assert result.summary["n_fills"] > 10
        texts = {name: (tmp_path / "out" / name).read_bytes() for name in ("fills.csv", "equity.csv")}
        summary = json.loads((tmp_path / "out" / "summary.json").read_text())
        assert summary["params"]["seed"] == 7
        identity = (summary.pop("run_id"), summary.pop("flow_run_id"))
        outputs.append((texts, json.dumps(summary, sort_keys=True), identity))
    assert outputs[0][0] == outputs[1][0] and outputs[0][1] == outputs[1][1]
    assert outputs[0][2] != outputs[1][2]  # two runs in one ledger: two run ids


@pytest.mark.parametrize("model", [{}, {"slippage_model": "sqrt-impact", "participation": 0.05, "latency_ms": 30_000}],
                         ids=["basic", "advanced"])
def test_the_batch_size_changes_no_output(tmp_path, model):
    """Batches are a unit of work, not of the simulation: one signal per batch, seven, or the
    default give the same bytes in fills.csv and equity.csv (the equity's running sums start
    from each batch's opening book, in fill order, as the book adds them) and the same summary."""
    bars_path = SAMPLE / "BITTREX_ETH-BTC_5m.csv"
    from tradpal.io import load_ohlcv

    sig = sma_crossover(load_ohlcv(bars_path).head(3000), symbol="ETH/BTC", quantity=1.0)
    write_signals_csv(sig, tmp_path / "sig.csv")
    base = ReplayParams(str(bars_path), str(tmp_path / "sig.csv"), "ETH/BTC", 1.0, venue="kraken", **model)
    outputs = []
    for chunk in (1, 7, None):
        result = run(tmp_path, replace(base, chunk_signals=chunk), out=f"out{chunk}")
        assert result.summary["n_fills"] > 20
        texts = {name: (tmp_path / f"out{chunk}" / name).read_bytes() for name in ("fills.csv", "equity.csv")}
        summary = json.loads((tmp_path / f"out{chunk}" / "summary.json").read_text())
        for key in ("run_id", "flow_run_id"):
            summary.pop(key)
        assert summary["params"].pop("chunk_signals") == chunk
        equity = pd.read_csv(tmp_path / f"out{chunk}" / "equity.csv", float_precision="round_trip")
        assert equity["cash"].iloc[-1] == summary["final_cash"]  # the book's cash, to the last bit
        outputs.append((texts, summary))
    assert outputs[0] == outputs[1] == outputs[2]


# ---------------------------------------------------------------- several symbols


@pytest.fixture
def two(tmp_path: Path) -> ReplayParams:
    """BTC/USDT bars at 00:01, 00:03, 00:05 and ETH/USDT bars at 00:02, 00:04; a buy of
    each and a signal for a symbol without data."""
    btc = write_bars(tmp_path / "btc.csv", "2024-01-01T00:01:00Z",
                     [(100, 101, 99, 100.5), (101, 102, 100, 101.5), (102, 103, 101, 102.5)], freq="2min")
    eth = write_bars(tmp_path / "eth.csv", "2024-01-01T00:02:00Z", [(10, 11, 9, 10.5), (11, 12, 10, 11.5)],
                     freq="2min")
    sigs = write_sigs(tmp_path / "s.csv", ["2024-01-01T00:01:00Z,BTC/USDT,buy,1,b1,market,",
                                           "2024-01-01T00:02:00Z,ETH/USDT,buy,2,e1,market,",
                                           "2024-01-01T00:02:00Z,SOL/USDT,buy,1,x1,market,"])
    return ReplayParams("", str(sigs), "", 1000.0, 0.001, markets=(("BTC/USDT", str(btc)), ("ETH/USDT", str(eth))))


def test_multi_symbol_routes_each_signal_and_marks_every_position(tmp_path, two):
    result = run(tmp_path, two)
    rows = fills_csv(tmp_path)
    assert rows[0] == [*FILLS_HEADER.split(","), "symbol"]
    assert rows[1:] == [["2024-01-01T00:03:00Z", "b1", "buy", "1.0", "101.0", repr(0.001 * 101), "BTC/USDT"],
                        ["2024-01-01T00:04:00Z", "e1", "buy", "2.0", "11.0", repr(0.001 * 22), "ETH/USDT"]]
    equity = pd.read_csv(tmp_path / "out" / "equity.csv")
    assert equity["timestamp"].tolist() == [f"2024-01-01T00:0{m}:00Z" for m in range(1, 6)]
    cash_1 = 1000 - 101 - 0.101
    cash_2 = cash_1 - 22 - 0.022
    assert equity["cash"].tolist() == approx([1000, 1000, cash_1, cash_2, cash_2])
    assert equity["position_value"].tolist() == approx([0, 0, 101.5, 101.5 + 23, 102.5 + 23])
    s = result.summary
    assert s["symbols"] == ["BTC/USDT", "ETH/USDT"] and s["bars"] == 5 and s["rejected"] == 1
    assert s["final_positions"] == {"BTC/USDT": 1.0, "ETH/USDT": 2.0} and s["final_position"] is None
    assert s["final_equity"] == approx(cash_2 + 102.5 + 23) == equity["equity"].iloc[-1]
    assert s["unrealized_pnl"] == approx((102.5 - 101) + 2 * (11.5 - 11))
    assert s["params"]["markets"] == {"BTC/USDT": str(tmp_path / "btc.csv"), "ETH/USDT": str(tmp_path / "eth.csv")}


def test_multi_symbol_cash_is_shared(tmp_path, two):
    # after the BTC buy (101.101) the cash is 898.899: 82 ETH at 11 cost 902.902 with the fee, more than
    # is left, though less than the 1000 the account started with
    sigs = write_sigs(tmp_path / "cash.csv", ["2024-01-01T00:01:00Z,BTC/USDT,buy,1,b1,market,",
                                              "2024-01-01T00:02:00Z,ETH/USDT,buy,82,e1,market,"])
    result = run(tmp_path, replace(two, signals=str(sigs)))
    assert result.summary["n_fills"] == 1 and result.summary["rejected"] == 1


# ---------------------------------------------------------------- the CLI


def _cli(tmp_path: Path, one, *extra: str) -> list[str]:
    return ["replay", "--ohlcv", str(one[0]), "--signals", str(one[1]), "--symbol", "BTC/USDT", "--cash", "1000",
            "--out", str(tmp_path / "cli-out"), "--database-url", f"sqlite:///{tmp_path / 'cli.db'}", "--quiet",
            *extra]


BAD_FLAGS = [
    (["--fill-model", "midpoint"], "--fill-model: expected one of next-open, close, vwap-bar, got 'midpoint'"),
    (["--slippage-model", "linear"], "--slippage-model: expected one of fixed, volatility, sqrt-impact"),
    (["--slippage-model", "sqrt-impact", "--impact-k", "0"], "--impact-k: must be > 0, got 0.0"),
    (["--impact-k", "0.5"], "--impact-k: needs --slippage-model volatility or sqrt-impact"),
    (["--slippage-model", "volatility", "--slippage-bps", "3"], "--slippage-bps: applies to --slippage-model fixed"),
    (["--participation", "0"], "--participation: must be in (0, 1], got 0.0"),
    (["--participation", "1.5"], "--participation: must be in (0, 1], got 1.5"),
    (["--latency-ms", "-1"], "--latency-ms: must be >= 0, got -1.0"),
    (["--latency-ms", "nan"], "--latency-ms: must be >= 0, got nan"),
    (["--venue", "nasdaq"], "--venue: unknown venue 'nasdaq' (expected one of binance, kraken, bybit, kucoin, okx"),
    (["--venue", "custom:0.001"], "--venue: expected custom:MAKER:TAKER with two numbers"),
    (["--seed", "-1"], "--seed: must be an integer in [0, 2**63), got -1"),
]


@pytest.mark.parametrize("extra, expected", BAD_FLAGS, ids=[" ".join(e) for e, _ in BAD_FLAGS])
def test_bad_simulator_flags_exit_2_with_one_line(tmp_path, capsys, one, extra, expected):
    assert main(_cli(tmp_path, one, *extra)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tradpal: error: ") and expected in err
    assert not (tmp_path / "cli.db").exists() and not (tmp_path / "cli-out").exists()


@pytest.mark.parametrize("flag, value", [("--impact-k", "abc"), ("--participation", "x"), ("--latency-ms", "1ms"),
                                         ("--seed", "1.5")])
def test_unparsable_numbers_exit_2_naming_the_flag(tmp_path, capsys, one, flag, value):
    with pytest.raises(SystemExit) as exit_:
        main(_cli(tmp_path, one, flag, value))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and f"argument {flag}: not a number: '{value}'" in err


@pytest.mark.parametrize("ohlcv, symbol, expected", [
    (["a.csv"], None, "--ohlcv: expected SYMBOL=FILE (or a FILE with --symbol), got 'a.csv'"),
    (["BTC/USDT=a.csv", "ETH/USDT=b.csv"], "BTC/USDT", "--symbol: names the symbol of a single --ohlcv FILE"),
    (["BTC/USDT={btc}", "ETH/BTC={btc}"], None, "--ohlcv: every symbol must share one quote currency"),
    (["BTC/USDT={btc}", "btc/usdt={btc}"], None, "--ohlcv: symbol BTC/USDT given more than once"),
    (["BTCUSDT={btc}", "ETH/USDT={btc}"], None, "--ohlcv: expected BASE/QUOTE, got 'BTCUSDT'"),
    (["BTC/USDT={btc}", "ETH/USDT=missing.csv"], None, "missing.csv: file not found"),
])
def test_bad_ohlcv_markets_exit_2(tmp_path, capsys, one, ohlcv, symbol, expected):
    args = ["replay", "--signals", str(one[1]), "--out", str(tmp_path / "cli-out"), "--quiet",
            "--database-url", f"sqlite:///{tmp_path / 'cli.db'}"]
    for value in ohlcv:
        args += ["--ohlcv", value.format(btc=one[0])]
    if symbol:
        args += ["--symbol", symbol]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err
    assert not (tmp_path / "cli.db").exists() and not (tmp_path / "cli-out").exists()


@pytest.mark.slow
def test_replay_command_with_every_simulator_flag_matches_the_direct_run(tmp_path, two):
    """The CLI passes each flag through the flow: its outputs equal a direct run's."""
    flags = ["--fill-model", "vwap-bar", "--slippage-model", "sqrt-impact", "--impact-k", "0.5", "--participation",
             "0.2", "--latency-ms", "1000", "--venue", "okx", "--seed", "3"]
    args = ["replay", "--signals", two.signals, "--cash", "1000", "--out", str(tmp_path / "cli-out"),
            "--database-url", f"sqlite:///{tmp_path / 'cli.db'}", "--quiet", *flags]
    for symbol, path in two.markets:
        args += ["--ohlcv", f"{symbol}={path}"]
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    proc = subprocess.run([sys.executable, "-m", "tradpal.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    direct = replace(two, fee_rate=None, fill_model="vwap-bar", slippage_model="sqrt-impact", impact_k=0.5,
                     participation=0.2, latency_ms=1000.0, venue="okx", seed=3, out=str(tmp_path / "cli-out"))
    run(tmp_path, direct)
    for name in ("fills.csv", "equity.csv"):
        assert (tmp_path / "cli-out" / name).read_bytes() == (tmp_path / "out" / name).read_bytes(), name
    cli = json.loads((tmp_path / "cli-out" / "summary.json").read_text())
    assert cli["params"] == params_record(direct)
    assert cli["fees"] == {"venue": "okx", "maker": 0.0008, "taker": 0.001}
    assert fills_csv(tmp_path, "cli-out")[0][-1] == "symbol"
    assert asdict(direct)["markets"] == two.markets
