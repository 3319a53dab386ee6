"""The thin Prefect shell: one `@task` per step, around `tasks.pipeline.run_step`.

Only the steps that talk to a broker retry, with backoff, and only on retryable broker
errors (connection, rate limit). No caching and no result persistence: frames are
passed in memory, and idempotency comes from client order ids, not from Prefect.

The tasks run with a *saved* result-storage block (`local-file-system/tradpal-task-results`,
saved once per API and process; nothing is ever written to it): without one, Prefect builds
and resolves its default local storage for every task run, which measured here doubled its
cost per task run (eight trivial tasks in a running flow: 38–47 ms without, 20–33 ms with).
Where the block cannot be saved (the API refuses), the tasks run as they are."""

from __future__ import annotations

import logging
import os

import pandas as pd
from prefect import Task, task
from prefect.cache_policies import NO_CACHE

from brokers.base import BrokerError, is_retryable
from brokers.base.retry import MAX_VENUE_WAIT_S, wait_out_venue  # noqa: F401 - re-exported
from tasks.context import ExecutionContext
from tasks.pipeline import STEPS, Step, provenance, run_step

RETRIES = 3
RETRY_DELAYS = [0.5, 1.0, 2.0]


def retry_only_retryable(task: Task, task_run, state) -> bool:
    """Retry a broker step only if it failed with a retryable `BrokerError`.

    Prefect passes a Failed state whose ``data`` is the exception. (Not ``state.result()``:
    inside the async task engine that returns an un-awaited coroutine, never raising, so
    nothing would ever be retried.)"""
    return is_retryable(state.data)


def _make_task(step: Step) -> Task:
    async def step_task(frame: pd.DataFrame, ctx: ExecutionContext, label: str = "") -> pd.DataFrame:
        try:
            return await run_step(step, frame, ctx)
        except BrokerError as exc:
            await wait_out_venue(exc)
            raise

    step_task.__name__ = step.name
    options = dict(retries=RETRIES, retry_delay_seconds=RETRY_DELAYS,
                   retry_condition_fn=retry_only_retryable) if step.talks_to_broker else {}
    return task(step_task, name=step.title, task_run_name=f"{step.title} [{{label}}]",
                cache_policy=NO_CACHE, persist_result=False, **options)


STEP_TASKS: dict[str, Task] = {step.name: _make_task(step) for step in STEPS}

RESULT_BLOCK = "tradpal-task-results"
_log = logging.getLogger("tradpal.tasks")
_STORAGE: dict[tuple, object | None] = {}  # (API url, PREFECT_HOME) -> the saved block (None: could not save)
_STORED: dict[tuple, tuple[Task, Task]] = {}  # (id(task), API key) -> (task, task with that block)


def _api_key() -> tuple:
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    return (settings.api.url or "ephemeral", os.environ.get("PREFECT_HOME", str(settings.home)))


async def result_storage() -> object | None:
    """The saved result-storage block of the current API (saved on first use), or None
    where it could not be saved."""
    key = _api_key()
    if key not in _STORAGE:
        from prefect.filesystems import LocalFileSystem
        from prefect.settings import get_current_settings

        block = LocalFileSystem(basepath=str(get_current_settings().results.local_storage_path))
        try:
            await block.asave(RESULT_BLOCK, overwrite=True)
            _STORAGE[key] = block
        except Exception as exc:  # noqa: BLE001 - an optimisation only: never stop a run for it
            _log.warning("result storage block %r not saved (%s): task runs use Prefect's default", RESULT_BLOCK, exc)
            _STORAGE[key] = None
    return _STORAGE[key]


async def stored(task_: Task) -> Task:
    """``task_`` with the saved result-storage block (see the module's doc), made once per
    task object and API."""
    key = (id(task_), *_api_key())
    hit = _STORED.get(key)
    if hit is not None and hit[0] is task_:
        return hit[1]
    block = await result_storage()
    out = task_.with_options(result_storage=block) if block is not None else task_
    _STORED[key] = (task_, out)
    return out


def forget_dead_results() -> int:
    """Drop the running flow's links to task results that no longer exist; how many.

    Prefect links each task result to its state in the flow run context (``run_results``,
    keyed by ``id(result)``, with a weak reference to tell a reused id), so that a result
    passed to a later task is known as its input; nothing removes them. In a long-lived
    flow (the live stream: eight task runs per batch) they piled up, ~7 state objects per
    signal, for every full garbage collection to walk (those pauses are the p99 of the eight
    tasks; `benchmarks.latency` reports them). A result that is gone can never be passed on,
    so its link is dead weight."""
    from prefect.context import FlowRunContext

    flow_ctx = FlowRunContext.get()
    results = getattr(flow_ctx, "run_results", None)
    if not isinstance(results, dict):
        return 0
    dead = [key for key, entry in results.items()
            if isinstance(entry, tuple) and len(entry) == 3 and entry[2] is not None and entry[2]() is None]
    for key in dead:
        del results[key]
    return len(dead)


def task_caller(label: str):
    """A ``call`` for `tasks.pipeline.run_batch` that runs each step as its Prefect task.
    A broker step that still fails after its retries fails every order of its batch in
    the ledger, with the reason, before the error stops the flow.

    A row-wise step (1-5) given no rows runs in line (`run_step`: the same function,
    contract and ledger record, with nothing in them), not as a task run: a batch refused
    whole at intake, or a stream's idle monitoring pass, pays for the steps that still
    have work (6-8 watch the open orders and the book), not for four empty task runs."""

    async def call(step: Step, frame: pd.DataFrame, ctx: ExecutionContext) -> pd.DataFrame:
        if step is STEPS[0]:  # a batch (or an idle monitoring pass) starts: the previous ones' results are gone
            forget_dead_results()
        if step.row_wise and not len(frame):
            return await run_step(step, frame, ctx)
        try:
            return await (await stored(STEP_TASKS[step.name]))(frame, ctx, label)
        except BrokerError as exc:
            tried = f"after {RETRIES} retries" if is_retryable(exc) else "(not retryable)"
            reason = f"{step.name} failed {tried}: {type(exc).__name__}: {exc}"
            prov = provenance(ctx)
            ctx.recorder.record_failure(step.name, frame, reason, prov)
            if ctx.alerter is not None:
                alert = ctx.alerter.notify(f"failure:{step.name}", f"TradPal order failure at {step.name}",
                                           f"{reason}. {len(frame)} order(s) affected. Flow run {prov.flow_run_id}.",
                                           level="failure")
                ctx.recorder.record_alerts([alert], prov)
            raise

    return call
