"""`make up` / `make down` plumbing without a server: configuration errors, a busy port,
and `down` stopping exactly the process groups `up` recorded."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from deployments.stack import StackConfig, StackError, _group_alive, _spawn, down, main, up, worker_command
from tradpal.processes import process_alive


def test_configuration_errors_name_the_variable():
    with pytest.raises(StackError, match="TRADPAL_PREFECT_PORT: expected a port number, got 'x'"):
        StackConfig.from_env({"TRADPAL_PREFECT_PORT": "x"})
    with pytest.raises(StackError, match="TRADPAL_STACK_DATABASE: expected sqlite or postgresql"):
        StackConfig.from_env({"TRADPAL_STACK_DATABASE": "mysql"})
    pg = StackConfig.from_env({"TRADPAL_STACK_DATABASE": "postgresql", "TRADPAL_PREFECT_PORT": "4300"})
    assert pg.api_url == "http://127.0.0.1:4300/api"
    assert pg.prefect_db_url() == "postgresql+asyncpg://postgres@127.0.0.1:5432/tradpal_prefect"
    assert pg.ledger_url() == "postgresql+psycopg://postgres@127.0.0.1:5432/tradpal_ledger"
    assert StackConfig.from_env({}).prefect_db_url() is None


def test_the_stack_runs_the_warm_worker_unless_told_otherwise():
    warm = StackConfig.from_env({})
    assert warm.worker == "warm" and warm.query_seconds == 0.5
    assert worker_command(warm)[1:] == ["-m", "deployments.warm_worker", "--pool", "tradpal"]
    plain = StackConfig.from_env({"TRADPAL_STACK_WORKER": "process"})
    assert worker_command(plain)[1:] == ["-m", "prefect", "worker", "start", "--pool", "tradpal", "--type", "process"]
    with pytest.raises(StackError, match="TRADPAL_STACK_WORKER: expected warm or process, got 'k8s'"):
        StackConfig.from_env({"TRADPAL_STACK_WORKER": "k8s"})


def test_a_busy_port_stops_up_before_anything_starts(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        config = StackConfig(dir=tmp_path / "stack", port=busy.getsockname()[1])
        with pytest.raises(StackError, match="is in use"):
            up(config)
    assert not (tmp_path / "stack" / "pids.json").exists()


def test_down_stops_exactly_the_recorded_process_groups(tmp_path, capsys, monkeypatch):
    config = StackConfig(dir=tmp_path)
    sleeper = [sys.executable, "-c", "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"]
    ours = _spawn("server", sleeper, {}, config)  # with a child of its own, in its group
    other = subprocess.Popen(["sleep", "60"])  # not ours: must survive
    try:
        (tmp_path / "pids.json").write_text(json.dumps({"pids": {"server": ours}}))
        monkeypatch.setenv("TRADPAL_STACK_DIR", str(tmp_path))
        assert main(["down"]) == 0
        assert "stopped: server" in capsys.readouterr().out
        assert not _group_alive(ours) and process_alive(other.pid)
        assert not (tmp_path / "pids.json").exists()
        assert down(tmp_path) == []  # nothing recorded: nothing stopped
    finally:
        other.kill()
        other.wait()


def test_usage_is_one_line_exit_2(capsys):
    assert main(["sideways"]) == 2
    assert capsys.readouterr().err.strip() == "usage: python -m deployments.stack up|down|status"
