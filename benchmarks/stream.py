"""Streaming live mode (`tradpal live run`), measured from outside, over HTTP.

    python -m benchmarks.stream latency [N]       one signal at a time, paper broker, contracts on:
                                                  intake in -> exchange acknowledgement (the HTTP
                                                  answer), p50/p99 over N (default 500)
    python -m benchmarks.stream load [RATE] [S]   RATE signals/s (default 100) for S seconds (default
                                                  60), open loop, against the exchange emulator
                                                  through the real ccxt client: p50/p99, throughput,
                                                  loss (a signal without exactly one outcome in the
                                                  ledger), SQLite ledger
    python -m benchmarks.stream two-workers [RATE] [S]
                                                  the same with two `tradpal live run` workers on one
                                                  PostgreSQL ledger (127.0.0.1:5432), every signal
                                                  sent to both: one order per signal

``TRADPAL_BENCH_BATCH_INTERVAL=S`` starts the workers with ``--batch-interval S``.

The service under test runs in its own process (`tradpal live run`, its own ephemeral
Prefect API); the load generator and the emulator run in others.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from benchmarks.common import emit

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample" / "BITTREX_ETH-BTC_5m.csv"
API_KEY, SECRET = "bench-key", "bench-secret-" + uuid.uuid4().hex
TRADPAL = [sys.executable, "-m", "tradpal.cli"]


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PREFECT_HOME": str(tmp / f"prefect-{uuid.uuid4().hex[:6]}"),
           "PREFECT_LOGGING_LEVEL": "ERROR", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
           "PYTHONPATH": str(REPO)}
    env.update(extra)
    return env


def _wait_file(path: Path, proc: subprocess.Popen, timeout: float = 180) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        if proc.poll() is not None:
            log = path.parent / "worker.log"
            tail = log.read_text()[-800:] if log.exists() else ""
            raise RuntimeError(f"{proc.args[3:5]} exited with {proc.returncode} before it was ready: {tail}")
        time.sleep(0.05)
    raise TimeoutError(f"not ready after {timeout}s: {path}")


def start_worker(tmp: Path, symbol: str, db: str, env: dict[str, str], *prices: str,
                 shared: bool = False) -> tuple[subprocess.Popen, int]:
    quote = symbol.split("/")[1]
    ready = tmp / f"ready-{uuid.uuid4().hex[:6]}"
    argv = [*TRADPAL, "live", "run", "--symbol", symbol, "--port", "0", "--ready-file", str(ready),
            "--database-url", db, "--cash", "1e9", "--quote", quote, *(["--shared-account"] if shared else []), *sum((["--price", p] for p in prices), []),
            *(["--batch-interval", os.environ["TRADPAL_BENCH_BATCH_INTERVAL"]] if os.environ.get("TRADPAL_BENCH_BATCH_INTERVAL") else [])]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / "worker.log", "ab"))  # noqa: SIM115 - the child keeps it
    return proc, int(_wait_file(ready, proc))


def stop_worker(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()


def start_emulator(tmp: Path) -> tuple[subprocess.Popen, str]:
    log = tmp / "emulator.out"
    argv = [*TRADPAL, "exchange-emulator", "--venue", "binance", "--port", "0", "--api-key", API_KEY,
            "--secret", SECRET, "--ohlcv", f"ETH/BTC={SAMPLE}", "--balance", "BTC=100000", "--balance", "ETH=100000"]
    proc = subprocess.Popen(argv, env=_env(tmp), stdout=open(log, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115
    end = time.monotonic() + 60
    while time.monotonic() < end:
        for line in log.read_text().splitlines():
            if "TRADPAL_EXCHANGE_URL=" in line:
                return proc, line.split("TRADPAL_EXCHANGE_URL=")[1].split()[0]
        if proc.poll() is not None:
            raise RuntimeError("the emulator exited: " + log.read_text()[-500:])
        time.sleep(0.05)
    raise TimeoutError("the emulator did not start")


def venue_env(url: str) -> dict[str, str]:
    # ccxt's limiter off: the emulator limits nothing, and Binance's budget (~20 requests/s) is
    # far below 100 signals/s x ~6 requests; what is measured is our pipeline, not a venue's limit
    return {"TRADPAL_BROKER": "ccxt", "TRADPAL_EXCHANGE": "binance", "TRADPAL_EXCHANGE_URL": url,
            "TRADPAL_API_KEY": API_KEY, "TRADPAL_API_SECRET": SECRET, "TRADPAL_CCXT_RATE_LIMIT": "false"}


async def sequential(port: int, n: int, symbol: str, qty: float, gap_s: float = 0.0) -> np.ndarray:
    """One signal at a time, the next sent ``gap_s`` after the previous answer (0: at once)."""
    import aiohttp

    lat = []
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", timeout=aiohttp.ClientTimeout(total=60)) as client:
        for i in range(n):
            if gap_s:
                await asyncio.sleep(gap_s)
            body = {"symbol": symbol, "side": "buy" if i % 2 == 0 else "sell", "quantity": qty,
                    "signal_id": f"lat-{uuid.uuid4().hex[:10]}"}
            t0 = time.perf_counter()
            async with client.post("/signals", json=body) as r:
                answer = await r.json()
            lat.append(time.perf_counter() - t0)
            if r.status != 202 or not answer["results"][0]["accepted"]:
                raise RuntimeError(f"signal refused: {r.status} {str(answer)[:200]}")
    return np.array(lat) * 1e3


async def open_loop(ports: list[int], rate: float, seconds: float, symbol: str, qty: float) -> tuple[list, list, float]:
    """Send ``rate`` signals/s on schedule (not waiting for answers), each to every port;
    (signal ids, answers per signal: (latency ms, [results]), wall seconds). The client is
    aiohttp's (httpx cost ~3x the CPU per request: on 2 cores the load generator would take
    the service's share)."""
    import aiohttp

    clients = [aiohttp.ClientSession(f"http://127.0.0.1:{p}", timeout=aiohttp.ClientTimeout(total=120),
                                     connector=aiohttp.TCPConnector(limit=2000)) for p in ports]
    ids, tasks = [], []

    async def post(client, body):
        async with client.post("/signals", json=body) as r:
            return r.status, await r.json(content_type=None)

    async def send(i: int, sid: str):
        body = {"symbol": symbol, "side": "buy" if i % 2 == 0 else "sell", "quantity": qty, "signal_id": sid}
        t0 = time.perf_counter()
        answers = await asyncio.gather(*(post(c, body) for c in clients), return_exceptions=True)
        lat = (time.perf_counter() - t0) * 1e3
        results = []
        for a in answers:
            if isinstance(a, BaseException) or a[0] != 202:
                results.append({"accepted": False, "status": "LOST", "reason": repr(a)[:200]})
            else:
                results.append(a[1]["results"][0])
        return lat, results

    start = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        sid = f"load-{i}-{uuid.uuid4().hex[:8]}"
        ids.append(sid)
        tasks.append(asyncio.ensure_future(send(i, sid)))
    answers = await asyncio.gather(*tasks)
    wall = time.perf_counter() - start
    for c in clients:
        await c.close()
    return ids, answers, wall


