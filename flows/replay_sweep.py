"""Replay sweep: many paper replays (symbols x parameter sets), one task each, fanned out
through `prefect-dask`'s `DaskTaskRunner`: a local `distributed.LocalCluster` by default,
an existing Dask scheduler with ``TRADPAL_DASK_ADDRESS`` (or ``address=``). The replays
are `tradpal.replay`'s, unchanged (`tradpal.sweep`); the results are gathered into one
table (a Prefect table artifact and ``out/sweep.csv``)."""

from __future__ import annotations

import os

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait
from prefect_dask import DaskTaskRunner

from tradpal.config import load_settings
from tradpal.errors import InputError
from tradpal.ledger import Ledger
from tradpal.sweep import Market, SweepCase, check_markets, plan_sweep, run_case, sweep_table, write_table


def dask_task_runner(address: str | None = None, workers: int | None = None) -> DaskTaskRunner:
    """The sweep's task runner: the scheduler at ``address`` (default
    ``TRADPAL_DASK_ADDRESS``), else a LocalCluster on 127.0.0.1 with ``workers`` single-
    threaded worker processes (default ``TRADPAL_DASK_WORKERS``, else one per core)."""
    settings = load_settings()
    address = address or settings.dask_address
    if address:
        return DaskTaskRunner(address=address)
    n = workers or settings.dask_workers or os.cpu_count() or 1
    return DaskTaskRunner(cluster_kwargs={"n_workers": n, "threads_per_worker": 1, "processes": True,
                                          "host": "127.0.0.1", "dashboard_address": None})


@task(name="check-market", task_run_name="check [{market.symbol}]", cache_policy=NO_CACHE, persist_result=False)
def check_market_task(market: Market) -> str | None:
    """Load one market's files where the replays will run; the problem found, or None."""
    try:
        check_markets([market])
    except InputError as exc:
        return str(exc)
    return None


@task(name="replay-case", task_run_name="replay [{case.case_id}]", cache_policy=NO_CACHE, persist_result=False)
async def replay_case_task(case: SweepCase, database_url: str) -> dict:
    return await run_case(case, database_url)


@flow(name="replay-sweep", persist_result=False, task_runner=dask_task_runner())
def replay_sweep(markets: list[dict], grid: dict[str, list] | None = None, base: dict | None = None,
                 out: str | None = None, database_url: str | None = None, check_inputs: bool = True) -> dict:
    """Replay every market ({symbol, ohlcv, signals}) with every combination of ``grid``
    ({parameter: [values]}, see `tradpal.sweep.SWEEPABLE`) over ``base`` parameters.
    Each case writes its replay files to ``out/cases/<case>``; the table goes to
    ``out/sweep.csv`` and the artifact ``replay-sweep``. ``check_inputs``: first load
    every market's files on the workers (in parallel), so that bad input stops the sweep
    before any case runs (the CLI has checked already). Returns {cases, table, path, failed}."""
    plan = plan_sweep([Market(**m) for m in markets], grid, base, out)
    if check_inputs:
        problems = [f.result() for f in [check_market_task.submit(Market(**m)) for m in markets]]
        first = next((p for p in problems if p), None)
        if first:
            raise InputError(first)
    url = database_url or load_settings().ledger_url()
    Ledger(url).close()  # migrate once, here, before the workers write
    futures = [replay_case_task.submit(case, url) for case in plan]
    wait(futures)
    rows, failed = [], []
    for case, future in zip(plan, futures, strict=True):
        state = future.state
        if state.is_completed():
            rows.append(future.result())
        else:
            failed.append(case.case_id)
            rows.append({"case": case.case_id, "symbol": case.symbol, **dict(case.overrides),
                         "error": str(state.message or state.type.value)})
    table = sweep_table(plan, rows)
    records = table.astype(object).where(table.notna(), None).to_dict("records")
    create_table_artifact(key="replay-sweep", table=records, description=f"Replay sweep: {len(plan)} cases")
    path = write_table(out, table) if out else None
    create_markdown_artifact(key="replay-sweep-summary", markdown=_markdown(table, path, failed))
    if failed:
        raise RuntimeError(f"replay sweep: {len(failed)} of {len(plan)} case(s) failed: {', '.join(failed)}")
    return {"cases": len(plan), "table": records, "path": str(path) if path else None, "failed": failed}


def _markdown(table, path, failed: list[str]) -> str:
    lines = ["# Replay sweep", "", f"- cases: {len(table)}", f"- failed: {len(failed)}"]
    if path:
        lines.append(f"- table: `{path}`")
    if len(table) and "final_equity" in table:
        best = table.loc[table["final_equity"].idxmax()]
        lines.append(f"- best final equity: {best['final_equity']:.2f} ({best['case']})")
    return "\n".join(lines)


def run_sweep(markets: list[dict], grid: dict[str, list] | None = None, base: dict | None = None,
              out: str | None = None, database_url: str | None = None, *, workers: int | None = None,
              address: str | None = None, check_inputs: bool = True) -> dict:
    """Run `replay_sweep` in this process on its own Dask cluster (``workers``) or the
    scheduler at ``address``, heartbeats off. Without ``PREFECT_API_URL`` the ephemeral
    API is started first and its URL handed to the workers (each would otherwise start
    an API of its own)."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    settings: dict = {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
    if not PREFECT_API_URL.value():
        server = SubprocessASGIServer()
        server.start(timeout=120)  # a loaded machine can take longer than the default 20 s
        settings[PREFECT_API_URL] = server.api_url
    sweep = replay_sweep.with_options(task_runner=dask_task_runner(address, workers))
    with temporary_settings(settings):
        return sweep(markets, grid, base, out, database_url, check_inputs)
