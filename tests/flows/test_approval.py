"""Human approval in `live_execution` on a real Prefect API: the run pauses with an
approval form; a person answers through the API exactly as the UI does
(`resume_flow_run(flow_run_id, run_input=...)`), or does not answer at all."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback
from datetime import UTC, datetime
from uuid import UUID

import pandas as pd
import pytest

from flows.live_execution import live_execution
from tradpal.ledger import Ledger

PRICE = 50_000.0


def signals() -> list[dict]:
    now = pd.Timestamp.now(tz="UTC").isoformat()
    return [{"timestamp": now, "symbol": "BTC/USDT", "side": "buy", "quantity": 0.01, "signal_id": "small",
             "strategy": "momentum"},  # notional 500: no approval
            {"timestamp": now, "symbol": "BTC/USDT", "side": "buy", "quantity": 0.1, "signal_id": "big",
             "strategy": "momentum"}]  # notional 5,000: waits for a person


class LiveRun:
    """`live_execution` in a thread of its own (it blocks while paused)."""

    def __init__(self, db: str) -> None:
        self.db, self.summary, self.error = db, None, None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.summary = asyncio.run(live_execution(signals(), prices={"BTC/USDT": PRICE}, cash=10_000.0,
                                                      database_url=self.db))
        except BaseException as exc:  # reported by result()
            self.error = exc

    def result(self, timeout: float = 180.0) -> dict:
        """The run's summary. Generous: on a loaded 2-core machine the shared test server's
        SQLite can be busy for a while, and Prefect's client retries (503) until it is not;
        a run still going after ``timeout`` is reported with where its thread waits."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"live_execution did not finish in {timeout:.0f} s; it waits in:\n" + (
            "".join(traceback.format_stack(sys._current_frames()[self.thread.ident])[-12:]))
        if self.error is not None:
            raise self.error
        return self.summary


