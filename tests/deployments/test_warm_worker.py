"""The warm worker (`deployments.warm_worker`, what `make up` starts): flow runs of its warm
deployments run in its own process through Prefect's flow engine, on a real Prefect API; a
run that fails is Failed (not Crashed); a run with job variables, or of any other
deployment, is not taken in-process; bad configuration fails in one line."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid

import pytest

from deployments.warm_worker import (
    WARM_ENTRYPOINTS,
    WarmProcessWorker,
    crash_orphaned_runs,
    import_entrypoint,
    main,
    orphaned,
    run_in_this_process,
    warm_entrypoints,
    warm_identifier,
)

PROBE = "tests/deployments/warm_flows.py:warm_probe"


def test_warm_entrypoints_come_from_the_environment_or_the_default():
    assert warm_entrypoints({}) == WARM_ENTRYPOINTS == ("flows/live_execution.py:live_execution",)
    assert warm_entrypoints({"TRADPAL_WARM_FLOWS": ""}) == ()  # none: a plain process worker
    assert warm_entrypoints({"TRADPAL_WARM_FLOWS": f" {PROBE} , a/b.py:c"}) == (PROBE, "a/b.py:c")


def test_process_still_means_prefects_process_worker_where_the_warm_worker_is_imported():
    from prefect.utilities.dispatch import get_registry_for_type
    from prefect.workers.base import BaseWorker
    from prefect.workers.process import ProcessWorker

    assert get_registry_for_type(BaseWorker)["process"] is ProcessWorker
    assert WarmProcessWorker.type == "process"  # it serves process pools


def test_only_a_run_scheduled_in_its_own_pool_wakes_the_worker():
    from prefect.events import Event

    worker = WarmProcessWorker(work_pool_name="tradpal", warm=[])

    def scheduled(*pools: str) -> Event:
        return Event(event="prefect.flow-run.Scheduled", resource={"prefect.resource.id": "prefect.flow-run.1"},
                     related=[{"prefect.resource.id": f"prefect.work-pool.{p}", "prefect.resource.name": p,
                               "prefect.resource.role": "work-pool"} for p in pools])

    assert worker.announces_a_run_for_me(scheduled("tradpal"))
    assert not worker.announces_a_run_for_me(scheduled("tradpal-k8s"))
    assert worker.announces_a_run_for_me(scheduled())  # no pool named: a poll costs little


def test_an_entrypoint_is_imported_once_as_a_module_of_this_checkout():
    from flows.live_execution import live_execution

    assert import_entrypoint("flows/live_execution.py:live_execution") is live_execution
    with pytest.raises(ValueError, match="expected a relative path/to/module.py:flow_name"):
        import_entrypoint("flows/live_execution.py")
    with pytest.raises(ValueError, match="expected a relative"):
        import_entrypoint("/abs/flows.py:f")
    with pytest.raises(ValueError, match="'not_a_flow' is not a flow of tests.deployments.warm_flows"):
        import_entrypoint("tests/deployments/warm_flows.py:not_a_flow")


def test_a_malformed_warm_entrypoint_stops_the_worker_before_it_starts(capsys):
    assert main(["--warm", "flows/live_execution.py"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("warm_worker: error: warm flow 'flows/live_execution.py': "
                   "expected a relative path/to/module.py:flow_name")


def test_a_warm_flow_that_does_not_import_is_left_to_a_process_with_a_warning(caplog):
    """A broken module must not stop the worker (every signal would wait Scheduled): its
    runs get a process each, and fail there, visibly in the UI."""
    with caplog.at_level("WARNING", logger="tradpal.warm_worker"):
        worker = WarmProcessWorker(work_pool_name="tradpal", warm=["tests/deployments/no_such_module.py:f", PROBE])
    assert list(worker.warm_flows) == [PROBE]
    assert ("warm flow tests/deployments/no_such_module.py:f not imported (ModuleNotFoundError: No module named "
            "'tests.deployments.no_such_module'): its runs get a process each") in caplog.messages


async def _deployment(client, pool: str, entrypoint: str, **kwargs):
    from tests.deployments.warm_flows import warm_probe

    flow_id = await client.create_flow(warm_probe)
    return await client.create_deployment(flow_id=flow_id, name=f"d-{uuid.uuid4().hex[:6]}", work_pool_name=pool,
                                          entrypoint=entrypoint, **kwargs)


def test_warm_runs_go_through_prefects_engine_in_the_workers_own_process(prefect_api, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    pool = f"warm-{uuid.uuid4().hex[:6]}"
    ok_out, bad_out = tmp_path / "ok.txt", tmp_path / "bad.txt"

    async def go():
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
            warm_dep = await _deployment(client, pool, PROBE)
            other_dep = await _deployment(client, pool, "tests/deployments/warm_flows.py:plain")
            varied_dep = await _deployment(client, pool, PROBE, job_variables={"env": {"X": "1"}})
            ok = await client.create_flow_run_from_deployment(warm_dep, parameters={"out": str(ok_out)})
            bad = await client.create_flow_run_from_deployment(warm_dep, parameters={"out": str(bad_out),
                                                                                     "fail": True})
            async with WarmProcessWorker(work_pool_name=pool, warm=[PROBE]) as worker:
                # which runs it would take in-process (asked without running them)
                other = await client.create_flow_run_from_deployment(other_dep)
                varied = await client.create_flow_run_from_deployment(varied_dep, parameters={"out": "x"})
                per_run = await client.create_flow_run_from_deployment(warm_dep, parameters={"out": "x"},
                                                                      job_variables={"env": {"Y": "2"}})
                choices = [await worker.warm_flow_for(r) is not None for r in (ok, other, varied, per_run)]
                for r in (other, varied, per_run):
                    await client.delete_flow_run(r.id)
                await worker.get_and_submit_flow_runs()
            # leaving the worker waits for the runs it started
            return choices, await client.read_flow_run(ok.id), await client.read_flow_run(bad.id)

    choices, ok, bad = asyncio.run(go())
    assert choices == [True, False, False, False]
    assert ok.state_name == "Completed", ok.state.message
    assert bad.state_name == "Failed" and "asked to fail" in bad.state.message
    pid, on_main_thread, run_id = ok_out.read_text().split()
    assert int(pid) == os.getpid() and on_main_thread == "False" and run_id == str(ok.id)
    assert ok.infrastructure_pid == warm_identifier()
    assert ok.infrastructure_pid.startswith(f"warm:{os.uname().nodename}:{os.getpid()}:")
    assert bad_out.exists()


def test_a_warm_run_gets_a_fresh_context_with_the_callers_settings(prefect_api, tmp_path):
    """Nothing of the calling thread's Prefect context leaks into the run but its settings
    (the API it talks to): the run is found and Completed through the caller's API."""
    from prefect.client.orchestration import get_client
    from prefect.context import TagsContext

    from tests.deployments.warm_flows import warm_probe

    async def create():
        async with get_client() as client:
            return await client.create_flow_run(warm_probe, parameters={"out": str(tmp_path / "o.txt")})

    flow_run = asyncio.run(create())
    result: list[int] = []
    with TagsContext(current_tags={"leaked"}):
        thread = threading.Thread(target=lambda: result.append(run_in_this_process(warm_probe, flow_run)))
        thread.start()
        thread.join(120)

    async def read():
        async with get_client() as client:
            return await client.read_flow_run(flow_run.id)

    assert result == [0]
    final = asyncio.run(read())
    assert final.state_name == "Completed" and "leaked" not in final.tags