def ledger_outcomes(db: str, ids: list[str]) -> tuple[int, int]:
    """(signals with no outcome in the ledger — neither an order nor a rejection —, signals
    with more than one order). A re-delivery's "already received" rejection beside the
    signal's order is expected (two workers), not a second outcome of the signal."""
    from tradpal.ledger import Ledger

    ledger = Ledger(db)
    signals = ledger.frame("signals")[["id", "signal_id"]]
    orders = ledger.frame("orders").merge(signals, left_on="signal_pk", right_on="id")
    per_signal = orders["signal_id"].value_counts()
    refused = set(ledger.frame("rejections")["signal_id"])
    lost = sum(1 for sid in ids if sid not in per_signal.index and sid not in refused)
    return lost, int((per_signal.reindex(ids).fillna(0) > 1).sum())


PACED_GAP_S = 0.1


def latency(n: int = 500) -> None:
    """Two ways of sending one signal at a time: back to back (the next signal as soon as
    the previous answer is in: it meets the previous signal's steps 6-8, which run after the
    answer) and paced (the next one 100 ms after the answer: the stream is idle when it
    arrives, as with a strategy that trades a few times a second or less)."""
    with tempfile.TemporaryDirectory(prefix="tradpal-bench-") as t:
        tmp = Path(t)
        proc, port = start_worker(tmp, "BTC/USDT", f"sqlite:///{tmp / 'ledger.db'}", _env(tmp), "BTC/USDT=50000")
        try:
            asyncio.run(sequential(port, 30, "BTC/USDT", 0.01))  # warm-up
            back_to_back = asyncio.run(sequential(port, n, "BTC/USDT", 0.01))
            paced = asyncio.run(sequential(port, n, "BTC/USDT", 0.01, gap_s=PACED_GAP_S))
        finally:
            stop_worker(proc)
    for name, lat, extra in (("stream_signal_to_ack", back_to_back, {"sending": "back to back"}),
                             ("stream_signal_to_ack_paced", paced, {"sending": f"{PACED_GAP_S * 1e3:g} ms after the answer"})):
        emit(f"{name}_p50", float(np.percentile(lat, 50)), "ms", "<= 50", n=n, **extra)
        emit(f"{name}_p99", float(np.percentile(lat, 99)), "ms", "<= 100", n=n, **extra)


