"""The `tradpal` command line: help, and bad input (one line, exit 2, nothing written)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SAMPLE
from tradpal.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_each_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for command in ("replay", "demo", "analytics", "live"):
        assert command in out


def test_replay_help_gives_the_default_batch(capsys):
    from tradpal.replay import DEFAULT_BATCH

    with pytest.raises(SystemExit):
        main(["replay", "--help"])
    assert f"(default {DEFAULT_BATCH}; 1 with --risk-config)" in " ".join(capsys.readouterr().out.split())


def _args(tmp_path, ohlcv, signals, *extra):
    return ["replay", "--ohlcv", str(ohlcv), "--signals", str(signals), "--symbol", "ETH/BTC", "--cash", "1", "--fee-rate", "0.001",
            "--out", str(tmp_path / "out"), "--database-url", f"sqlite:///{tmp_path / 'ledger.db'}", "--quiet", *extra]


BAD_SIGNALS = {
    "missing column": ("timestamp,symbol,quantity\n2018-01-10T05:00:00Z,ETH/BTC,1\n", "missing column 'side'"),
    "unparsable timestamp": ("timestamp,symbol,side,quantity\nnot-a-time,ETH/BTC,buy,1\n", "row 1, column 'timestamp'"),
    "negative quantity": ("timestamp,symbol,side,quantity\n2018-01-10T05:00:00Z,ETH/BTC,buy,-1\n", "row 1, column 'quantity'"),
    "unknown side": ("timestamp,symbol,side,quantity\n2018-01-10T05:00:00Z,ETH/BTC,short,1\n", "row 1, column 'side'"),
    "unsorted": ("timestamp,symbol,side,quantity\n2018-01-10T06:00:00Z,ETH/BTC,buy,1\n2018-01-10T05:00:00Z,ETH/BTC,sell,1\n",
                 "row 2, column 'timestamp': unsorted"),
}


@pytest.mark.parametrize("case", sorted(BAD_SIGNALS))
def test_bad_signals_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, case):
    text, expected = BAD_SIGNALS[case]
    signals = tmp_path / "signals.csv"
    signals.write_text(text)
    code = main(_args(tmp_path, SAMPLE / "BITTREX_ETH-BTC_5m.csv", signals))
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and str(signals) in err and expected in err
    assert not (tmp_path / "ledger.db").exists() and not (tmp_path / "out").exists()


def test_duplicate_bar_timestamps_exit_2(tmp_path, capsys):
    bars = tmp_path / "bars.csv"
    bars.write_text("timestamp,open,high,low,close,volume\n2018-01-10T05:00:00Z,1,1,1,1,1\n"
                    "2018-01-10T05:00:00Z,1,1,1,1,1\n")
    signals = tmp_path / "signals.csv"
    signals.write_text("timestamp,symbol,side,quantity\n2018-01-10T05:00:00Z,ETH/BTC,buy,1\n")
    assert main(_args(tmp_path, bars, signals)) == 2
    err = capsys.readouterr().err
    assert f"{bars}: row 2, column 'timestamp': duplicate timestamp" in err
    assert not (tmp_path / "ledger.db").exists()


@pytest.mark.parametrize("flag, value, expected", [
    ("--cash", "0", "--cash: must be > 0"),
    ("--fee-rate", "abc", "not a number"),
    ("--symbol", "ETHBTC", "--symbol: expected BASE/QUOTE"),
])
def test_bad_arguments_exit_2(tmp_path, capsys, flag, value, expected):
    signals = tmp_path / "s.csv"
    signals.write_text("timestamp,symbol,side,quantity\n2018-01-10T05:00:00Z,ETH/BTC,buy,1\n")
    args = _args(tmp_path, SAMPLE / "BITTREX_ETH-BTC_5m.csv", signals)
    args[args.index(flag) + 1] = value
    if flag in ("--symbol", "--cash"):
        code = main(args)
    else:
        with pytest.raises(SystemExit) as exit_:
            code = main(args)
        code = exit_.value.code
    assert code == 2
    assert expected in capsys.readouterr().err


@pytest.mark.slow
def test_replay_command_end_to_end(tmp_path):
    """The replay contract as an outside caller uses it: a subprocess, its own Prefect home."""
    signals = tmp_path / "signals.csv"
    signals.write_text("timestamp,symbol,side,quantity,signal_id\n"
                       "2018-01-10T05:00:00Z,ETH/BTC,buy,2,first\n"
                       "2018-01-10T05:00:00Z,ETH/BTC,buy,100,too-big\n"
                       "2018-01-10T06:00:00Z,ETH/BTC,sell,2,second\n")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    proc = subprocess.run([sys.executable, "-m", "tradpal.cli", *_args(tmp_path, SAMPLE / "BITTREX_ETH-BTC_5m.csv",
                                                                        signals)], env=env, capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "out" / "fills.csv").read_text().splitlines()
    assert lines[0] == "timestamp,signal_id,side,quantity,price,fee"
    rows = [line.split(",") for line in lines[1:]]
    # next-open: the 05:00 signals fill at the open of the 05:05 bar (0.09969); 'too-big' is rejected for cash
    assert [r[:3] for r in rows] == [["2018-01-10T05:05:00Z", "first", "buy"], ["2018-01-10T06:05:00Z", "second", "sell"]]
    assert float(rows[0][3]) == 2 and float(rows[0][4]) == 0.09969 and float(rows[0][5]) == pytest.approx(0.001 * 2 * 0.09969)
    assert float(rows[1][4]) == 0.09424279
    import json

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_fills"] == 2 and summary["rejected"] == 1
    for key in ("final_cash", "final_position", "final_equity", "total_fees"):
        assert key in summary
    assert summary["final_position"] == 0


def test_invalid_configuration_fails_before_anything_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TRADPAL_BROKER", "nasdaq")
    signals = tmp_path / "s.csv"
    signals.write_text("timestamp,symbol,side,quantity\n2018-01-10T05:00:00Z,ETH/BTC,buy,1\n")
    assert main(_args(tmp_path, SAMPLE / "BITTREX_ETH-BTC_5m.csv", signals)) == 2
    err = capsys.readouterr().err
    assert err.startswith("tradpal: error: TRADPAL_BROKER:") and "unknown broker 'nasdaq'" in err
    assert not (tmp_path / "ledger.db").exists()


def test_live_and_analytics_commands(prefect_api, tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    signals = tmp_path / "s.csv"
    signals.write_text("timestamp,symbol,side,quantity,signal_id\n2024-01-01T00:00:00Z,BTC/USDT,buy,0.5,L1\n"
                       "2024-01-01T00:00:00Z,BTC/USDT,sell,1,L2\n")
    assert main(["live", "--signals", str(signals), "--price", "BTC/USDT=100", "--cash", "1000",
                 "--database-url", db]) == 0
    out = capsys.readouterr().out
    assert "fills: 1" in out and "rejected: 1" in out
    assert main(["analytics", "--database-url", db]) == 0
    out = capsys.readouterr().out
    assert "Post-trade analytics" in out and "BTC/USDT" in out and "pre_checks: 1" in out


def test_bad_price_argument(tmp_path, capsys):
    signals = tmp_path / "s.csv"
    signals.write_text("timestamp,symbol,side,quantity\n2024-01-01T00:00:00Z,BTC/USDT,buy,0.5\n")
    assert main(["live", "--signals", str(signals), "--price", "BTC/USDT:100"]) == 2
    assert "--price: expected SYMBOL=PRICE" in capsys.readouterr().err


def test_risk_example_passes_its_own_check(tmp_path, capsys):
    assert main(["risk", "example"]) == 0
    example = capsys.readouterr().out
    path = tmp_path / "risk.yaml"
    path.write_text(example)
    assert main(["risk", "check", str(path)]) == 0
    assert "valid (2 assets, 1 sectors, 3 strategy sizing rules)" in capsys.readouterr().out
    path.write_text(example.replace("max_drawdown: 0.20", "max_drawdown: -1"))
    assert main(["risk", "check", str(path)]) == 2
    assert "portfolio.max_drawdown: Input should be greater than 0 (got -1)" in capsys.readouterr().err


def test_replay_with_a_bad_risk_config_exits_2_before_anything(tmp_path, capsys):
    signals = tmp_path / "s.csv"
    signals.write_text("timestamp,symbol,side,quantity\n2018-01-10T05:00:00Z,ETH/BTC,buy,1\n")
    risk = tmp_path / "risk.yaml"
    risk.write_text("portfolio: {max_drawdown: 0.2}\n")
    code = main(_args(tmp_path, SAMPLE / "BITTREX_ETH-BTC_5m.csv", signals, "--risk-config", str(risk)))
    assert code == 2 and "portfolio.max_daily_loss: Field required" in capsys.readouterr().err
    assert not (tmp_path / "ledger.db").exists()


@pytest.mark.parametrize("value", ["soon", "-1"])
def test_a_bad_ledger_timeout_setting_exits_2_with_one_line(tmp_path, capsys, monkeypatch, value):
    monkeypatch.setenv("TRADPAL_SQLITE_BUSY_TIMEOUT_S", value)
    signals = tmp_path / "signals.csv"
    signals.write_text("timestamp,symbol,side,quantity\n2018-01-10T05:00:00Z,ETH/BTC,buy,1\n")
    assert main(_args(tmp_path, SAMPLE / "BITTREX_ETH-BTC_5m.csv", signals)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"TRADPAL_SQLITE_BUSY_TIMEOUT_S={value!r}: expected a number of seconds" in err
    assert not (tmp_path / "ledger.db").exists() and not (tmp_path / "out").exists()