def test_a_scheduled_run_is_taken_at_once_not_at_the_next_poll(prefect_api, tmp_path):
    """The worker's own poll is an hour apart here: only the wake-up on the server's
    ``prefect.flow-run.Scheduled`` event can take the run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_WORKER_QUERY_SECONDS, temporary_settings

    pool = f"wake-{uuid.uuid4().hex[:6]}"

    async def go():
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
            dep = await _deployment(client, pool, PROBE)
            worker = WarmProcessWorker(work_pool_name=pool, warm=[PROBE])
            started = asyncio.create_task(worker.start())
            try:
                await asyncio.wait_for(worker.listening.wait(), 60)
                while not worker._has_successfully_synced:  # its first poll is done: the next is an hour away
                    await asyncio.sleep(0.1)
                run = await client.create_flow_run_from_deployment(dep, parameters={"out": str(tmp_path / "o")})
                t0 = asyncio.get_running_loop().time()
                while (state := (await client.read_flow_run(run.id)).state) is None or not state.is_final():
                    assert asyncio.get_running_loop().time() - t0 < 30, f"still {state.name} after 30 s"
                    await asyncio.sleep(0.1)
                return state.name, asyncio.get_running_loop().time() - t0
            finally:
                started.cancel()
                await asyncio.gather(started, return_exceptions=True)

    with temporary_settings({PREFECT_WORKER_QUERY_SECONDS: 3600}):
        name, took = asyncio.run(go())
    assert name == "Completed" and took < 30


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_warm_run_is_orphaned_when_its_workers_process_on_this_host_is_gone():
    from tradpal.processes import process_started

    host = os.uname().nodename
    dead = _dead_pid()
    assert orphaned(f"warm:{host}:{dead}") and orphaned(f"warm:{host}:{dead}:123")
    assert not orphaned(warm_identifier())  # this very process
    assert not orphaned(f"warm:{host}:1:{process_started(1)}")  # alive, the same process
    assert orphaned(f"warm:{host}:1:{(process_started(1) or 0) + 1}")  # pid 1 now, but not the process recorded
    assert not orphaned(f"warm:another-host:{dead}")  # another host's workers judge their own
    for other in (None, "", f"{host}:{dead}", f"warm:{host}:x", f"warm:{host}:{dead}:1:2"):
        assert not orphaned(other), other


def test_runs_left_running_by_a_dead_warm_worker_are_marked_crashed(prefect_api):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.states import Running

    pool = f"warm-{uuid.uuid4().hex[:6]}"
    host = os.uname().nodename
    infra = {"dead": f"warm:{host}:{_dead_pid()}", "mine": warm_identifier(), "elsewhere": "warm:another-host:12345",
             "process": f"{host}:{_dead_pid()}"}

    async def go():
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
            dep = await _deployment(client, pool, PROBE)
            runs = {}
            for name, value in infra.items():
                run = await client.create_flow_run_from_deployment(dep, parameters={"out": "x"})
                await client.set_flow_run_state(run.id, Running(), force=True)
                await client.update_flow_run(run.id, infrastructure_pid=value)
                runs[name] = run.id
            crashed = await crash_orphaned_runs(client, pool)
            again = await crash_orphaned_runs(client, pool)  # a Crashed run is not swept twice
            states = {name: await client.read_flow_run(rid) for name, rid in runs.items()}
            return runs, crashed, again, states

    runs, crashed, again, states = asyncio.run(go())
    assert crashed == [runs["dead"]] and again == []
    assert states["dead"].state_name == "Crashed" and infra["dead"] in states["dead"].state.message
    assert "reconciled by the next live run" in states["dead"].state.message
    assert [states[n].state_name for n in ("mine", "elsewhere", "process")] == ["Running"] * 3