def wait_for(fn, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def paused_run(db: str, prefect_client) -> UUID:
    """The flow run id once the run waits for approval (from the audit log), checked Paused in Prefect."""
    def requested():
        try:
            audit = Ledger(db, migrate=False).frame("audit_log")
        except Exception:  # not created / migrated yet
            return None
        rows = audit[audit["event"] == "order.approval_requested"]
        return rows["flow_run_id"].iloc[0] if len(rows) else None

    flow_run_id = UUID(wait_for(requested, what="the approval request"))
    wait_for(lambda: prefect_client(lambda c: c.read_flow_run(flow_run_id)).state.is_paused(), what="Paused")
    return flow_run_id


def form_of(prefect_client, flow_run_id: UUID) -> tuple[str, dict]:
    """The form's description and JSON schema, as the UI reads them."""
    import json

    run = prefect_client(lambda c: c.read_flow_run(flow_run_id))
    keys = run.state.state_details.run_input_keyset
    description = prefect_client(lambda c: c.read_flow_run_input(flow_run_id, keys["description"]))
    schema = prefect_client(lambda c: c.read_flow_run_input(flow_run_id, keys["schema"]))
    return json.loads(description), json.loads(schema)


def answer(flow_run_id: UUID, run_input: dict) -> None:
    from prefect.flow_runs import resume_flow_run

    resume_flow_run(flow_run_id, run_input=run_input)


def decision_row(ledger: Ledger, run_id: str, event: str) -> dict:
    audit = ledger.frame("audit_log", run_id=run_id)
    rows = audit[audit["event"] == event]
    assert len(rows) == 1, audit["event"].tolist()
    return rows.iloc[0].to_dict()


def test_approved_order_is_placed_and_audited(prefect_api, prefect_client, tmp_path, approval_env):
    received = approval_env
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    run = LiveRun(db)
    flow_run_id = paused_run(db, prefect_client)
    description, schema = form_of(prefect_client, flow_run_id)
    for part in ("big", "buy 0.1 BTC/USDT", "5,000.00", "threshold of 1,000.00", "Risk checks passed",
                 "symbol BTC/USDT known", "cash/position projected"):
        assert part in description, part
    assert set(schema["properties"]) == {"approve", "approver", "comment"} and "approver" in schema["required"]
    with pytest.raises(RuntimeError, match="approver"):  # the server checks the answer against the form
        answer(flow_run_id, {"approve": True})
    before = datetime.now(UTC)
    answer(flow_run_id, {"approve": True, "approver": "alice", "comment": "desk limit ok"})
    summary = run.result()

    assert summary["n_fills"] == 2 and summary["rejected"] == 0
    ledger = Ledger(db)
    orders = ledger.frame("orders", run_id=summary["run_id"]).set_index("client_order_id")
    assert sorted(orders["status"]) == ["FILLED", "FILLED"]
    row = decision_row(ledger, summary["run_id"], "order.approved")
    assert row["payload"]["decided_by"] == "alice" and row["payload"]["comment"] == "desk limit ok"
    decided_at = datetime.fromisoformat(row["payload"]["decided_at"])
    assert before - pd.Timedelta(seconds=1) <= decided_at <= datetime.now(UTC)
    assert row["flow_run_id"] == str(flow_run_id) and row["entity_id"] in orders.index
    assert decision_row(ledger, summary["run_id"], "order.approval_requested")["payload"]["notional"] == 5000.0
    titles = [r["json"]["title"] for r in received]
    assert titles == ["TradPal approval needed: buy 0.1 BTC/USDT (market, notional 5,000.00)",
                      "TradPal order approved: buy 0.1 BTC/USDT (market, notional 5,000.00)"]
    assert "approved by alice" in received[1]["json"]["message"]
    assert prefect_client(lambda c: c.read_flow_run(flow_run_id)).state.is_completed()


def test_refused_order_is_rejected_with_the_reason(prefect_api, prefect_client, tmp_path, approval_env):
    received = approval_env
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    run = LiveRun(db)
    flow_run_id = paused_run(db, prefect_client)
    answer(flow_run_id, {"approve": False, "approver": "bob", "comment": "too large today"})
    summary = run.result()

    assert summary["n_fills"] == 1 and summary["rejected"] == 1
    ledger = Ledger(db)
    rej = ledger.frame("rejections", run_id=summary["run_id"]).set_index("signal_id")
    assert list(rej.index) == ["big"] and rej.loc["big", "step"] == "approval"
    assert rej.loc["big", "reason"].startswith("approval refused by bob at ")
    assert rej.loc["big", "reason"].endswith(": too large today")
    orders = ledger.frame("orders", run_id=summary["run_id"])
    big = orders[orders["client_order_id"] == rej.loc["big", "client_order_id"]].iloc[0]
    assert big["status"] == "REJECTED" and big["reason"] == rej.loc["big", "reason"]
    assert big["broker_order_id"] is None  # never reached the broker
    row = decision_row(ledger, summary["run_id"], "order.refused")
    assert row["payload"]["decided_by"] == "bob" and row["payload"]["decided_at"]
    assert [r["json"]["title"].split(":")[0] for r in received] == ["TradPal approval needed", "TradPal order refused"]
    assert "refused by bob" in received[1]["json"]["message"]


def test_unanswered_order_is_cancelled_after_the_timeout(prefect_api, prefect_client, tmp_path, approval_env,
                                                        monkeypatch):
    """Configured in the risk YAML this time (TRADPAL_RISK_CONFIG), which wins over the settings."""
    received = approval_env
    risk = tmp_path / "risk.yaml"
    risk.write_text("portfolio: {max_drawdown: 1, max_daily_loss: 1, max_gross_exposure: 10}\n"
                    "approval: {notional_above: 1000, timeout_s: 2}\n")
    monkeypatch.setenv("TRADPAL_RISK_CONFIG", str(risk))
    monkeypatch.setenv("TRADPAL_APPROVAL_NOTIONAL", "999999")
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    t0 = time.monotonic()
    run = LiveRun(db)
    flow_run_id = paused_run(db, prefect_client)
    summary = run.result()
    assert time.monotonic() - t0 >= 2

    assert summary["n_fills"] == 1 and summary["rejected"] == 1
    ledger = Ledger(db)
    rej = ledger.frame("rejections", run_id=summary["run_id"]).set_index("signal_id")
    assert rej.loc["big", "step"] == "approval"
    assert rej.loc["big", "reason"].startswith("approval timed out: no answer within 2 s")
    row = decision_row(ledger, summary["run_id"], "order.approval_timeout")
    assert row["payload"]["decided_by"] is None and row["payload"]["decided_at"]
    assert any(c.startswith("risk limits: drawdown <= 100%") for c in row["payload"]["checks"])
    assert received[-1]["json"]["title"].startswith("TradPal order timed out")
    assert prefect_client(lambda c: c.read_flow_run(flow_run_id)).state.is_completed()
