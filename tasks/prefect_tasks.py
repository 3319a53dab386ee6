"""The thin Prefect shell: one `@task` per step, around `tasks.pipeline.run_step`.

Only the steps that talk to a broker retry, with backoff, and only on retryable broker
errors (connection, rate limit). No caching and no result persistence: frames are
passed in memory, and idempotency comes from client order ids, not from Prefect."""

from __future__ import annotations

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


def task_caller(label: str):
    """A ``call`` for `tasks.pipeline.run_batch` that runs each step as its Prefect task.
    A broker step that still fails after its retries fails every order of its batch in
    the ledger, with the reason, before the error stops the flow."""

    async def call(step: Step, frame: pd.DataFrame, ctx: ExecutionContext) -> pd.DataFrame:
        try:
            return await STEP_TASKS[step.name](frame, ctx, label)
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
