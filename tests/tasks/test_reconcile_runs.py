"""A live run whose process is gone without finishing stays ``running`` in the ledger (and
Running in Prefect) until a later run's reconciliation marks it ``crashed``: in the ledger
with its reason and an audit row, and its Prefect flow run set to Crashed (on a real API).
On SQLite and PostgreSQL (the ``ledger`` fixture)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

from tasks.reconcile import REMOTE_ORPHAN_AFTER_S, crash_flow_run, gone_runs, mark_crashed_runs
from tradpal.ledger import Provenance

HERE = socket.gethostname()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def test_only_runs_whose_process_is_gone_count(ledger):
    runs = {"alive": {"host": HERE, "pid": os.getpid()}, "killed": {"host": HERE, "pid": dead_pid()},
            "remote": {"host": HERE + "-elsewhere", "pid": 1},
            "remote-stream": {"host": HERE + "-elsewhere", "pid": 1, "mode": "stream"},
            "legacy": {}, "me": {"host": HERE, "pid": dead_pid()}, "finished": {"host": HERE, "pid": dead_pid()}}
    for run, params in runs.items():
        ledger.start_run("live", params, run_id=run)
    ledger.start_run("replay", {"host": HERE, "pid": dead_pid()}, run_id="a-replay")
    ledger.finish_run("finished", "completed", {})

    now = [r.run_id for r in gone_runs(ledger, "me")]
    assert now == ["killed"]  # the others are recent: another host's or no process recorded
    silent = {r.run_id: r for r in gone_runs(ledger, "me", now=later(REMOTE_ORPHAN_AFTER_S + 60))}
    # a stream of another host writes nothing while idle: never judged from here
    assert sorted(silent) == ["killed", "legacy", "remote"]
    assert silent["killed"].certain and not silent["remote"].certain and not silent["legacy"].certain
    assert "process" in silent["killed"].reason and "is gone" in silent["killed"].reason
    assert f"by host {HERE}-elsewhere" in silent["remote"].reason


def test_a_recent_write_keeps_a_remote_run_alive(ledger):
    ledger.start_run("live", {"host": "elsewhere", "pid": 7}, run_id="remote")
    at = later(REMOTE_ORPHAN_AFTER_S - 10)  # the run wrote just now, as seen from then
    with ledger.transaction() as s:
        ledger.audit(s, "step.placement", "batch", prov=Provenance(run_id="remote"))
    assert gone_runs(ledger, None, now=at) == []
    assert [r.run_id for r in gone_runs(ledger, None, now=later(REMOTE_ORPHAN_AFTER_S + 30))] == ["remote"]


def test_marked_crashed_once_with_reason_and_audit(ledger):
    ledger.start_run("live", {"host": HERE, "pid": dead_pid()}, run_id="killed", flow_run_id="f-killed")
    ledger.start_run("live", {"host": "elsewhere", "pid": 1}, run_id="remote-paused", flow_run_id="f-paused")
    ledger.start_run("live", {"host": HERE, "pid": os.getpid()}, run_id="me")
    calls = []

    async def flow_runs(flow_run_id, message, *, leave_paused):
        calls.append((flow_run_id, leave_paused))
        return "paused" if flow_run_id == "f-paused" and leave_paused else "crashed"

    prov = Provenance(run_id="me")
    at = later(REMOTE_ORPHAN_AFTER_S + 60)
    assert asyncio.run(mark_crashed_runs(ledger, prov, flow_runs=flow_runs, now=at)) == ["killed"]
    assert asyncio.run(mark_crashed_runs(ledger, prov, flow_runs=flow_runs, now=at)) == []  # idempotent
    assert calls == [("f-killed", False), ("f-paused", True), ("f-paused", True)]

    run = ledger.get_run("killed")
    assert run["status"] == "crashed" and run["finished_at"] is not None
    assert run["summary"]["reason"].startswith("crashed: process ") and "found by run me" in run["summary"]["reason"]
    assert run["summary"]["prefect"] == "crashed" and run["summary"]["flow_run_id"] == "f-killed"
    assert ledger.get_run("remote-paused")["status"] == "running"  # waiting for a person, maybe
    assert ledger.get_run("me")["status"] == "running"
    audit = ledger.frame("audit_log")
    crashed = audit[audit["event"] == "run.crashed"]
    assert crashed["entity_id"].tolist() == ["killed"] and crashed["run_id"].tolist() == ["me"]
    assert crashed["payload"].iloc[0]["reason"] == run["summary"]["reason"]


def test_the_ledger_alone_when_no_prefect(ledger):
    ledger.start_run("live", {"host": HERE, "pid": dead_pid()}, run_id="killed", flow_run_id=str(uuid.uuid4()))
    assert asyncio.run(mark_crashed_runs(ledger, Provenance(run_id="me"), flow_runs=None)) == ["killed"]
    assert ledger.get_run("killed")["summary"]["prefect"] is None


def test_flow_runs_set_to_crashed_on_a_real_api(ledger, prefect_client):
    """Running → Crashed with the reason as its message, its unfinished task run too; a final
    state is left as it is; an id the API does not know, or not an id at all, is noted and the
    ledger marked anyway."""
    from prefect.states import Completed, Running

    async def make(client, state) -> str:
        return str((await client.create_flow_run(_flow(), state=state)).id)

    async def task_runs(client, flow_run_id: str, *states) -> list[str]:
        return [str((await client.create_task_run(_task(), uuid.UUID(flow_run_id), f"k{i}", state=st)).id)
                for i, st in enumerate(states)]

    running = prefect_client(lambda c: make(c, Running()))
    steps = prefect_client(lambda c: task_runs(c, running, Running(), Completed()))  # killed in the first
    completed = prefect_client(lambda c: make(c, Completed()))
    unknown = str(uuid.uuid4())
    for name, fid in {"killed-running": running, "killed-completed": completed, "killed-unknown": unknown,
                      "killed-not-an-id": "not-a-uuid"}.items():
        ledger.start_run("live", {"host": HERE, "pid": dead_pid()}, run_id=name, flow_run_id=fid)

    marked = asyncio.run(mark_crashed_runs(ledger, Provenance(run_id="me")))
    assert sorted(marked) == ["killed-completed", "killed-not-an-id", "killed-running", "killed-unknown"]
    prefect = {r: ledger.get_run(r)["summary"]["prefect"] for r in marked}
    assert prefect == {"killed-running": "crashed (and 1 task run)", "killed-completed": "already Completed",
                       "killed-unknown": "unknown to the Prefect API", "killed-not-an-id": "not a Prefect flow run id"}
    state = prefect_client(lambda c: c.read_flow_run(uuid.UUID(running))).state
    assert state.type.value == "CRASHED" and state.message == ledger.get_run("killed-running")["summary"]["reason"]
    assert prefect_client(lambda c: c.read_flow_run(uuid.UUID(completed))).state.type.value == "COMPLETED"
    step_states = [prefect_client(lambda c, t=t: c.read_task_run(uuid.UUID(t))).state for t in steps]
    assert [st.type.value for st in step_states] == ["CRASHED", "COMPLETED"]
    # asked again (another reconciliation racing this one): nothing more is done
    assert asyncio.run(crash_flow_run(running, "again")) == "already Crashed"


def _flow():
    from prefect import flow

    @flow(name="crashed-run-probe")
    def probe() -> None:
        pass

    return probe


def _task():
    from prefect import task

    @task(name="0-probe-step")
    def step() -> None:
        pass

    return step
