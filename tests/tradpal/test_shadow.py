"""Shadow mode: a live run's signals against the simulator, fill by fill."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import SAMPLE
from tradpal.io import load_ohlcv
from tradpal.shadow import compare, simulate


def test_compare_hand_computed():
    signals = pd.DataFrame({"signal_id": ["a", "b", "c"], "symbol": "X/Y", "side": ["buy", "sell", "buy"]})
    t = pd.Timestamp("2024-01-01", tz="UTC")
    live = pd.DataFrame({"signal_id": ["a", "b"], "timestamp": [t + pd.Timedelta(seconds=2), t],
                         "quantity": [1.0, 2.0], "price": [101.0, 99.0]})
    sim = pd.DataFrame({"signal_id": ["a", "b", "c"], "timestamp": [t, t, t], "quantity": [1.0, 2.0, 1.0],
                        "price": [100.0, 100.0, 50.0]})
    frame, totals = compare(signals, live, sim)
    rows = frame.set_index("signal_id")
    # a: bought at 101 live vs 100 simulated: 100 bps worse; b: sold at 99 vs 100: 100 bps worse
    assert rows.loc["a", "price_divergence_bps"] == pytest.approx(100.0)
    assert rows.loc["b", "price_divergence_bps"] == pytest.approx(100.0)
    assert rows.loc["a", "time_divergence_s"] == 2.0 and rows.loc["c", "fill_ratio"] == 0.0
    assert totals["compared"] == 2 and totals["sim_only"] == 1 and totals["fill_ratio"] == pytest.approx(3 / 4)


def test_simulate_fills_at_the_next_open():
    bars = load_ohlcv(SAMPLE / "BITTREX_ETH-BTC_5m.csv").head(50)
    signals = pd.DataFrame({"timestamp": [bars["timestamp"].iloc[3]], "symbol": ["ETH/BTC"], "side": ["buy"],
                            "quantity": [1.0], "signal_id": ["s1"]})
    sim = simulate(signals, {"ETH/BTC": bars}, fee_rate=0.0, slippage_bps=0.0)
    assert sim["price"].tolist() == [bars["open"].iloc[4]]


def test_shadow_command_against_a_live_run(prefect_api, tmp_path, capsys):
    import asyncio
    import json

    from flows.live_execution import live_execution
    from tradpal.cli import main

    bars = load_ohlcv(SAMPLE / "BITTREX_ETH-BTC_5m.csv")
    db = f"sqlite:///{tmp_path / 'l.db'}"
    # a "live" session in January 2018 at the bar's close; the simulator fills at the next open
    t, close = bars["timestamp"].iloc[10], float(bars["close"].iloc[10])
    summary = asyncio.run(live_execution([{"timestamp": t.isoformat(), "symbol": "ETH/BTC", "side": "buy",
                                           "quantity": 2.0, "signal_id": "L1"}], prices={"ETH/BTC": close},
                                         cash=10.0, quote="BTC", database_url=db))
    code = main(["analytics", "--shadow", summary["run_id"], "--ohlcv", f"ETH/BTC={SAMPLE / 'BITTREX_ETH-BTC_5m.csv'}",
                 "--fee-rate", "0.001", "--out", str(tmp_path / "shadow"), "--database-url", db])
    assert code == 0
    totals = json.loads((tmp_path / "shadow" / "shadow.json").read_text())
    expected = (close / float(bars["open"].iloc[11]) - 1) * 1e4
    assert totals["compared"] == 1 and totals["fill_ratio"] == 1.0
    assert totals["price_divergence_bps_mean"] == pytest.approx(expected, rel=1e-9)
