"""A signal left without an order is settled as interrupted only when the run that took it
is gone: its process dead (or a zombie) on this host, or long enough ago on another host.
A run still working — another worker between its claim and its order — is left alone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from tasks.reconcile import ORPHAN_AFTER_S, REMOTE_ORPHAN_AFTER_S, orphan_signals
from tests.tasks.test_reconcile_crash import signal
from tradpal.ledger import Ledger
from tradpal.processes import process_alive, process_started


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_only_signals_of_runs_that_are_gone_are_orphans(tmp_path):
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    here = socket.gethostname()
    me = os.getpid()
    runs = {"alive": {"host": here, "pid": me, "pid_started": process_started(me)},
            "crashed": {"host": here, "pid": dead_pid()},
            # its pid now belongs to another process (this one, started at another time): gone
            "pid-reused": {"host": here, "pid": me, "pid_started": process_started(me) - 1},
            "remote": {"host": here + "-elsewhere", "pid": 1}, "legacy": {}, "me": {"host": here, "pid": os.getpid()}}
    for run, params in runs.items():
        ledger.start_run("live", params, run_id=run)
    old = ORPHAN_AFTER_S + 5
    signal(ledger, "in-flight", age_s=old, run="alive")          # another worker, still working
    signal(ledger, "killed", age_s=old, run="crashed")           # its process is gone
    signal(ledger, "pid-reused", age_s=old, run="pid-reused")   # its pid lives, but not its process
    signal(ledger, "remote-recent", age_s=old, run="remote")     # another host, recent: left alone
    signal(ledger, "remote-old", age_s=REMOTE_ORPHAN_AFTER_S + 60, run="remote")
    signal(ledger, "no-process-recorded", age_s=old, run="legacy")
    signal(ledger, "mine", age_s=old, run="me")                  # the reconciling run's own
    before = datetime.now(UTC) - timedelta(seconds=ORPHAN_AFTER_S)
    assert orphan_signals(ledger, "live", "me", before) == ["killed", "pid-reused", "remote-old", "no-process-recorded"]


def test_a_killed_child_not_yet_reaped_is_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert process_alive(child.pid)
        child.kill()
        for _ in range(100):  # until the kernel has made it a zombie (we do not reap it yet)
            with open(f"/proc/{child.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.01)
        assert not process_alive(child.pid)
    finally:
        child.wait()
    assert not process_alive(child.pid)


def test_orders_of_a_run_still_at_work_are_left_to_it_and_those_of_a_gone_run_are_settled(tmp_path):
    """A second run starting while the first has created an order but not sent it yet (two
    event-triggered runs in one warm worker): its reconciliation must not call that order
    'never reached the venue' — the first run is about to send it."""
    import asyncio

    import pandas as pd

    from brokers.base.clock import WallClock
    from brokers.paper import PaperBroker
    from tasks.reconcile import at_work, off_work, reconcile
    from tradpal.ledger import Provenance

    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    here = socket.gethostname()
    broker = PaperBroker(cash=1e6, quote_currency="USDT", clock=WallClock(), name="paper")  # knows neither order
    for run, params in {"working": {"host": here, "pid": os.getpid()},
                        "gone": {"host": here, "pid": dead_pid()}}.items():
        ledger.start_run("live", params, run_id=run)
        signal(ledger, f"sig-{run}", age_s=0, run=run)
        with ledger.transaction() as s:  # step 3 recorded the order; step 5 has not sent it
            ledger.record_orders(s, pd.DataFrame([{
                "signal_id": f"sig-{run}", "client_order_id": f"tp-{run}-0", "symbol": "BTC/USDT", "side": "buy",
                "order_type": "market", "quantity": 0.1, "created_at": pd.Timestamp.now(tz="UTC")}]),
                namespace="live", venue="paper", prov=Provenance(run_id=run))
    ledger.start_run("live", {"host": here, "pid": os.getpid()}, run_id="me")
    at_work("working")  # "working" runs in this process (as two runs in one warm worker do)
    try:
        report = asyncio.run(reconcile(ledger, broker, prov=Provenance(run_id="me"), flow_runs=None))
    finally:
        off_work("working")
    assert report.rejected == ["tp-gone-0"] and report.checked == 1
    orders = ledger.frame("orders").set_index("client_order_id")["status"]
    assert (orders["tp-working-0"], orders["tp-gone-0"]) == ("CREATED", "REJECTED")
    assert ledger.frame("rejections")["signal_id"].tolist() == ["sig-gone"]
    # once that run's steps are over (its process still alive: the next run here is a restart), they are taken
    again = asyncio.run(reconcile(ledger, broker, prov=Provenance(run_id="me"), flow_runs=None))
    assert again.rejected == ["tp-working-0"]
