"""Scale-out: a replay sweep of 8 symbols x 250,000 synthetic 1-minute bars (1,250 signals
each) through the `replay_sweep` flow on a Dask LocalCluster of 1 and of 2 worker
processes (one thread each); wall seconds and the speedup.

For each worker count: ``cold`` (the flow creates its cluster: worker processes start,
import, fill their caches, and are stopped at the end) and ``warm`` (an already-running
cluster reached by its address, as an external scheduler would be, whose workers have run a
small sweep before). Both include the flow's input check (each market's files loaded once,
on the workers) and its table artifact and file. ``serial`` is the same
eight replays run one after the other in this process, without Prefect or Dask. The load
average (1 min) before and after each measurement is reported with it: the development
machine has 2 cores, shared.

    python -m benchmarks.scaleout [N_SYMBOLS] [N_BARS] [N_SIGNALS]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from benchmarks.common import emit, isolated_prefect
from benchmarks.synthetic import synthetic_bars, synthetic_signals

WORKERS = (1, 2)


def write_markets(directory: Path, n_symbols: int, n_bars: int, n_signals: int) -> list[dict]:
    directory.mkdir(parents=True, exist_ok=True)
    markets = []
    for i in range(n_symbols):
        symbol = f"S{i}/USDT"
        bars = synthetic_bars(n_bars, seed=100 + i)
        signals = synthetic_signals(bars, n_signals, symbol=symbol, seed=200 + i)
        ohlcv, sig = directory / f"s{i}_bars.parquet", directory / f"s{i}_signals.parquet"
        bars.to_parquet(ohlcv)
        signals.to_parquet(sig)
        markets.append({"symbol": symbol, "ohlcv": str(ohlcv), "signals": str(sig)})
    return markets


def load() -> float:
    return os.getloadavg()[0]


def serial(markets: list[dict], base: dict, tmp: Path) -> tuple[float, float]:
    from tradpal.ledger import Ledger
    from tradpal.sweep import Market, plan_sweep, run_case

    url = f"sqlite:///{tmp / 'serial.db'}"
    Ledger(url).close()
    plan = plan_sweep([Market(**m) for m in markets], None, base, str(tmp / "out-serial"))
    t0, cpu0 = time.perf_counter(), time.process_time()
    for case in plan:
        asyncio.run(run_case(case, url))
    return time.perf_counter() - t0, time.process_time() - cpu0


def sweep(markets: list[dict], base: dict, tmp: Path, tag: str, **where) -> tuple[float, float, float]:
    """Wall seconds of the sweep, and the sums of its cases' own wall and CPU seconds (in the workers)."""
    from flows.replay_sweep import run_sweep

    t0 = time.perf_counter()
    result = run_sweep(markets, None, base, str(tmp / f"out-{tag}"), f"sqlite:///{tmp / f'{tag}.db'}", **where)
    seconds = time.perf_counter() - t0
    assert result["failed"] == [] and all(r["n_fills"] > 0 for r in result["table"]), result
    return seconds, sum(r["seconds"] for r in result["table"]), sum(r["cpu_seconds"] for r in result["table"])


def warm_cluster(n: int, tmp: Path):
    """A running LocalCluster whose workers have already run a small sweep (imports done,
    caches filled): the steady state of a long-lived external cluster."""
    from distributed import LocalCluster

    from flows.replay_sweep import run_sweep

    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None)
    small = write_markets(tmp / f"warmup{n}", 2 * n, 2_000, 20)
    run_sweep(small, None, {"cash": 1_000_000.0}, str(tmp / f"out-warmup{n}"), f"sqlite:///{tmp / f'warmup{n}.db'}",
              address=cluster.scheduler_address)
    return cluster


def main(n_symbols: int = 8, n_bars: int = 250_000, n_signals: int = 1_250) -> None:
    with isolated_prefect() as tmp:
        markets = write_markets(tmp / "data", n_symbols, n_bars, n_signals)
        tag = f"scaleout_{n_symbols}x{n_bars // 1000}k_bars"
        from prefect.server.api.server import SubprocessASGIServer

        from flows.replay_sweep import run_sweep  # noqa: F401  -- imports outside the timings

        server = SubprocessASGIServer()
        server.start(timeout=180)  # the ephemeral API, once, outside the timings
        try:
            _measure(markets, tag, tmp)
        finally:
            server.stop()  # before its PREFECT_HOME goes


def _measure(markets: list[dict], tag: str, tmp: Path) -> None:
    base = {"cash": 1_000_000.0, "fee_rate": 0.001, "slippage_bps": 1.0}
    before = load()
    wall, cpu = serial(markets, base, tmp)
    emit(f"{tag}_serial_direct_wall", wall, "s", None, load_before=before, load_after=load(), cpu_s=round(cpu, 2))
    results: dict[str, float] = {}
    for mode in ("warm", "cold"):
        for n in WORKERS:
            before = load()
            if mode == "cold":
                seconds, in_cases, cpu = sweep(markets, base, tmp, f"{mode}{n}", workers=n)
            else:
                cluster = warm_cluster(n, tmp)
                try:
                    seconds, in_cases, cpu = sweep(markets, base, tmp, f"{mode}{n}",
                                                   address=cluster.scheduler_address)
                finally:
                    cluster.close()
            results[f"{mode}{n}"] = seconds
            emit(f"{tag}_{mode}_{n}_worker{'s' if n > 1 else ''}_wall", seconds, "s", None,
                 load_before=before, load_after=load(), case_wall_s_summed=round(in_cases, 2),
                 case_cpu_s_summed=round(cpu, 2))
    for mode in ("warm", "cold"):
        emit(f"{tag}_{mode}_speedup_2_vs_1", results[f"{mode}1"] / results[f"{mode}2"], "x", "report")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
