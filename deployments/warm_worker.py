"""A process worker that keeps the live path warm (what `make up` starts on the pool ``tradpal``).

A plain process worker starts a new Python for every flow run: it imports Prefect, pandas,
Pandera and the pipeline, loads the deployment and runs its pull steps before the flow's first
line — 3-4 s of a quiet 2-core machine, 10-15 s of a loaded one, against ~0.5 s for the run
itself. This worker is Prefect's `ProcessWorker` (same ``process`` pool, same base job
template, same polling, states and events), except that flow runs of the deployments whose
entrypoint is in ``warm`` (by default ``flows/live_execution.py:live_execution``, the
event-triggered one) run inside the worker's own process, in a thread of their own with their
own event loop, through Prefect's own flow engine (`prefect.flow_engine.run_flow`), from the
flow imported once at start-up. Every other run (replays, analytics, the risk monitor) gets its
own process as usual. It also takes a run as soon as the server announces it Scheduled in its
pool (it subscribes to ``prefect.flow-run.Scheduled`` on the server's event stream), not only at
its next poll (PREFECT_WORKER_QUERY_SECONDS, 0.5 s under `make up`, the fallback).

What a warm run does not get, by design (each falls back to a process when it matters):
- its deployment's pull steps: the code is the worker's own checkout, imported at start-up
  (restart the worker after changing the flow's code);
- per-run job variables (``env``, ``command``, ``working_dir``): a run or deployment that sets
  any runs in its own process instead;
- isolation: a warm run that kills its process (``os._exit``, a segfault, TRADPAL_CRASH_AT)
  takes the worker with it, and runs already started cannot be cancelled from the UI (a
  Scheduled or Pending one can). The live run takes about half a second. Nobody is left to
  report such a run's end, so every warm worker, when it starts and every
  ``ORPHAN_SWEEP_S`` after, marks Crashed the Pending or Running runs of its pool that a warm
  worker of this host ran and whose process is gone (`crash_orphaned_runs`; the recorded
  infrastructure is ``warm:HOST:PID:START``, so a reused pid is not taken for the dead
  worker). Their orders are the ledger's business: the next live run's reconciliation;
- unbounded concurrency: at most ``WARM_THREADS`` (64) warm runs at once, one thread each (a
  run waiting for a person's approval holds its thread); more wait for a free one.

A warm flow whose module does not import (a broken edit, a missing dependency) is left to a
process per run, with a warning in the worker's log: its runs then fail visibly in the UI, as
with Prefect's process worker, rather than the worker not starting at all.

    python -m deployments.warm_worker --pool tradpal [--warm ENTRYPOINT ...] [--limit N]
    TRADPAL_WARM_FLOWS=""   # (empty) no warm flows: a plain process worker
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Iterable
from typing import Any
from uuid import UUID

import anyio
from prefect.utilities.dispatch import get_registry_for_type
from prefect.workers.base import BaseWorker
from prefect.workers.process import ProcessWorker, ProcessWorkerResult

WARM_ENTRYPOINTS = ("flows/live_execution.py:live_execution",)
WARM_THREADS = 64  # warm runs at once (one thread each, also while one waits for an approval)
ORPHAN_SWEEP_S = 60.0  # how often a warm worker looks for runs a dead warm worker of this host left Running
logger = logging.getLogger("tradpal.warm_worker")


def warm_entrypoints(env: dict[str, str] | None = None) -> tuple[str, ...]:
    """``TRADPAL_WARM_FLOWS`` (comma-separated entrypoints; empty for none), else the default."""
    value = (os.environ if env is None else env).get("TRADPAL_WARM_FLOWS")
    if value is None:
        return WARM_ENTRYPOINTS
    return tuple(e.strip() for e in value.split(",") if e.strip())


def module_of(entrypoint: str) -> tuple[str, str]:
    """``path/to/module.py:name`` -> (``path.to.module``, ``name``); ValueError if malformed."""
    path, _, name = entrypoint.partition(":")
    if not path.endswith(".py") or not name or path.startswith(("/", ".")):
        raise ValueError(f"warm flow {entrypoint!r}: expected a relative path/to/module.py:flow_name")
    return path[:-3].replace("/", "."), name


def import_entrypoint(entrypoint: str) -> Any:
    """The flow behind ``path/to/module.py:name``, imported as a module of this checkout
    (``flows/live_execution.py:live_execution`` -> ``flows.live_execution.live_execution``)."""
    module_name, name = module_of(entrypoint)
    module = importlib.import_module(module_name)
    flow = getattr(module, name, None)
    if flow is None or not hasattr(flow, "fn"):
        raise ValueError(f"warm flow {entrypoint!r}: {name!r} is not a flow of {module.__name__}")
    return flow


def import_warm_flows(entrypoints: Iterable[str]) -> dict[str, Any]:
    """The flows to run warm, by entrypoint. One that cannot be imported (a broken module,
    a missing dependency) is left out with a warning: its runs then get a process each, as
    with Prefect's process worker, and fail there visibly in the UI with the import error,
    instead of the worker not starting and every signal waiting Scheduled."""
    flows = {}
    for entrypoint in entrypoints:
        try:
            flows[entrypoint] = import_entrypoint(entrypoint)
        except Exception as exc:
            logger.warning("warm flow %s not imported (%s: %s): its runs get a process each",
                           entrypoint, type(exc).__name__, exc)
    return flows


def warm_identifier(pid: int | None = None) -> str:
    """What a warm run records as its infrastructure: ``warm:HOST:PID:START`` (START: the
    process's start time, `tradpal.processes.process_started`; left out where unknown)."""
    from tradpal.processes import process_started

    pid = os.getpid() if pid is None else pid
    started = process_started(pid)
    return f"warm:{os.uname().nodename}:{pid}" + (f":{started}" if started is not None else "")


def orphaned(infrastructure: str | None, host: str | None = None) -> bool:
    """A run recorded as ``warm:HOST:PID[:START]`` whose worker process, on this host, is
    gone. Another host's run, this process's own, or any other infrastructure: False."""
    from tradpal.processes import process_alive

    parts = (infrastructure or "").split(":")
    if len(parts) not in (3, 4) or parts[0] != "warm" or parts[1] != (host or os.uname().nodename):
        return False
    try:
        pid, started = int(parts[2]), int(parts[3]) if len(parts) == 4 else None
    except ValueError:
        return False
    return pid != os.getpid() and not process_alive(pid, started)


async def crash_orphaned_runs(client: Any, pool: str) -> list[UUID]:
    """Mark Crashed the Pending and Running flow runs of ``pool`` whose warm worker on this
    host is gone (`orphaned`); their ids."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        WorkPoolFilter,
        WorkPoolFilterName,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    runs = await client.read_flow_runs(
        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
            type=FlowRunFilterStateType(any_=[StateType.PENDING, StateType.RUNNING]))))
    crashed = []
    for run in runs:
        if orphaned(run.infrastructure_pid):
            message = (f"the warm worker that ran it ({run.infrastructure_pid}) is gone; its orders are "
                       "reconciled by the next live run")
            await client.set_flow_run_state(run.id, Crashed(message=message), force=True)
            logger.warning("flow run %s (%s): %s", run.name, run.id, message)
            crashed.append(run.id)
    return crashed


def run_in_this_process(flow: Any, flow_run: Any) -> int:
    """Run ``flow_run`` of ``flow`` here, through Prefect's flow engine (the engine reports
    its states); the exit status a process would have had (0, or 1 when the run raised).
    Called in a thread of its own: a fresh context holding only the caller's settings
    (nothing else of the worker's, such as its API client, leaks into the run) and, for an
    async flow, a fresh event loop."""
    from prefect.context import SettingsContext, get_settings_context
    from prefect.exceptions import Abort, Pause
    from prefect.flow_engine import run_flow

    settings = get_settings_context()

    def run() -> None:
        with SettingsContext(profile=settings.profile, settings=settings.settings):
            result = run_flow(flow, flow_run=flow_run, error_logger=logger)
            if asyncio.iscoroutine(result):
                asyncio.run(result)

    try:
        contextvars.Context().run(run)
    except (Abort, Pause):  # what `python -m prefect.engine` exits 0 for
        return 0
    except BaseException:  # the engine has already reported the run's final state
        logger.debug("warm run %s raised", flow_run.id, exc_info=True)
        return 1
    return 0


# The subclass keeps ProcessWorker's type ("process": it serves the same pools), which Prefect's
# type registry would otherwise hand out for "process" in this process from now on (with a
# warning): keep ProcessWorker registered as what "process" means.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    class WarmProcessWorker(ProcessWorker):
        """`ProcessWorker`, running the ``warm`` deployments' flow runs in its own process."""

        def __init__(self, *args: Any, warm: Iterable[str] = WARM_ENTRYPOINTS, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.warm_flows = import_warm_flows(warm)
            self._deployment_entrypoints: dict[UUID, str | None] = {}
            self._threads = anyio.CapacityLimiter(WARM_THREADS)  # not anyio's pool, which the worker uses too
            self.listening = asyncio.Event()  # set while subscribed to the server's event stream

        async def start(self, *args: Any, **kwargs: Any) -> None:
            """Prefect's worker loops, plus a poll at once whenever the server announces a
            run Scheduled in this pool (`wake_on_scheduled`)."""
            async with anyio.create_task_group() as group:
                group.start_soon(self.wake_on_scheduled)
                group.start_soon(self.sweep_orphans)
                try:
                    await super().start(*args, **kwargs)
                finally:
                    group.cancel_scope.cancel()

        def announces_a_run_for_me(self, event: Any) -> bool:
            """A ``prefect.flow-run.Scheduled`` event of a run in this worker's pool (or one
            that does not say which pool)."""
            pools = [r for r in event.related if r.get("prefect.resource.role") == "work-pool"]
            return not pools or any(r.get("prefect.resource.name") == self._work_pool_name for r in pools)

        async def wake_on_scheduled(self) -> None:
            """Take a run as soon as the automation (or anyone) schedules it, instead of at
            the next poll: the worker subscribes to the server's event stream for
            ``prefect.flow-run.Scheduled`` and polls on each one for its pool. The regular
            poll (PREFECT_WORKER_QUERY_SECONDS) stays: it is the fallback whenever the
            stream is down (reconnected after a second)."""
            from prefect.events.clients import get_events_subscriber
            from prefect.events.filters import EventFilter, EventNameFilter

            only = EventFilter(event=EventNameFilter(name=["prefect.flow-run.Scheduled"]))
            while True:
                try:
                    async with get_events_subscriber(filter=only) as subscriber:
                        self.listening.set()
                        async for event in subscriber:
                            if self.announces_a_run_for_me(event) and self._has_successfully_synced:
                                await self.get_and_submit_flow_runs()
                except Exception as exc:  # the poll carries on meanwhile
                    logger.debug("event stream: %s; reconnecting in 1 s", exc)
                self.listening.clear()
                await anyio.sleep(1)

        async def sweep_orphans(self) -> None:
            """`crash_orphaned_runs` now and every ``ORPHAN_SWEEP_S`` (errors logged, retried)."""
            from prefect.client.orchestration import get_client

            while True:
                try:
                    async with get_client() as client:
                        await crash_orphaned_runs(client, self._work_pool_name)
                except Exception as exc:  # the API is down: next time
                    logger.debug("orphaned runs sweep: %s", exc)
                await anyio.sleep(ORPHAN_SWEEP_S)

        async def warm_flow_for(self, flow_run: Any) -> Any | None:
            """The imported flow that runs ``flow_run`` here, or None (its own process)."""
            if not self.warm_flows or flow_run.deployment_id is None or flow_run.job_variables:
                return None
            if flow_run.deployment_id not in self._deployment_entrypoints:
                deployment = await self.client.read_deployment(flow_run.deployment_id)
                self._deployment_entrypoints[flow_run.deployment_id] = (
                    None if deployment.job_variables else deployment.entrypoint)
            return self.warm_flows.get(self._deployment_entrypoints[flow_run.deployment_id] or "")

        async def run(self, flow_run: Any, configuration: Any,
                      task_status: anyio.abc.TaskStatus[int] | None = None) -> ProcessWorkerResult:
            flow = await self.warm_flow_for(flow_run)
            if flow is None:
                return await super().run(flow_run, configuration, task_status)
            if task_status is not None:  # recorded as the run's infrastructure: not a pid to signal
                task_status.started(warm_identifier())  # type: ignore[arg-type]
            self.get_flow_run_logger(flow_run).info("Running in the warm worker's process (%s)", flow.name)
            current = await self.client.read_flow_run(flow_run.id)  # its state now (Submitting)
            # not abandoned on cancel: a worker shutting down waits for the warm runs it started
            status = await anyio.to_thread.run_sync(run_in_this_process, flow, current, limiter=self._threads)
            return ProcessWorkerResult(status_code=status, identifier=f"warm:{os.getpid()}")


get_registry_for_type(BaseWorker)["process"] = ProcessWorker


async def serve(pool: str, warm: Iterable[str], limit: int | None = None, name: str | None = None) -> None:
    from prefect.settings import PREFECT_WORKER_HEARTBEAT_SECONDS, PREFECT_WORKER_PREFETCH_SECONDS

    worker = WarmProcessWorker(work_pool_name=pool, name=name, limit=limit, warm=warm,
                               prefetch_seconds=PREFECT_WORKER_PREFETCH_SECONDS.value(),
                               heartbeat_interval_seconds=int(PREFECT_WORKER_HEARTBEAT_SECONDS.value()))
    print(f"warm worker {worker.name!r} on pool {pool!r}; in this process: "
          f"{', '.join(worker.warm_flows) or '(none)'}", flush=True)
    await worker.start()


def main(argv: list[str] | None = None) -> int:
    from prefect.utilities.processutils import setup_signal_handlers_worker

    parser = argparse.ArgumentParser(prog="python -m deployments.warm_worker", description=__doc__.splitlines()[0])
    parser.add_argument("--pool", default="tradpal")
    parser.add_argument("--warm", action="append", metavar="ENTRYPOINT",
                        help="a deployment entrypoint run in this process (repeatable; default: TRADPAL_WARM_FLOWS, "
                             f"else {', '.join(WARM_ENTRYPOINTS)})")
    parser.add_argument("--limit", type=int, default=None, help="at most this many flow runs at once")
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    try:
        warm = tuple(args.warm) if args.warm else warm_entrypoints()
        for entrypoint in warm:
            module_of(entrypoint)  # a malformed entrypoint: one line, before anything starts
    except ValueError as exc:
        print(f"warm_worker: error: {exc}", file=sys.stderr)
        return 2
    setup_signal_handlers_worker(os.getpid(), "the warm worker", print)  # SIGTERM: stop polling, finish runs
    try:
        asyncio.run(serve(args.pool, warm, args.limit, args.name))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("warm worker stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
