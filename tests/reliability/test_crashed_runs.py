"""A killed live run does not stay "running": the next live run's reconciliation marks it
``crashed`` in the ledger (reason, ``run.crashed`` audit row) and sets its Prefect flow run
to Crashed on the real API, and `tradpal runs` shows it.

Two real SIGKILLs of `tradpal live` processes (the real ccxt client over HTTP to the
emulator process, a real Prefect API): a batch that kills itself between the exchange's
acceptance and the ledger write (``TRADPAL_CRASH_AT``), then a streaming run — whose own
reconciliation marks the batch — killed from outside while it waits for signals; then a
batch restart, which marks the stream."""

from __future__ import annotations

import contextlib
import io
import time
import uuid

import pandas as pd
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from tests.reliability.invariants import check, read_book
from tests.reliability.live_process import API_KEY, SECRET, SYMBOL, run_live, wait_exit
from tradpal.faults import CRASH_ENV
from tradpal.ledger import Ledger


def signals_file(rig, name: str, n: int):
    path = rig["work"] / f"{name}.csv"
    frame = pd.DataFrame([{"timestamp": pd.Timestamp.now(tz="UTC").isoformat(), "symbol": SYMBOL, "side": "buy",
                           "quantity": 0.1, "signal_id": f"{name}-{i}"} for i in range(n)])
    frame.to_csv(path, index=False)
    rig["signals"].update(frame["signal_id"])
    return path


def runs_of(ledger: Ledger, pid: int) -> pd.DataFrame:
    runs = ledger.frame("runs")
    return runs[[(p or {}).get("pid") == pid for p in runs["params"]]]


def flow_state(prefect_client, flow_run_id: str):
    return prefect_client(lambda c: c.read_flow_run(uuid.UUID(flow_run_id))).state


def test_killed_runs_are_marked_crashed_in_the_ledger_and_in_prefect(rig, prefect_client):
    db, log = rig["db"], rig["work"] / "crashed-runs.log"
    # 1. a batch that dies by SIGKILL right after the venue accepted its first order
    batch = run_live(rig, ["live", "--signals", str(signals_file(rig, "killed-batch", 2)), "--quote", "BTC",
                           "--database-url", db], {CRASH_ENV: "placement.acked:1"}, log, real_exec=False)
    assert wait_exit(batch, 90) == -9, log.read_text()[-3000:]
    ledger = Ledger(db)
    killed_batch = runs_of(ledger, batch.pid)
    assert killed_batch["status"].tolist() == ["running"]  # what a SIGKILL leaves behind
    assert flow_state(prefect_client, killed_batch["flow_run_id"].iloc[0]).is_running()
    # 2. a stream (whose reconciliation marks the batch crashed), killed from outside while it waits for signals
    ready = rig["work"] / "stream.ready"
    stream = run_live(rig, ["live", "run", "--symbol", SYMBOL, "--quote", "BTC", "--port", "0", "--ready-file",
                            str(ready), "--database-url", db], {}, log, real_exec=False)
    deadline = time.monotonic() + 90
    while not (ready.exists() and ready.read_text().strip()) and time.monotonic() < deadline:
        assert stream.exitcode is None, log.read_text()[-3000:]
        time.sleep(0.1)
    assert ready.exists(), "the stream never listened"
    stream.kill()
    assert wait_exit(stream, 10) == -9

    killed_stream = runs_of(ledger, stream.pid)
    assert killed_stream["status"].tolist() == ["running"]
    assert flow_state(prefect_client, killed_stream["flow_run_id"].iloc[0]).is_running()

    # 3. the next live run: its reconciliation finds the stream gone
    restart = run_live(rig, ["live", "--signals", str(signals_file(rig, "after-kill", 1)), "--quote", "BTC",
                             "--database-url", db], {}, log, real_exec=False)
    assert wait_exit(restart, 90) == 0, log.read_text()[-3000:]
    after = runs_of(ledger, restart.pid)
    assert after["status"].tolist() == ["completed"]
    audit = ledger.frame("audit_log")
    killed = pd.concat([killed_batch, killed_stream])
    for run, found_by in zip(killed.itertuples(), [killed_stream["id"].iloc[0], after["id"].iloc[0]], strict=True):
        row = ledger.get_run(run.id)
        reason = row["summary"]["reason"]
        assert row["status"] == "crashed" and f"process {row['params']['pid']} on " in reason
        assert reason.endswith(f"found by run {found_by}") and row["summary"]["prefect"].startswith("crashed")
        marks = audit[(audit["event"] == "run.crashed") & (audit["entity_id"] == run.id)]
        assert len(marks) == 1 and marks["run_id"].iloc[0] == found_by
        state = flow_state(prefect_client, run.flow_run_id)
        assert state.is_crashed() and state.message == reason
    # the batch died inside its placement task run: that one is Crashed too, none is left Running
    steps = prefect_client(lambda c: c.read_task_runs(flow_run_filter=FlowRunFilter(
        id=FlowRunFilterId(any_=[uuid.UUID(killed_batch["flow_run_id"].iloc[0])]))))
    # which task run the API saw running depends on how far the killed process's events got before
    # the SIGKILL (they are sent from a background thread): the placement's, or an earlier step's
    # whose Completed event was lost. Whichever it is, it is Crashed now, and none is left Running.
    # (or none at all: then the API never heard of the batch's task runs)
    crashed = [t.name for t in steps if t.state.is_crashed()]
    said = ledger.get_run(killed_batch["id"].iloc[0])["summary"]["prefect"]
    assert (f"crashed (and {len(crashed)} task run" in said) if crashed else said == "crashed", (said, crashed)
    assert not [t for t in steps if t.state.is_running() or t.state.is_pending()], \
        [(t.name, t.state_name) for t in steps]

    # `tradpal runs` lists them with the reason
    from tradpal.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["runs", "--status", "crashed", "--database-url", db]) == 0
    text = out.getvalue()
    for run in killed.itertuples():
        assert f"{run.id} live      crashed" in text
    assert text.count("(Prefect: crashed") == 2
    # and the three invariants hold against the venue's own book
    check(ledger, read_book(rig["emulator"].base_url, API_KEY, SECRET, [SYMBOL]), expect_signals=rig["signals"])
