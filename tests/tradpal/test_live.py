"""A live process serves the steps first: a short interpreter switch interval, and the
ephemeral Prefect API server it started (its child) at a lower priority."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from tradpal.config import Settings
from tradpal.live import favour_the_steps
from tradpal.processes import EPHEMERAL_API_MARK, child_pids


@pytest.fixture
def children():
    procs = []

    def spawn(*args: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *args])
        procs.append(proc)
        return proc

    interval = sys.getswitchinterval()
    yield spawn
    sys.setswitchinterval(interval)
    for proc in procs:
        proc.kill()
        proc.wait()


def test_the_ephemeral_api_server_is_found_among_the_children(children):
    api = children("-m", "uvicorn", "--factory", EPHEMERAL_API_MARK)
    other = children("something-else")
    found = child_pids(EPHEMERAL_API_MARK)  # (the suite's own test server may be among them too)
    assert api.pid in found and other.pid not in found


def test_the_api_server_child_is_reniced_and_the_switch_interval_shortened(children):
    mark = f"tradpal-test-api-{uuid.uuid4().hex}"  # not the suite's own API server: leave that one be
    api = children("-m", "uvicorn", "--factory", mark)
    other = children("something-else")
    before = os.getpriority(os.PRIO_PROCESS, other.pid)
    done = favour_the_steps(Settings(gil_switch_ms=0.5, api_server_nice=10, events_burst=64), api_marker=mark)
    assert done == {"events_burst": 64, "gil_switch_ms": 0.5, "api_server_nice": {"pids": [api.pid], "nice": 10}}
    from prefect.events.worker import EventsWorker

    from tradpal.prefect_events import _bulk_main_loop

    assert EventsWorker._main_loop is _bulk_main_loop
    assert os.getpriority(os.PRIO_PROCESS, api.pid) == 10
    assert os.getpriority(os.PRIO_PROCESS, other.pid) == before
    assert sys.getswitchinterval() == pytest.approx(0.0005)
    # a second session finds it already there: nothing more to do, nothing lowered back
    assert favour_the_steps(Settings(gil_switch_ms=0.5, api_server_nice=5, events_burst=1),
                            api_marker=mark) == {"gil_switch_ms": 0.5}
    assert os.getpriority(os.PRIO_PROCESS, api.pid) == 10


def test_zero_leaves_the_process_as_it_is(children):
    mark = f"tradpal-test-api-{uuid.uuid4().hex}"
    api = children("-m", "uvicorn", "--factory", mark)
    interval = sys.getswitchinterval()
    assert favour_the_steps(Settings(gil_switch_ms=0, api_server_nice=0, events_burst=1), api_marker=mark) == {}
    assert os.getpriority(os.PRIO_PROCESS, api.pid) == os.getpriority(os.PRIO_PROCESS, os.getpid())
    assert sys.getswitchinterval() == interval


def test_out_of_range_settings_are_refused_by_name(monkeypatch):
    from tradpal.config import load_settings
    from tradpal.errors import ConfigError

    monkeypatch.setenv("TRADPAL_API_SERVER_NICE", "40")
    with pytest.raises(ConfigError, match="TRADPAL_API_SERVER_NICE"):
        load_settings()
