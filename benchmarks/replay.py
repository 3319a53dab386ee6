"""Paper replay of 1,000,000 synthetic 1-minute bars with 5,000 signals: wall seconds,
bars/s and peak RSS, directly (plain step functions) and through the `paper_replay` flow.

Modes (one per process, so peak RSS is per mode):

* ``direct`` / ``flow``: the basic simulator (next-open, 1 bps fixed slippage); both run
  the GX market-data gate first, as the flow does by default.
* ``flow-ungated``: ``flow`` with ``quality_gate=False``: what the gate costs, apart.
* ``advanced``: the flow with the advanced simulator: sqrt-impact slippage (k = 1) and
  the 10 % participation cap (partial fills over bars), limits trading through.
* ``multi``: the advanced flow over ten symbols x N_BARS on one account (N_SIGNALS per
  symbol), bars merged on time: 10,000,000 bars by default.
* ``lower-bound``: the same next-open fills as ``flow``, computed with a few vectorised
  numpy operations (no pipeline, ledger, contracts or Prefect), reading the same files
  with the same loaders and writing the same three outputs; it then checks its fills
  against the pipeline's (outside the timing). ``python -m benchmarks`` reports the
  flow's time as a ratio to it.

Every mode runs the replay's default batch (``tradpal.replay.DEFAULT_BATCH`` signals per
eight task runs); ``TRADPAL_BENCH_CHUNK=N`` runs batches of N instead (for comparison).

Each ``_wall`` line also carries ``cpu_s`` (this process's CPU seconds over the timed part)
and ``api_cpu_s`` (the ephemeral Prefect API server's, a child process): on a shared 2-core
machine the wall time follows the load, the CPU seconds much less.

    python -m benchmarks.replay direct|flow|flow-ungated|advanced|multi|lower-bound [N_BARS] [N_SIGNALS]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from benchmarks.common import emit, isolated_prefect, peak_rss_mib
from benchmarks.synthetic import write_case

ADVANCED = {"slippage_model": "sqrt-impact", "impact_k": 1.0}
CHUNK = int(os.environ["TRADPAL_BENCH_CHUNK"]) if os.environ.get("TRADPAL_BENCH_CHUNK") else None  # None: default
N_SYMBOLS = 10


def main(mode: str, n_bars: int = 1_000_000, n_signals: int = 5_000) -> None:
    if mode in ("advanced", "multi"):
        return advanced(mode, n_bars, n_signals)
    if mode == "lower-bound":
        return lower_bound_case(n_bars, n_signals)
    with isolated_prefect() as tmp:
        ohlcv, signals = write_case(tmp / "data", n_bars, n_signals)
        db = f"sqlite:///{tmp / 'ledger.db'}"
        kwargs = dict(ohlcv=str(ohlcv), signals=str(signals), symbol="BTC/USDT", cash=1_000_000.0,
                      fee_rate=0.001, slippage_bps=1.0, out=str(tmp / "out"), database_url=db, chunk_signals=CHUNK)
        if mode == "direct":
            seconds, summary = _direct(kwargs)
        elif mode == "flow-ungated":  # the flow without its GX market-data gate: the gate's share, apart
            seconds, summary = _flow({**kwargs, "quality_gate": False})
        else:
            seconds, summary = _flow(kwargs)
        assert summary["n_fills"] > 0.9 * n_signals, summary
        tag = f"replay_{mode.replace('-', '_')}_{n_bars // 1000}k_bars_{n_signals}_signals"
        emit(f"{tag}_wall", seconds, "s", "<= 10" if mode == "flow" else None, **LAST_CPU)
        emit(f"{tag}_throughput", n_bars / seconds, "bars/s")
        emit(f"{tag}_peak_rss", peak_rss_mib(), "MiB", "<= 1024" if mode == "flow" else None)


def _cpu_seconds() -> tuple[float, float]:
    """CPU seconds so far of this process and of its children (the ephemeral Prefect API)."""
    import psutil

    me = psutil.Process()
    return sum(me.cpu_times()[:2]), sum(sum(c.cpu_times()[:2]) for c in me.children(recursive=True))


def _cpu_since(before: tuple[float, float]) -> dict:
    """The CPU used since ``before``, kept in ``LAST_CPU`` and emitted beside the wall time:
    on a shared machine the wall time depends on the load, CPU seconds much less.
    ``api_cpu_s`` is the Prefect API server's (a child process): on 2 cores it competes
    with the replay for the CPU."""
    now = _cpu_seconds()
    LAST_CPU.update(cpu_s=round(now[0] - before[0], 3), api_cpu_s=round(now[1] - before[1], 3))
    return LAST_CPU


LAST_CPU: dict = {}


def _direct(kwargs: dict, gate: bool = True) -> tuple[float, dict]:
    """The replay the flow runs, its step functions called directly: load, the same GX
    market-data gate (``gate``), the steps, the outputs. So the flow's time over this one
    is what Prefect adds, not the gate's work."""
    import prefect.context  # noqa: F401  -- imported before timing, as in the flow case

    from tradpal.ledger import Ledger
    from tradpal.replay import ReplayParams, gate_market_data, load_inputs, run_replay, write_outputs

    ledger = Ledger(kwargs["database_url"])  # migrations: outside the timing, as in the flow case
    if gate:
        import great_expectations  # noqa: F401  -- outside the timing, as in the flow case
    cpu = _cpu_seconds()
    t0 = time.perf_counter()
    params = ReplayParams(kwargs["ohlcv"], kwargs["signals"], kwargs["symbol"], kwargs["cash"], kwargs["fee_rate"],
                          kwargs["slippage_bps"], kwargs["out"], kwargs["chunk_signals"])
    inputs = load_inputs(params)
    for _, checked in gate_market_data(inputs, kwargs["out"]) if gate else ():
        checked.raise_for_failure()
    result = asyncio.run(run_replay(params, inputs, ledger, equity_to=kwargs["out"]))  # as the flow does
    write_outputs(kwargs["out"], result.reports, result.summary, result.equity, result.equity_file)
    ledger.finish_run(result.summary["run_id"], "completed", result.summary)
    seconds = time.perf_counter() - t0
    _cpu_since(cpu)
    return seconds, result.summary


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
        t_gx = time.perf_counter()
        import great_expectations  # noqa: F401  -- once per worker process, like the server start
        emit("great_expectations_import", time.perf_counter() - t_gx, "s")
        Ledger(kwargs["database_url"])  # migrations, as the direct run pays them too... once
        cpu = _cpu_seconds()
        t0 = time.perf_counter()
        summary = asyncio.run(paper_replay(**kwargs))
        seconds = time.perf_counter() - t0
        _cpu_since(cpu)
        return seconds, summary


