"""A recorded process is alive only while that very process runs: a pid the kernel has
given to a later process does not keep a crashed run `running`."""

from __future__ import annotations

import os
import subprocess
import sys

from tradpal.processes import process_alive, process_started, recorded_process_alive


def test_the_start_time_tells_the_recorded_process_from_a_later_one_with_its_pid():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = process_started(child.pid)
        assert isinstance(started, int) and started >= process_started(os.getpid())
        assert process_alive(child.pid, started)
        assert not process_alive(child.pid, started + 1)  # same pid, another start: another process
        assert recorded_process_alive({"pid": child.pid, "pid_started": started})
        assert not recorded_process_alive({"pid": child.pid, "pid_started": started - 1})
        assert recorded_process_alive({"pid": child.pid})  # recorded before start times were kept
    finally:
        child.kill()
        child.wait()
    assert not process_alive(child.pid, started)
    assert process_started(child.pid) is None


def test_a_live_session_records_its_process_start_time(tmp_path, monkeypatch):
    from tradpal.ledger import Ledger
    from tradpal.live import start_session

    monkeypatch.setenv("TRADPAL_BROKER", "paper")
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    session = start_session(params={"mode": "test"}, database_url=db, cash=1000.0, quote="USDT",
                            prices={"BTC/USDT": 50_000.0}, flow_run_id=None)
    try:
        params = Ledger(db).get_run(session.run_id)["params"]
        assert params["pid"] == os.getpid() and params["pid_started"] == process_started(os.getpid())
    finally:
        session.stopped()
