"""The event-triggered deployment path: ``tradpal.signal.received`` emitted -> the
``live-execution`` run it triggers is Completed, on the stack `make up` starts (server,
worker polling every 0.5 s, deployments from prefect.yaml), one event at a time.
Reports p50/p99 and where the time goes (p50 of each part):

- to_fired:   event emitted -> the automation fired (``prefect.automation.triggered``)
- to_created: fired -> the run created (Scheduled) by the automation's run-deployment action
- to_pending: created -> Pending (the worker's poll found it)
- to_running: Pending -> Running (warm worker: a thread in its own process; process worker:
              a new Python that imports Prefect and the flow, loads the deployment, pulls)
- run:        Running -> Completed (the flow: ledger, broker, eight task runs, artifacts)

    python -m benchmarks.events [N] [sqlite|postgresql] [--worker warm|process] [--gap S]
"""

from __future__ import annotations

import argparse
import asyncio
import os
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


PARTS = ("to_fired", "to_created", "to_pending", "to_running", "run")


async def _fired_at(client, since: float) -> float | None:
    """When the automation fired for the event emitted at ``since`` (its
    ``prefect.automation.triggered`` event; events are sent one at a time)."""
    from datetime import UTC, datetime, timedelta

    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

    page = await client.read_events(EventFilter(
        occurred=EventOccurredFilter(since=datetime.fromtimestamp(since - 0.05, UTC),
                                     until=datetime.now(UTC) + timedelta(seconds=5)),
        event=EventNameFilter(name=["prefect.automation.triggered"]), order="ASC"), limit=5)
    times = [e.occurred.timestamp() for e in page.events if e.occurred.timestamp() >= since - 0.05]
    return min(times) if times else None


async def _measure(api_url: str, n: int, gap: float = 0.0) -> dict[str, np.ndarray]:
    """``n`` events one at a time (the next one ``gap`` s after the previous run is final):
    per event, the total and where it went, from the run's state history (Scheduled when
    the automation created it, Pending when the worker took it, Running when the flow's
    engine started, Completed) and the automation's own event."""
    from prefect.client.orchestration import PrefectClient

    from tradpal.signals import emit_signal, validate_signal

    out: dict[str, list[float]] = {"total": [], **{part: [] for part in PARTS}}
    async with PrefectClient(api_url) as client:
        for i in range(n + 1):  # the first one warms up the emitter and the worker
            if i and gap:
                await asyncio.sleep(gap)
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
            states = {s.type.value: s.timestamp.timestamp() for s in await client.read_flow_run_states(run.id)}
            created, end = run.created.timestamp(), run.end_time.timestamp()
            fired = await _fired_at(client, t0)
            out["total"].append(end - t0)
            out["to_fired"].append((fired if fired is not None else created) - t0)
            out["to_created"].append(created - (fired if fired is not None else t0))
            out["to_pending"].append(states["PENDING"] - created)
            out["to_running"].append(states["RUNNING"] - states["PENDING"])
            out["run"].append(end - states["RUNNING"])
            print(" ".join(f"{k}={v[-1]:.3f}" for k, v in out.items()), sid, file=sys.stderr, flush=True)
    return {k: np.asarray(v) for k, v in out.items()}


def main(n: int = 12, database: str = "sqlite", worker: str = "warm", gap: float = 0.0,
         query_seconds: float = 0.5) -> None:
    from deployments.stack import StackConfig, down, up

    if database == "postgresql":
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", 5432)) != 0:
                print("events: no PostgreSQL on 127.0.0.1:5432, skipped", file=sys.stderr)
                return
    with isolated_prefect() as tmp:
        config = StackConfig(dir=tmp / "stack", port=_free_port(), database=database, worker=worker,
                             query_seconds=query_seconds, db_prefix=f"tp_bench_{uuid.uuid4().hex[:6]}")
        config.extra_env = {"TRADPAL_DATABASE_URL": config.ledger_url() or f"sqlite:///{tmp / 'ledger.db'}",
                            "PREFECT_LOGGING_LEVEL": "WARNING"}
        t0 = time.perf_counter()
        stack = up(config, timeout=240)
        emit(f"events_stack_up_{database}_wall", time.perf_counter() - t0, "s")
        from prefect.settings import PREFECT_API_URL, temporary_settings

        try:
            with temporary_settings({PREFECT_API_URL: stack.api_url}):
                times = asyncio.run(_measure(stack.api_url, n, gap))
        finally:
            down(config.dir)
            if database == "postgresql":
                _drop(config)
    tag = f"{database}_{worker}" + (f"_gap{gap:g}" if gap else "") + (f"_q{query_seconds:g}" if query_seconds != 0.5 else "")
    total = times["total"]
    load = os.getloadavg()[0]
    emit(f"events_emit_to_completed_{tag}_p50", float(np.percentile(total, 50)), "s", "<= 3", n=n, load=round(load, 1))
    emit(f"events_emit_to_completed_{tag}_p99", float(np.percentile(total, 99)), "s", None, n=n)
    for part in PARTS:
        emit(f"events_{part}_{tag}_p50", float(np.percentile(times[part], 50)), "s")


def _drop(config) -> None:
    import psycopg

    with psycopg.connect(f"postgresql://{config.postgres}/postgres", autocommit=True) as conn:
        for db in (f"{config.db_prefix}_prefect", f"{config.db_prefix}_ledger"):
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.events")
    parser.add_argument("n", nargs="?", type=int, default=12)
    parser.add_argument("database", nargs="?", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--worker", choices=["warm", "process"], default="warm")
    parser.add_argument("--gap", type=float, default=0.0, help="seconds between a run's end and the next event")
    parser.add_argument("--query-seconds", type=float, default=0.5, help="the worker's poll interval")
    args = parser.parse_args()
    main(args.n, args.database, args.worker, args.gap, args.query_seconds)
