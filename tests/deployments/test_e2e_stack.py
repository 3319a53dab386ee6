"""End to end, the Prefect way: a real Prefect server on 127.0.0.1 (free port, temporary
PREFECT_HOME), the process work pool, a worker, `prefect deploy --all` from prefect.yaml
(`deployments.stack.up`, what `make up` runs); signals in through the CLI and the HTTP
intake; the event-triggered live-execution runs reach Completed; then the ledger, the
runs' names and artifacts, and `tradpal audit`; everything torn down (`make down`)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from deployments.stack import StackConfig, _group_alive, down, up
from tradpal.ledger import Ledger

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_answers() -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", 5432)) == 0


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def stack(request, tmp_path):
    """The stack up on SQLite, or on the PostgreSQL at 127.0.0.1:5432 (Prefect's database
    and the ledger; skipped when none answers); torn down afterwards, checked gone."""
    if request.param == "postgresql" and not postgres_answers():
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    prefix = f"tp_e2e_{uuid.uuid4().hex[:8]}"
    config = StackConfig(dir=tmp_path / "stack", port=free_port(), database=request.param, db_prefix=prefix)
    ledger_url = config.ledger_url() or f"sqlite:///{tmp_path / 'ledger.db'}"
    config.extra_env = {"TRADPAL_DATABASE_URL": ledger_url, "TRADPAL_HOME": str(tmp_path / "home"),
                        "PREFECT_LOGGING_LEVEL": "WARNING"}
    started = up(config, timeout=150)
    try:
        yield started, ledger_url
    finally:
        stopped = down(config.dir)
        assert sorted(stopped) == ["server", "worker"]
        assert not any(_group_alive(pid) for pid in started.pids.values())  # no stray process
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", config.port)) != 0
        if request.param == "postgresql":
            _drop_databases(config)


def _drop_databases(config: StackConfig) -> None:
    import psycopg

    with psycopg.connect(f"postgresql://{config.postgres}/postgres", autocommit=True) as conn:
        for db in (f"{config.db_prefix}_prefect", f"{config.db_prefix}_ledger"):
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tradpal.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


async def live_runs(api_url: str, n: int, timeout: float) -> list:
    """Poll until ``n`` live-execution flow runs are final; returns them (oldest first)."""
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    async with PrefectClient(api_url) as client:
        deadline = time.monotonic() + timeout
        runs: list = []
        while time.monotonic() < deadline:
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["live-execution"])),
                sort=FlowRunSort.START_TIME_ASC)
            if len(runs) >= n and all(r.state and r.state.is_final() for r in runs):
                return runs
            await asyncio.sleep(0.5)
        raise AssertionError(f"live runs not final after {timeout} s: {[(r.name, r.state_name) for r in runs]}")


async def scheduled_risk_monitor_run(api_url: str, timeout: float) -> tuple[str, list[str]]:
    """The first risk-monitor run the schedule created, once final: (state, artifact keys)."""
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter
    from prefect.client.schemas.filters import FlowRunFilterStateType as StateType
    from prefect.client.schemas.objects import StateType as S

    async with PrefectClient(api_url) as client:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["risk-monitor"])),
                flow_run_filter=FlowRunFilter(state=dict(type=StateType(any_=[S.COMPLETED, S.FAILED, S.CRASHED]))))
            if runs:
                _, artifacts = await read_run_details(api_url, runs[0].id)
                return runs[0].state_name, artifacts
            await asyncio.sleep(1)
    raise AssertionError(f"no risk-monitor run final after {timeout} s")


async def read_run_details(api_url: str, flow_run_id, steps: int = 8,
                           timeout: float = 60) -> tuple[list[str], list[str]]:
    """The run's task run names and artifact keys, once its ``steps`` step task runs are
    recorded. A task run reaches the API as events, which the server records after the
    flow run's own (direct) Completed: a run just Completed may still lack its last steps."""
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )

    deadline = time.monotonic() + timeout
    async with PrefectClient(api_url) as client:
        while True:
            tasks = await client.read_task_runs(task_run_filter=TaskRunFilter(
                flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id])))
            if sum(t.name[0] in "12345678" for t in tasks) >= steps or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return sorted(t.name for t in tasks), sorted(a.key for a in artifacts if a.key)


