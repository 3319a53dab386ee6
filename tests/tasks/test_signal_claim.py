"""Idempotency across processes: two worker processes handed the same signal ids at the
same moment, on one ledger, yield one order per id (the ledger claim in step 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from tasks.recorder import LedgerRecorder
from tests.tasks.conftest import SYM, T0
from tradpal.ledger import Ledger, Provenance

ROOT = Path(__file__).resolve().parents[2]


def test_a_claim_is_won_once(ledger: Ledger) -> None:
    run_a, run_b = ledger.start_run("live", {}), ledger.start_run("live", {})
    a = LedgerRecorder(ledger, run_id=run_a, namespace="live", venue="paper")
    b = LedgerRecorder(ledger, run_id=run_b, namespace="live", venue="paper")
    frame = pd.DataFrame({"signal_id": ["x", "y"], "timestamp": [T0, T0], "symbol": SYM, "side": "buy",
                          "order_type": "market", "quantity": 1.0})
    assert a.claim_signals(frame.iloc[:1], Provenance(run_id=run_a)) == set()
    assert b.claim_signals(frame, Provenance(run_id=run_b)) == {"x"}
    rows = ledger.frame("signals").set_index("signal_id")
    assert rows.loc["x", "run_id"] == run_a and rows.loc["y", "run_id"] == run_b


def test_two_processes_racing_on_the_same_ids_place_one_order_each(ledger: Ledger, ledger_url: str,
                                                                   tmp_path: Path) -> None:
    ids = [f"race-{i}" for i in range(10)]
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_LOGGING_LEVEL": "WARNING"}
    workers = [subprocess.Popen([sys.executable, "-m", "tests.tasks.claim_worker", ledger_url, str(go), *ids],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("go.ready.*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # both have imported and opened the ledger; then both start at once
    go.touch()
    results = []
    for w in workers:
        out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err[-2000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert [r["errors"] for r in results] == [[], []]
    placed = results[0]["placed"] + results[1]["placed"]
    assert sorted(placed) == sorted(ids)  # each id placed by exactly one worker
    print("placed per worker:", [len(r["placed"]) for r in results])
    orders = ledger.frame("orders")
    assert len(orders) == len(ids) and orders["client_order_id"].is_unique
    signals = ledger.frame("signals")
    assert sorted(signals["signal_id"]) == sorted(ids)
    again = ledger.frame("rejections")
    assert sorted(again["signal_id"]) == sorted(ids)  # the loser of each id: a clean rejection
    assert again["reason"].str.startswith("signal already received").all()
