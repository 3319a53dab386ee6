"""The thin Prefect shell: one `@task` per step, around `tasks.pipeline.run_step`.

Only the steps that talk to a broker retry, with backoff, and only on retryable broker
errors (connection, rate limit). No caching and no result persistence: frames are
passed in memory, and idempotency comes from client order ids, not from Prefect."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pandas as pd
from prefect import Task, task
from prefect.cache_policies import NO_CACHE

from brokers.base import BrokerError, is_retryable
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


MAX_VENUE_WAIT_S = 60.0  # a venue ban longer than this is not waited out: the step fails


async def wait_out_venue(exc: BrokerError, now: datetime | None = None) -> None:
    """Before a retry, wait as long as the venue said to: an IP ban (`banned_until`) is
    waited out, since on Binance every request during a ban lengthens it. A ban longer
    than `MAX_VENUE_WAIT_S` makes the error final (no retry at all)."""
    until = getattr(exc, "banned_until", None)
    if until is None:
        return
    wait = (until - (now or datetime.now(UTC))).total_seconds()
    if wait > MAX_VENUE_WAIT_S:
        exc.retryable = False  # this instance: retrying inside the ban would only lengthen it
    elif wait > 0:
        await asyncio.sleep(wait)


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
