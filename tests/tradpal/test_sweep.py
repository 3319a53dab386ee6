"""Sweep planning (`tradpal.sweep`) and `tradpal sweep`'s bad-input errors: one line,
exit 2, nothing written. The fan-out itself: tests/flows/test_replay_sweep.py."""

from __future__ import annotations

import pytest

from tradpal.cli import main
from tradpal.errors import InputError
from tradpal.sweep import Market, markets_from, pairs, parse_grid, plan_sweep


def test_the_plan_is_every_market_times_every_combination():
    markets = [Market("BTC/USDT", "b.csv", "bs.csv"), Market("ETH/USDT", "e.csv", "es.csv")]
    grid = parse_grid(["slippage_bps=0,5", "fill-model=next-open,close"])
    assert grid == {"slippage_bps": [0.0, 5.0], "fill_model": ["next-open", "close"]}
    plan = plan_sweep(markets, grid, {"cash": 500.0}, "out")
    assert len(plan) == 8
    first = plan[0]
    assert first.case_id == "BTC-USDT__slippage_bps=0__fill_model=next-open"
    assert first.params.cash == 500.0 and first.params.symbol == "BTC/USDT" and first.params.signals == "bs.csv"
    assert first.params.out == "out/cases/BTC-USDT__slippage_bps=0__fill_model=next-open"
    assert plan[-1].overrides == (("slippage_bps", 5.0), ("fill_model", "close"))
    assert len({c.case_id for c in plan}) == 8
    assert [c.case_id for c in plan_sweep(markets[:1])] == ["BTC-USDT"]  # no grid: one case per market


@pytest.mark.parametrize("args, message", [
    (["--grid", "leverage=2"], "--grid: unknown parameter 'leverage'"),
    (["--grid", "slippage_bps=1,x"], "--grid: slippage_bps: not a number: 'x'"),
    (["--grid", "chunk_signals=1.5"], "--grid: chunk_signals: not an integer: '1.5'"),
    (["--grid", "fee_rate=0.001,2"], "--grid fee_rate=2: --fee-rate: must be in [0, 1), got 2.0"),
    (["--grid", "slippage_bps"], "--grid: expected NAME=VALUE[,VALUE...]"),
    (["--grid", "cash=1", "--grid", "cash=2"], "--grid: cash given more than once"),
    (["--workers", "0"], "--workers: must be >= 1"),
    (["--dask-address", "scheduler:8786"], "--dask-address: expected a Dask scheduler address like tcp://host:8786"),
])
def test_bad_sweep_input_is_one_line_exit_2_and_nothing_written(args, message, tmp_path, capsys, sample_ohlcv):
    out = tmp_path / "out"
    signals = tmp_path / "s.csv"
    signals.write_text("timestamp,symbol,side,quantity\n2017-07-01T00:00:00Z,ETH/BTC,buy,1\n")
    code = main(["sweep", "--ohlcv", f"ETH/BTC={sample_ohlcv}", "--signals", f"ETH/BTC={signals}", "--out", str(out),
                 *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"tradpal: error: {message}") and err.count("\n") == 1, err
    assert not out.exists()


def test_every_symbol_needs_bars_and_signals_and_files_are_checked_first(tmp_path, capsys, sample_ohlcv):
    with pytest.raises(InputError, match=r"--signals: no signals for BTC/USDT \(give --signals BTC/USDT=FILE\)"):
        markets_from(pairs(["btc/usdt=a.csv"], "--ohlcv"), {})
    with pytest.raises(InputError, match="--ohlcv: expected SYMBOL=FILE, got 'a.csv'"):
        pairs(["a.csv"], "--ohlcv")
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,symbol,side,quantity\n2017-07-01T00:00:00Z,ETH/BTC,hold,1\n")
    out = tmp_path / "out"
    code = main(["sweep", "--ohlcv", f"ETH/BTC={sample_ohlcv}", "--signals", f"ETH/BTC={bad}", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and f"{bad}: row 1, column 'side'" in err and err.count("\n") == 1
    assert not out.exists()
