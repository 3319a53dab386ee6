"""Crash trials: the live process (`tradpal live`, the real ccxt client over HTTP) is
killed with SIGKILL — at a named point (``TRADPAL_CRASH_AT``: between the exchange's
acceptance and the ledger write, after a step's commit, ...) or at a random moment — then
restarted with the same signals (re-delivered, as an at-least-once source would), and
the restart's reconciliation must leave the three invariants holding against the
exchange emulator's own order book, and no run "running" (a killed one is "crashed", its
Prefect flow run Crashed). The emulator is its own process and never crashes.

One ledger and one emulator carry all trials of a session, so each trial's check also
covers everything before it. `make test` runs a handful; `make chaos` sixty."""

from __future__ import annotations

import json
import random
import time
import uuid

import pandas as pd
import pytest

from tests.reliability.invariants import admin, check, read_book
from tests.reliability.live_process import API_KEY, SECRET, SYMBOL, run_live, wait_exit
from tests.reliability.profile import CHAOS, CRASH_TRIALS, REPORT
from tradpal.faults import CRASH_ENV
from tradpal.ledger import Ledger

RUN_TIMEOUT_S = 90.0
# reconciliation settles a signal left without an order by a dead process once it is this
# old (tasks.reconcile.ORPHAN_AFTER_S): the supervisor's restart delay covers it
RESTART_DELAY_S = 2.0
POINTS = ["placement.acked"] * 4 + ["placement.sent"] * 2 + [
    "intake.recorded", "sizing.recorded", "order_creation.recorded", "pre_checks.recorded",
    "placement.recorded", "monitoring.recorded", "positions.recorded"]


def trial_signals(trial: int, rng: random.Random) -> pd.DataFrame:
    """3-6 market signals: mostly fillable buys and sells, now and then one the risk
    checks refuse (more than the account can pay) or the venue's lot size cannot take."""
    rows = []
    for i in range(rng.randint(3, 6)):
        side = rng.choice(["buy", "buy", "sell"])
        quantity = rng.choice([0.05, 0.1, 0.2, 0.3]) if rng.random() > 0.15 else rng.choice([500.0, 0.004])
        rows.append({"timestamp": pd.Timestamp.now(tz="UTC").isoformat(), "symbol": SYMBOL, "side": side,
                     "quantity": quantity, "signal_id": f"crash-{trial}-{i}"})
    return pd.DataFrame(rows)


def plan(trial: int, rng: random.Random, n_signals: int) -> dict:
    if rng.random() < 0.6:
        point = rng.choice(POINTS)
        nth = rng.randint(1, n_signals) if point.startswith("placement.") and point != "placement.recorded" else 1
        return {"mode": "point", "crash_at": f"{point}:{nth}"}
    return {"mode": "random", "after_s": round(rng.uniform(0.2, 2.5), 3)}


def kill(proc) -> None:
    proc.kill()  # SIGKILL, for a Process and a Popen alike


@pytest.mark.parametrize("trial", range(CRASH_TRIALS))
def test_crash_restart_reconcile(rig, trial, prefect_client):
    rng = random.Random(1000 + trial)
    signals = trial_signals(trial, rng)
    path = rig["work"] / f"signals-{trial}.csv"
    signals.to_csv(path, index=False)
    rig["signals"].update(signals["signal_id"])
    how = plan(trial, rng, len(signals))
    argv = ["live", "--signals", str(path), "--quote", "BTC", "--database-url", rig["db"]]
    log = rig["work"] / f"trial-{trial}.log"
    real_exec = CHAOS and trial % 10 == 9  # now and then the real executable, imports and all
    if trial % 7 == 3:  # the market moves between runs: fills at another price
        admin(rig["emulator"].base_url, "advance", {"bars": 1})

    started = pd.Timestamp.now(tz="UTC")
    proc = run_live(rig, argv, {CRASH_ENV: how.get("crash_at", "")}, log, real_exec=real_exec)
    if how["mode"] == "random":
        code = wait_exit(proc, how["after_s"] + (8.0 if real_exec else 0.0))
        if code is None:
            kill(proc)
            code = wait_exit(proc, 10)
    else:
        code = wait_exit(proc, RUN_TIMEOUT_S)
    assert code is not None, f"trial {trial}: the live process did not finish ({log.read_text()[-2000:]})"
    killed = code == -9
    if how["mode"] == "point" and not killed:  # the point was not passed (e.g. fewer orders reached placement)
        assert code == 0, f"trial {trial}: exit {code}\n{log.read_text()[-3000:]}"
    time.sleep(RESTART_DELAY_S)

    restart = run_live(rig, argv, {}, log, real_exec=False)
    code2 = wait_exit(restart, RUN_TIMEOUT_S)
    assert code2 == 0, f"trial {trial}: the restart ended with {code2}\n{log.read_text()[-3000:]}"

    book = read_book(rig["emulator"].base_url, API_KEY, SECRET, [SYMBOL])
    ledger = Ledger(rig["db"])
    outcomes = check(ledger, book, expect_signals=rig["signals"])
    # no run stays "running" after the restart: a killed one is crashed, in Prefect too
    runs = ledger.frame("runs")
    assert "running" not in set(runs["status"]), runs[["id", "status", "params"]].to_string()
    of_proc = pd.Series([(p or {}).get("pid") == proc.pid for p in runs["params"]], index=runs.index, dtype=bool)
    mine = runs[of_proc & (runs["started_at"] >= started)]
    for run in mine[mine["status"] == "crashed"].itertuples():  # a kill after the run finished leaves it so
        assert killed, f"trial {trial}: run {run.id} crashed, but the process was not killed"
        state = prefect_client(lambda c, fid=run.flow_run_id: c.read_flow_run(uuid.UUID(fid))).state
        assert state.is_crashed() or (state.is_final() and run.summary["prefect"].startswith("already")), state
    crashed = int((runs["status"] == "crashed").sum())
    figures = {"campaign": "crash", "trial": trial, **how, "killed": killed, "exec": real_exec,
               "signals": len(signals), "outcomes_so_far": dict(outcomes), "runs_crashed_so_far": crashed}
    for key in ("killed", "signals"):
        rig["totals"][key] = rig["totals"].get(key, 0) + int(figures[key])
    if REPORT:
        with open(REPORT, "a") as out:
            out.write(json.dumps(figures) + "\n")
