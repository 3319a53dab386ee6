"""`tradpal sweep` (the `replay_sweep` flow) on a real Dask LocalCluster of two worker
processes and a real Prefect API: every case is the very replay `paper_replay` runs alone
(same fills, same equity)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prefect_dask import DaskTaskRunner

from flows.paper_replay import paper_replay
from flows.replay_sweep import replay_sweep
from tests.conftest import make_bars, make_signals, poll
from tradpal.cli import main
from tradpal.errors import InputError


def write_market(tmp: Path, symbol: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 40)))
    rows = [(c * 0.999, c * 1.01, c * 0.98, c, 1000.0) for c in close]
    bars = make_bars(rows)
    signals = make_signals([(bars["timestamp"].iloc[i], side, 1.0)
                            for i, side in ((3, "buy"), (10, "sell"), (20, "buy"), (30, "sell"), (38, "buy"))],
                           symbol=symbol)
    name = symbol.replace("/", "-")
    ohlcv, sig = tmp / f"{name}.csv", tmp / f"{name}-signals.csv"
    bars.assign(timestamp=bars["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(ohlcv, index=False)
    signals.assign(timestamp=signals["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(sig, index=False)
    return {"symbol": symbol, "ohlcv": str(ohlcv), "signals": str(sig)}


def test_sweep_fans_out_over_dask_and_each_case_equals_its_replay_alone(prefect_api, prefect_client, tmp_path,
                                                                        capsys):
    markets = [write_market(tmp_path, "BTC/USDT", 1), write_market(tmp_path, "ETH/USDT", 2)]
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    out = tmp_path / "sweep"
    code = main(["sweep", *[f"--ohlcv={m['symbol']}={m['ohlcv']}" for m in markets],
                 *[f"--signals={m['symbol']}={m['signals']}" for m in markets], "--grid", "slippage_bps=0,25",
                 "--cash", "10000", "--fee-rate", "0.001", "--out", str(out), "--database-url", db, "--workers", "2"])
    printed = capsys.readouterr().out
    assert code == 0 and f"table: {out / 'sweep.csv'}" in printed and "ETH-USDT__slippage_bps=25  n_fills=" in printed
    table = pd.read_csv(out / "sweep.csv")
    assert table["case"].tolist() == ["BTC-USDT__slippage_bps=0", "BTC-USDT__slippage_bps=25",
                                      "ETH-USDT__slippage_bps=0", "ETH-USDT__slippage_bps=25"]
    assert (table["n_fills"] == 5).all()
    assert table.loc[1, "final_equity"] < table.loc[0, "final_equity"]  # slippage costs money
    assert set(table["pid"]) - {os.getpid()} == set(table["pid"])  # ran in the Dask worker processes
    for market, slippage, row in [(markets[0], 25.0, 1), (markets[1], 0.0, 2)]:
        alone = tmp_path / f"alone-{row}"
        summary = asyncio.run(paper_replay(market["ohlcv"], market["signals"], market["symbol"], cash=10_000.0,
                                           fee_rate=0.001, slippage_bps=slippage, out=str(alone), database_url=db,
                                           quality_gate=False))
        case = Path(table.loc[row, "out"])
        for name in ("fills.csv", "equity.csv"):
            assert (case / name).read_bytes() == (alone / name).read_bytes(), (row, name)
        assert table.loc[row, "final_equity"] == summary["final_equity"]

    artifact = prefect_client(lambda c: c.read_latest_artifacts())
    sweep_table = [a for a in artifact if a.key == "replay-sweep"]
    assert len(sweep_table) == 1 and "ETH-USDT__slippage_bps=25" in str(sweep_table[0].data)
    # the workers reported to this very API (they were handed its URL, not left to start their own)
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    expected = [f"replay [{case}]" for case in table["case"]]
    runs = poll(lambda: prefect_client(lambda c: c.read_task_runs(flow_run_filter=FlowRunFilter(
        id=FlowRunFilterId(any_=[sweep_table[0].flow_run_id])))),  # recorded from events: a moment later
        lambda runs: sorted(r.name for r in runs) == expected and all(r.state.is_completed() for r in runs))
    assert sorted(r.name for r in runs) == expected
    assert all(r.state.is_completed() for r in runs)


def test_bad_input_stops_the_flow_before_any_case_runs(prefect_api, tmp_path):
    """Run as a deployment would (no CLI in front): the markets are checked on the workers
    first; one bad file fails the run with its one-line reason, and nothing is written."""
    good, bad = write_market(tmp_path, "BTC/USDT", 1), write_market(tmp_path, "ETH/USDT", 2)
    Path(bad["signals"]).write_text("timestamp,symbol,side,quantity\n2024-01-01T00:05:00Z,ETH/USDT,hold,1\n")
    threads = DaskTaskRunner(cluster_kwargs={"n_workers": 1, "processes": False, "dashboard_address": None})
    out = tmp_path / "sweep"
    with pytest.raises(InputError, match=r"ETH-USDT-signals.csv: row 1, column 'side': unknown side 'hold'"):
        replay_sweep.with_options(task_runner=threads)([good, bad], {"slippage_bps": [0.0, 5.0]}, None, str(out),
                                                       f"sqlite:///{tmp_path / 'ledger.db'}")
    assert not out.exists() and not (tmp_path / "ledger.db").exists()


def test_the_dask_cluster_comes_from_configuration(monkeypatch):
    from flows.replay_sweep import dask_task_runner
    from tradpal.errors import ConfigError

    monkeypatch.setenv("TRADPAL_DASK_WORKERS", "3")
    local = dask_task_runner()
    assert local.address is None and local.cluster_kwargs["n_workers"] == 3
    assert local.cluster_kwargs["host"] == "127.0.0.1" and local.cluster_kwargs["threads_per_worker"] == 1
    assert dask_task_runner(workers=1).cluster_kwargs["n_workers"] == 1
    monkeypatch.setenv("TRADPAL_DASK_ADDRESS", "tcp://10.0.0.5:8786")
    assert dask_task_runner().address == "tcp://10.0.0.5:8786"  # an external scheduler: no local cluster
    assert dask_task_runner(address="tcp://127.0.0.1:9999").address == "tcp://127.0.0.1:9999"
    monkeypatch.setenv("TRADPAL_DASK_ADDRESS", "10.0.0.5")
    with pytest.raises(ConfigError, match="TRADPAL_DASK_ADDRESS: .*tcp://host:8786"):
        dask_task_runner()