def advanced(mode: str, n_bars: int, n_signals: int) -> None:
    """The advanced simulator through the flow, on one symbol or on ``N_SYMBOLS``."""
    with isolated_prefect() as tmp:
        db = f"sqlite:///{tmp / 'ledger.db'}"
        kwargs: dict = dict(cash=1_000_000.0, fee_rate=0.001, out=str(tmp / "out"), database_url=db,
                            chunk_signals=CHUNK, **ADVANCED)
        if mode == "advanced":
            ohlcv, signals = write_case(tmp / "data", n_bars, n_signals)
            kwargs.update(ohlcv=str(ohlcv), signals=str(signals), symbol="BTC/USDT")
            tag, n_total, n_sig = f"replay_advanced_{n_bars // 1000}k_bars_{n_signals}_signals", n_bars, n_signals
        else:
            markets, signals = _write_markets(tmp / "data", n_bars, n_signals)
            kwargs.update(ohlcv="", symbol="", signals=str(signals), markets=markets)
            n_total, n_sig = N_SYMBOLS * n_bars, N_SYMBOLS * n_signals
            tag = f"replay_advanced_{N_SYMBOLS}x{n_bars // 1000}k_bars_{n_sig}_signals"
        seconds, summary = _flow(kwargs)
        assert summary["n_fills"] > 0.9 * n_sig, summary
        one = mode == "advanced" and n_bars == 1_000_000
        emit(f"{tag}_wall", seconds, "s", "<= 10" if one else None, fills=summary["n_fills"],
             rejected=summary["rejected"], **LAST_CPU)
        emit(f"{tag}_throughput", n_total / seconds, "bars/s")
        emit(f"{tag}_peak_rss", peak_rss_mib(), "MiB", "<= 1024" if one else None)


def _write_markets(directory: Path, n_bars: int, n_signals: int) -> tuple[dict[str, str], Path]:
    """``N_SYMBOLS`` bar files (same timestamps, different paths) and one signals file
    (``n_signals`` per symbol, in time order)."""
    import pandas as pd

    from benchmarks.synthetic import synthetic_bars, synthetic_signals

    directory.mkdir(parents=True, exist_ok=True)
    markets, parts = {}, []
    for i in range(N_SYMBOLS):
        symbol = f"S{i}/USDT"
        bars = synthetic_bars(n_bars, seed=100 + i)
        path = directory / f"bars_{i}.parquet"
        bars.to_parquet(path)
        markets[symbol] = str(path)
        sig = synthetic_signals(bars, n_signals, symbol=symbol, seed=200 + i)
        parts.append(sig.assign(signal_id=[f"{i}-{k}" for k in range(n_signals)]))
        del bars
    signals = pd.concat(parts, ignore_index=True).sort_values("timestamp", kind="stable", ignore_index=True)
    path = directory / "signals.parquet"
    signals.to_parquet(path)
    return markets, path


