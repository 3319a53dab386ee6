"""Paper replay of 1,000,000 synthetic 1-minute bars with 5,000 signals: wall seconds,
bars/s and peak RSS, directly (plain step functions) and through the `paper_replay` flow.

Run one mode per process so peak RSS is per mode:
    python -m benchmarks.replay direct|flow [N_BARS] [N_SIGNALS]
"""

from __future__ import annotations

import asyncio
import sys
import time

from benchmarks.common import emit, isolated_prefect, peak_rss_mib
from benchmarks.synthetic import write_case


def main(mode: str, n_bars: int = 1_000_000, n_signals: int = 5_000) -> None:
    with isolated_prefect() as tmp:
        ohlcv, signals = write_case(tmp / "data", n_bars, n_signals)
        db = f"sqlite:///{tmp / 'ledger.db'}"
        kwargs = dict(ohlcv=str(ohlcv), signals=str(signals), symbol="BTC/USDT", cash=1_000_000.0,
                      fee_rate=0.001, slippage_bps=1.0, out=str(tmp / "out"), database_url=db, chunk_signals=500)
        if mode == "direct":
            seconds, summary = _direct(kwargs)
        else:
            seconds, summary = _flow(kwargs)
        assert summary["n_fills"] > 0.9 * n_signals, summary
        tag = f"replay_{mode}_{n_bars // 1000}k_bars_{n_signals}_signals"
        emit(f"{tag}_wall", seconds, "s", "<= 10" if mode == "flow" else None)
        emit(f"{tag}_throughput", n_bars / seconds, "bars/s")
        emit(f"{tag}_peak_rss", peak_rss_mib(), "MiB", "<= 1024" if mode == "flow" else None)


def _direct(kwargs: dict) -> tuple[float, dict]:
    import prefect.context  # noqa: F401  -- imported before timing, as in the flow case

    from tradpal.ledger import Ledger
    from tradpal.replay import ReplayParams, load_inputs, run_replay, write_outputs

    ledger = Ledger(kwargs["database_url"])  # migrations: outside the timing, as in the flow case
    t0 = time.perf_counter()
    params = ReplayParams(kwargs["ohlcv"], kwargs["signals"], kwargs["symbol"], kwargs["cash"], kwargs["fee_rate"],
                          kwargs["slippage_bps"], kwargs["out"], kwargs["chunk_signals"])
    inputs = load_inputs(params)
    result = asyncio.run(run_replay(params, inputs, ledger))
    write_outputs(kwargs["out"], result.reports, result.summary, result.equity)
    ledger.finish_run(result.summary["run_id"], "completed", result.summary)
    return time.perf_counter() - t0, result.summary


def _flow(kwargs: dict) -> tuple[float, dict]:
    from prefect import flow
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from flows.paper_replay import paper_replay
    from tradpal.ledger import Ledger

    @flow
    def warm_up() -> int:
        return 1

    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        t_start = time.perf_counter()
        warm_up()  # starts the ephemeral API server, reported separately
        emit("prefect_ephemeral_server_start", time.perf_counter() - t_start, "s")
        Ledger(kwargs["database_url"])  # migrations, as the direct run pays them too... once
        t0 = time.perf_counter()
        summary = asyncio.run(paper_replay(**kwargs))
        return time.perf_counter() - t0, summary


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0], *(int(a) for a in args[1:]))
