"""Live latency against a venue over HTTP: one signal at a time through the eight Prefect
tasks inside an already-running flow, ``CcxtBroker`` (the real ccxt binance client,
signing every request) -> the exchange emulator in its own process on 127.0.0.1
(``tradpal exchange-emulator``), contracts on, SQLite ledger. Reports p50/p99 over N
signals (default 1,000) of signal-in -> exchange acknowledgement (placement done) and of
the eight steps, and how many HTTP requests one signal costs.

    python -m benchmarks.ccxt_latency [N] [--gate]

``--gate``: every request also takes a slot of the per-account Prefect rate limit
(``tradpal.venue_limits``; the binance profile's 50/s, bursts of 100), as a live run
configured by ``brokers.factory`` does.
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import emit, isolated_prefect

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample" / "BITTREX_ETH-BTC_5m.csv"
SYMBOL, QUOTE = "ETH/BTC", "BTC"
API_KEY, SECRET = "bench-key", "bench-secret-not-a-real-one"


def start_emulator() -> tuple[subprocess.Popen, str]:
    """The emulator in its own process (as a venue is); its base URL."""
    tradpal = Path(sys.executable).with_name("tradpal")
    cmd = [str(tradpal), "exchange-emulator", "--venue", "binance", "--port", "0", "--api-key", API_KEY,
           "--ohlcv", f"{SYMBOL}={SAMPLE}", "--balance", "BTC=1000", "--balance", "ETH=1000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "TRADPAL_EMULATOR_SECRET": SECRET})
    assert proc.stdout is not None
    for line in proc.stdout:
        found = re.search(r"at (http://127\.0\.0\.1:\d+)", line)
        if found:
            return proc, found.group(1)
    proc.kill()
    raise RuntimeError("the exchange emulator did not start")


async def _signals_through(n: int, db: str, base_url: str, gate: bool) -> tuple[np.ndarray, np.ndarray, dict, int]:
    import httpx

    from brokers.base.clock import WallClock
    from brokers.ccxt import CcxtBroker
    from tasks.context import ExecutionContext, PipelineConfig
    from tasks.pipeline import STEPS, run_batch
    from tasks.prefect_tasks import task_caller
    from tasks.recorder import LedgerRecorder
    from tradpal.ledger import Ledger
    from tradpal.live import last_prices, opening_book
    from tradpal.venue_limits import PrefectRateGate, VenueRateLimit, limit_name

    request_gate = None
    if gate:
        request_gate = PrefectRateGate(VenueRateLimit(limit_name("bench", API_KEY), 50.0, 100))
    broker = CcxtBroker("binance", api_key=API_KEY, secret=SECRET, base_url=base_url, quote_currency=QUOTE,
                        name="binance-bench", request_gate=request_gate)
    await broker.connect()
    ledger, clock = Ledger(db), WallClock()
    prices = await broker.get_last_prices([SYMBOL])
    ctx = ExecutionContext(broker=broker, clock=clock, config=PipelineConfig(rules={SYMBOL: PipelineConfig().default_rules}),
                           market=last_prices(prices, clock.now()),
                           book=opening_book(await broker.get_account_info(), QUOTE, prices),
                           recorder=None, run_id="bench", namespace="bench", strategy="bench")
    ledger.start_run("live", {}, run_id="bench")
    ctx.recorder = LedgerRecorder(ledger, run_id="bench", namespace="bench", venue=broker.name)
    base_call, placed = task_caller("bench"), []

    async def call(step, frame, c):
        out = await base_call(step, frame, c)
        if step is STEPS[4]:
            placed.append(time.perf_counter())
        return out

    async with httpx.AsyncClient(base_url=base_url) as admin:
        before = (await admin.get("/admin/state")).json()["requests"]
        acks, totals = [], []
        gc.collect()
        gc.freeze()
        for i in range(n):
            signal = pd.DataFrame([{"timestamp": pd.Timestamp.now(tz="UTC"), "symbol": SYMBOL,
                                    "side": "buy" if i % 2 == 0 else "sell", "quantity": 0.1,
                                    "signal_id": f"ccxt-lat-{i}"}])
            t0 = time.perf_counter()
            await run_batch(signal, ctx, call=call)
            totals.append(time.perf_counter() - t0)
            acks.append(placed[-1] - t0)
        state = (await admin.get("/admin/state")).json()
    await broker.close()
    if state["orders"] != n:
        raise RuntimeError(f"expected {n} orders at the emulator, found {state['orders']}")
    per_signal = (state["requests"] - before) // n
    return np.array(acks) * 1e3, np.array(totals) * 1e3, dict(ctx.step_seconds), per_signal


def main(n: int = 1000, gate: bool = False) -> None:
    proc, base_url = start_emulator()
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")  # a loaded machine
    try:
        with isolated_prefect() as tmp:
            from prefect import flow
            from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

            @flow(name="ccxt-latency-bench")
            async def bench() -> tuple:
                return await _signals_through(n, f"sqlite:///{tmp / 'ledger.db'}", base_url, gate)

            with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
                acks, totals, steps, per_signal = asyncio.run(bench())
    finally:
        proc.terminate()
        proc.wait(10)
    tag = "ccxt_gated" if gate else "ccxt"
    emit(f"live_{tag}_signal_to_ack_p50", float(np.percentile(acks, 50)), "ms", "<= 60", signals=n)
    emit(f"live_{tag}_signal_to_ack_p99", float(np.percentile(acks, 99)), "ms", "<= 150", signals=n)
    emit(f"live_{tag}_eight_tasks_p50", float(np.percentile(totals, 50)), "ms", None, signals=n)
    emit(f"live_{tag}_eight_tasks_p99", float(np.percentile(totals, 99)), "ms", None, signals=n)
    emit(f"live_{tag}_requests_per_signal", per_signal, "requests", None)
    for name, secs in steps.items():
        emit(f"live_{tag}_step_{name}_mean", secs / n * 1e3, "ms", None)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--gate"]
    main(*(int(a) for a in args), gate="--gate" in sys.argv[1:])