def lower_bound(ohlcv: str, signals: str, out: Path, *, cash: float, fee_rate: float, bps: float) -> dict:
    """Next-open fills of market signals, vectorised: each signal fills at the open of
    the first bar after it, moved by ``bps``, in file order; equity per bar. Valid when
    no signal is refused (asserted: cash and position never go negative) and every
    signal has a later bar. Writes fills.csv, equity.csv and summary.json like the replay."""
    import json

    import numpy as np
    import pandas as pd

    from tradpal.io import load_ohlcv, load_signals
    from tradpal.replay import iso_utc, max_drawdown, write_numeric_csv

    bars, sig = load_ohlcv(ohlcv), load_signals(signals)
    ts = bars["timestamp"].to_numpy("datetime64[ns]").view("int64")
    opens, closes = bars["open"].to_numpy("float64"), bars["close"].to_numpy("float64")
    at = np.searchsorted(ts, sig["timestamp"].to_numpy("datetime64[ns]").view("int64"), side="right")
    assert at.max() < len(ts), "a signal without a later bar"
    buy = (sig["side"] == "buy").to_numpy()
    qty = sig["quantity"].to_numpy("float64")
    price = opens[at] * np.where(buy, 1 + bps / 1e4, 1 - bps / 1e4)
    fee = fee_rate * qty * price
    cash_delta = np.where(buy, -(qty * price + fee), qty * price - fee)
    held_delta = np.where(buy, qty, -qty)
    assert (cash + np.cumsum(cash_delta)).min() >= 0 and np.cumsum(held_delta).min() >= -1e-12
    cash_bar = cash + np.cumsum(np.bincount(at, weights=cash_delta, minlength=len(ts)))
    held_bar = np.cumsum(np.bincount(at, weights=held_delta, minlength=len(ts)))
    equity = cash_bar + held_bar * closes
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"timestamp": iso_utc(bars["timestamp"].iloc[at]), "signal_id": sig["signal_id"],
                  "side": sig["side"], "quantity": qty, "price": price, "fee": fee}).to_csv(out / "fills.csv",
                                                                                            index=False)
    write_numeric_csv(pd.DataFrame({"timestamp": bars["timestamp"], "cash": cash_bar,
                                    "position_value": held_bar * closes, "equity": equity}), out / "equity.csv")
    summary = {"n_fills": len(sig), "total_fees": float(fee.sum()), "final_cash": float(cash_bar[-1]),
               "final_position": float(held_bar[-1]), "final_equity": float(equity[-1]),
               "max_drawdown": max_drawdown(equity)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return {**summary, "price": price, "fee": fee, "signal_id": sig["signal_id"].to_numpy()}


def lower_bound_case(n_bars: int, n_signals: int) -> None:
    import numpy as np

    with isolated_prefect() as tmp:
        ohlcv, signals = write_case(tmp / "data", n_bars, n_signals)
        import tradpal.replay  # noqa: F401  -- imported before timing, as the other modes do
        cpu = _cpu_seconds()
        t0 = time.perf_counter()
        bound = lower_bound(str(ohlcv), str(signals), tmp / "out", cash=1_000_000.0, fee_rate=0.001, bps=1.0)
        seconds = time.perf_counter() - t0
        bound_cpu = dict(_cpu_since(cpu))
        rss = peak_rss_mib()
        kwargs = dict(ohlcv=str(ohlcv), signals=str(signals), symbol="BTC/USDT", cash=1_000_000.0, fee_rate=0.001,
                      slippage_bps=1.0, out=str(tmp / "pipeline"), database_url=f"sqlite:///{tmp / 'l.db'}",
                      chunk_signals=CHUNK)
        _, summary = _direct(kwargs, gate=False)  # the check, outside the timing
        import pandas as pd

        fills = pd.read_csv(tmp / "pipeline" / "fills.csv")
        same = (fills["signal_id"].astype(str).tolist() == list(bound["signal_id"])
                and np.allclose(fills["price"], bound["price"], rtol=1e-9, atol=0)
                and np.allclose(fills["fee"], bound["fee"], rtol=1e-9, atol=0)
                and abs(summary["final_equity"] / bound["final_equity"] - 1) < 1e-9)
        assert same, "the lower bound's fills differ from the pipeline's"
        tag = f"replay_lower_bound_{n_bars // 1000}k_bars_{n_signals}_signals"
        emit(f"{tag}_wall", seconds, "s", None, matches_pipeline=same, **bound_cpu)
        emit(f"{tag}_peak_rss", rss, "MiB")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0], *(int(a) for a in args[1:]))