def _report(prefix: str, ids: list, answers: list, wall: float, lost: int, doubled: int, rate: float) -> None:
    lat = np.array([a[0] for a in answers])
    acked = sum(1 for _, rs in answers if any(r.get("accepted") and r.get("status") != "PENDING" for r in rs))
    emit(f"{prefix}_p50", float(np.percentile(lat, 50)), "ms", None, rate=rate)
    emit(f"{prefix}_p99", float(np.percentile(lat, 99)), "ms", "<= 250", rate=rate)
    emit(f"{prefix}_throughput", len(ids) / wall, "signals/s", f">= {rate:g}")
    emit(f"{prefix}_acked", acked, "signals", len(ids))
    outcomes: dict[str, int] = {}
    for _, rs in answers:
        for r in rs:
            key = r.get("status", "?") + (f": {r['reason'][:80]}" if r.get("reason") else "")
            outcomes[key] = outcomes.get(key, 0) + 1
    emit(f"{prefix}_outcomes", len(outcomes), "kinds", None, outcomes=dict(sorted(outcomes.items())[:8]))
    emit(f"{prefix}_lost", lost, "signals", 0)
    emit(f"{prefix}_doubled_orders", doubled, "signals", 0)


def load(rate: float = 100.0, seconds: float = 60.0) -> None:
    with tempfile.TemporaryDirectory(prefix="tradpal-bench-") as t:
        tmp = Path(t)
        emu, url = start_emulator(tmp)
        db = f"sqlite:///{tmp / 'ledger.db'}"
        try:
            proc, port = start_worker(tmp, "ETH/BTC", db, _env(tmp, **venue_env(url)))
            try:
                ids, answers, wall = asyncio.run(open_loop([port], rate, seconds, "ETH/BTC", 0.01))
            finally:
                stop_worker(proc)
            lost, doubled = ledger_outcomes(db, ids)
        finally:
            emu.terminate()
    _report("stream_load_emulator", ids, answers, wall, lost, doubled, rate)


def two_workers(rate: float = 100.0, seconds: float = 60.0) -> None:
    import psycopg

    name = f"tradpal_bench_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True, connect_timeout=3) as c:
            c.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        emit("stream_two_workers_skipped", 0, "n/a", None, reason=f"no PostgreSQL at 127.0.0.1:5432: {exc}"[:200])
        return
    db = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        with tempfile.TemporaryDirectory(prefix="tradpal-bench-") as t:
            tmp = Path(t)
            emu, url = start_emulator(tmp)
            try:
                from tradpal.ledger import Ledger

                Ledger(db)  # migrate once, before two workers race to
                workers = [start_worker(tmp, "ETH/BTC", db, _env(tmp, **venue_env(url)), shared=True) for _ in range(2)]
                try:
                    ids, answers, wall = asyncio.run(open_loop([p for _, p in workers], rate, seconds, "ETH/BTC", 0.01))
                finally:
                    for proc, _ in workers:
                        stop_worker(proc)
                lost, doubled = ledger_outcomes(db, ids)
            finally:
                emu.terminate()
        both = sum(1 for _, rs in answers if sum(bool(r.get("order_id")) for r in rs) > 1)
        _report("stream_two_workers_pg", ids, answers, wall, lost, doubled, rate)
        emit("stream_two_workers_pg_both_placed", both, "signals", 0)
    finally:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    mode, *rest = sys.argv[1:] or ["latency"]
    {"latency": lambda: latency(*(int(a) for a in rest)),
     "load": lambda: load(*(float(a) for a in rest)),
     "two-workers": lambda: two_workers(*(float(a) for a in rest))}[mode]()
