"""The event-triggered deployment path: ``tradpal.signal.received`` emitted -> the
``live-execution`` run it triggers is Completed, on the stack `make up` starts (server,
process worker polling every 1 s, deployments from prefect.yaml), one event at a time.
Reports p50/p99 and where the time goes (event -> run created by the automation,
created -> started by the worker's new process, started -> Completed).

    python -m benchmarks.events [N] [sqlite|postgresql]    # default 12 events, sqlite
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
import uuid

import numpy as np

from benchmarks.common import emit, isolated_prefect


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _wait_run(client, signal_id: str, timeout: float = 120.0):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(like_=signal_id)))
        if runs and runs[0].state and runs[0].state.is_final():
            return runs[0]
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no final run for {signal_id} after {timeout} s")


async def _measure(api_url: str, n: int) -> dict[str, np.ndarray]:
    from prefect.client.orchestration import PrefectClient

    from tradpal.signals import emit_signal, validate_signal

    out: dict[str, list[float]] = {"total": [], "to_created": [], "to_start": [], "run": []}
    async with PrefectClient(api_url) as client:
        for i in range(n + 1):  # the first one warms up the emitter and the worker
            sid = f"bench-ev-{uuid.uuid4().hex[:8]}"
            signal = validate_signal({"symbol": "BTC/USDT", "side": "buy", "quantity": 0.001,
                                      "reference_price": 50_000.0, "signal_id": sid, "strategy": "bench"})
            t0 = time.time()
            emit_signal(signal)
            run = await _wait_run(client, sid)
            if run.state_name != "Completed":
                raise RuntimeError(f"run {run.name} ended {run.state_name}: {run.state.message}")
            if i == 0:
                continue
            end = run.end_time.timestamp()
            out["total"].append(end - t0)
            out["to_created"].append(run.created.timestamp() - t0)
            out["to_start"].append(run.start_time.timestamp() - run.created.timestamp())
            out["run"].append(end - run.start_time.timestamp())
    return {k: np.asarray(v) for k, v in out.items()}


def main(n: int = 12, database: str = "sqlite") -> None:
    from deployments.stack import StackConfig, down, up

    if database == "postgresql":
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", 5432)) != 0:
                print("events: no PostgreSQL on 127.0.0.1:5432, skipped", file=sys.stderr)
                return
    with isolated_prefect() as tmp:
        config = StackConfig(dir=tmp / "stack", port=_free_port(), database=database,
                             db_prefix=f"tp_bench_{uuid.uuid4().hex[:6]}")
        config.extra_env = {"TRADPAL_DATABASE_URL": config.ledger_url() or f"sqlite:///{tmp / 'ledger.db'}",
                            "PREFECT_LOGGING_LEVEL": "WARNING"}
        t0 = time.perf_counter()
        stack = up(config, timeout=240)
        emit(f"events_stack_up_{database}_wall", time.perf_counter() - t0, "s")
        from prefect.settings import PREFECT_API_URL, temporary_settings

        try:
            with temporary_settings({PREFECT_API_URL: stack.api_url}):
                times = asyncio.run(_measure(stack.api_url, n))
        finally:
            down(config.dir)
            if database == "postgresql":
                _drop(config)
    total = times["total"]
    emit(f"events_emit_to_completed_{database}_p50", float(np.percentile(total, 50)), "s", "<= 3", n=n)
    emit(f"events_emit_to_completed_{database}_p99", float(np.percentile(total, 99)), "s", None, n=n)
    for part in ("to_created", "to_start", "run"):
        emit(f"events_{part}_{database}_p50", float(np.percentile(times[part], 50)), "s")


def _drop(config) -> None:
    import psycopg

    with psycopg.connect(f"postgresql://{config.postgres}/postgres", autocommit=True) as conn:
        for db in (f"{config.db_prefix}_prefect", f"{config.db_prefix}_ledger"):
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 12, sys.argv[2] if len(sys.argv) > 2 else "sqlite")