def test_a_signal_submitted_triggers_a_completed_live_run_recorded_end_to_end(stack, tmp_path):
    started, ledger_url = stack
    env = {**os.environ, "PREFECT_API_URL": started.api_url, "TRADPAL_DATABASE_URL": ledger_url,
           "PREFECT_HOME": str(tmp_path / "client-home"), "PREFECT_LOGGING_LEVEL": "ERROR"}
    sid_cli, sid_http = f"e2e-cli-{uuid.uuid4().hex[:6]}", f"e2e-http-{uuid.uuid4().hex[:6]}"

    port = free_port()
    intake = subprocess.Popen([sys.executable, "-m", "tradpal.cli", "intake", "--port", str(port)], env=env,
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        done = cli("signal", "submit", "--symbol", "BTC/USDT", "--side", "buy", "--quantity", "0.01", "--price",
                   "65000", "--strategy", "momo", "--signal-id", sid_cli, env=env)  # while the intake starts
        assert done.returncode == 0 and done.stdout.strip() == sid_cli, done.stderr
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert intake.poll() is None and time.monotonic() < deadline, "intake did not start"
                time.sleep(0.3)
        bad = httpx.post(f"http://127.0.0.1:{port}/signals", json={"symbol": "BTC/USDT", "side": "hold",
                                                                    "quantity": 1})
        assert bad.status_code == 400 and "unknown side 'hold'" in bad.json()["error"]
        signal = {"symbol": "ETH/USDT", "side": "buy", "quantity": 0.5, "reference_price": 3000.0,
                  "strategy": "meanrev", "signal_id": sid_http}
        ok = httpx.post(f"http://127.0.0.1:{port}/signals", json=signal)
        assert ok.status_code == 202 and ok.json() == {"results": [{"signal_id": sid_http, "accepted": True}]}
        # the same id again at once (a re-delivery): a third run, racing the second, must not order again
        again = httpx.post(f"http://127.0.0.1:{port}/signals", json=signal)
        assert again.status_code == 202
        runs = asyncio.run(live_runs(started.api_url, 3, timeout=120))
    finally:
        intake.terminate()
        intake.wait(timeout=20)

    assert [r.state_name for r in runs] == ["Completed"] * 3, [(r.name, r.state_name, r.state.message) for r in runs]
    # run by the warm worker in its own process (deployments.warm_worker), not a new Python each
    assert all(str(r.infrastructure_pid).startswith(f"warm:{os.uname().nodename}:") for r in runs), \
        [r.infrastructure_pid for r in runs]
    by_name = {r.name: r for r in runs}
    assert sorted(r.name for r in runs) == sorted([f"live {sid_cli} momo BTC/USDT"]
                                                  + [f"live {sid_http} meanrev ETH/USDT"] * 2)
    first = by_name[f"live {sid_cli} momo BTC/USDT"]
    assert first.parameters["signals"][0]["signal_id"] == sid_cli  # the event's payload, as a dict

    ledger = Ledger(ledger_url)
    orders = ledger.frame("orders")
    assert sorted(orders["symbol"]) == ["BTC/USDT", "ETH/USDT"] and (orders["status"] == "FILLED").all()
    signals = ledger.frame("signals").set_index("signal_id")
    assert signals.loc[sid_cli, "flow_run_id"] == str(first.id)
    rejected = ledger.frame("rejections")
    assert rejected["signal_id"].tolist() == [sid_http] and "already received" in rejected["reason"].iat[0], \
        rejected[["signal_id", "step", "reason", "run_id"]].to_dict("records")
    ledger.close()

    tasks, artifacts = asyncio.run(read_run_details(started.api_url, first.id))
    steps = [t for t in tasks if t[0] in "12345678"]
    assert len(steps) == 8 and all(t.endswith(f"[{sid_cli} momo BTC/USDT]") for t in steps), tasks
    assert {"live-summary", "live-executions"} <= set(artifacts)

    assert asyncio.run(scheduled_risk_monitor_run(started.api_url, timeout=120)) == ("Completed", ["risk-monitor"])

    audit = cli("audit", sid_cli, env=env)
    assert audit.returncode == 0, audit.stderr
    out = audit.stdout
    assert f"flow run 'live {sid_cli} momo BTC/USDT' Completed" in out and str(first.id) in out
    assert "artifacts: live-executions (table), live-summary (markdown)" in out
    assert "task run '5-placement" in out and "→ FILLED" in out and "(not found in the Prefect API)" not in out
    print(json.dumps({"runs": [(r.name, r.state_name, str(r.start_time)) for r in runs]}))
