"""Live latency: one signal at a time through the eight Prefect tasks inside an
already-running flow, paper broker on the wall clock, contracts on, SQLite ledger.
Reports p50/p99 over N signals (default 1,000) of signal-in -> broker acknowledgement
(placement done) and of the whole eight steps.

    python -m benchmarks.latency [N]
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time

import numpy as np
import pandas as pd

from benchmarks.common import emit, isolated_prefect


async def _signals_through(n: int, db: str, use_prefect: bool,
                           watch: FullCollections | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    from brokers.base.clock import WallClock
    from brokers.paper import PaperBroker
    from tasks.context import Book, ExecutionContext, MarketData, PipelineConfig
    from tasks.pipeline import STEPS, run_batch, run_step
    from tasks.prefect_tasks import task_caller
    from tasks.recorder import LedgerRecorder
    from tradpal.ledger import Ledger

    ledger = Ledger(db)
    clock = WallClock()
    broker = PaperBroker(cash=1e9, quote_currency="USDT", clock=clock, name="paper-bench")
    broker.set_price("BTC/USDT", 50_000.0)
    ctx = ExecutionContext(broker=broker, clock=clock, config=PipelineConfig(), market=MarketData(),
                           book=Book(cash=1e9, quote_currency="USDT"), recorder=None, run_id="bench",
                           namespace="bench", strategy="bench")
    ledger.start_run("live", {}, run_id="bench")
    ctx.recorder = LedgerRecorder(ledger, run_id="bench", namespace="bench", venue=broker.name)
    acks, totals = [], []
    base_call = task_caller("bench") if use_prefect else run_step
    placement_done: list[float] = []

    async def call(step, frame, c):
        out = await base_call(step, frame, c)
        if step is STEPS[4]:
            placement_done.append(time.perf_counter())
        return out

    gc.collect()
    gc.freeze()  # a long-lived live process freezes its start-up objects: fewer full collections
    if watch is not None:  # from here: the collection just above walked the whole start-up heap, once
        watch.active = True
    for i in range(n):
        side = "buy" if i % 2 == 0 else "sell"
        signal = pd.DataFrame([{"timestamp": pd.Timestamp.now(tz="UTC"), "symbol": "BTC/USDT", "side": side,
                                "quantity": 0.01, "signal_id": f"lat-{i}"}])
        t0 = time.perf_counter()
        await run_batch(signal, ctx, call=call)
        t1 = time.perf_counter()
        acks.append(placement_done[-1] - t0)
        totals.append(t1 - t0)
    return np.array(acks) * 1e3, np.array(totals) * 1e3, dict(ctx.step_seconds)


class FullCollections:
    """The durations of the garbage collector's full (generation-2) collections while
    active: in a long-lived flow they are what the p99 is made of."""

    def __init__(self) -> None:
        self.ms: list[float] = []
        self._t0 = 0.0
        self.active = False

    def __call__(self, phase: str, info: dict) -> None:
        if not self.active or info.get("generation") != 2:
            return
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.ms.append((time.perf_counter() - self._t0) * 1e3)


def main(n: int = 1000) -> None:
    full = FullCollections()
    gc.callbacks.append(full)
    with isolated_prefect() as tmp:
        from prefect import flow
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

        from tradpal.config import load_settings
        from tradpal.live import favour_the_steps

        db = f"sqlite:///{tmp / 'ledger.db'}"
        tuned: dict = {}

        @flow(name="latency-bench")
        async def bench() -> tuple:
            # as a live run does (tradpal.live.start_session): TRADPAL_GIL_SWITCH_MS, TRADPAL_API_SERVER_NICE
            tuned.update(favour_the_steps(load_settings()))
            try:
                return await _signals_through(n, db, use_prefect=True, watch=full)
            finally:
                full.active = False

        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            acks, totals, steps = asyncio.run(bench())
        direct_acks, direct_totals, _ = asyncio.run(_signals_through(n, f"sqlite:///{tmp / 'direct.db'}", False))
        emit("live_eight_tasks_p50", float(np.percentile(totals, 50)), "ms", "<= 50", tuned=tuned)
        emit("live_eight_tasks_p99", float(np.percentile(totals, 99)), "ms", "<= 100", tuned=tuned)
        emit("live_signal_to_ack_p50", float(np.percentile(acks, 50)), "ms", "<= 50")
        emit("live_signal_to_ack_p99", float(np.percentile(acks, 99)), "ms", "<= 100")
        emit("live_eight_steps_direct_p50", float(np.percentile(direct_totals, 50)), "ms", None)
        # full collections during the eight-task run: their count, the longest and the median (what
        # the p99 is made of: tasks.prefect_tasks.forget_dead_results, README "What changed the live figures")
        emit("live_gc_full_collections_max", max(full.ms, default=0.0), "ms", None, count=len(full.ms),
             median=round(float(np.median(full.ms)), 1) if full.ms else None)
        for name, secs in steps.items():
            emit(f"live_step_{name}_mean", secs / n * 1e3, "ms", None)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
