"""The recorder: one ledger transaction per step call, rejections with their step and
reason, provenance on every row; the null recorder for unit tests."""

from __future__ import annotations

import inspect

import pandas as pd
import pytest

from tasks.context import PipelineConfig, SymbolRules
from tasks.contracts import validate
from tasks.orders import client_order_id
from tasks.pipeline import STEPS
from tasks.recorder import LedgerRecorder, NullRecorder
from tasks.step import no_rejections, rejections
from tests.tasks.conftest import SYM, bars, build_context, raw_signals, run, run_through, t
from tradpal.ledger import Ledger, Provenance

BARS = {SYM: bars([(100, 100, 100, 100), (101, 101, 101, 101), (102, 102, 102, 102)])}


@pytest.fixture
def setup(ledger: Ledger):
    """A replay context with a NullRecorder (steps are recorded by hand here), and a
    LedgerRecorder on a run in the ledger."""
    run_id = ledger.start_run("replay", {})
    ctx = build_context(market=BARS, run_id=run_id, config=PipelineConfig(order_timeout_s=None),
                        taker_fee=0.001)
    ctx.monitor_until = t(3)
    recorder = LedgerRecorder(ledger, run_id=run_id, namespace=ctx.namespace, venue=ctx.venue)
    prov = Provenance(run_id=run_id, flow_run_id="flow-1", task_run_id="task-1")
    return ctx, recorder, prov


def record_up_to(last: str, raw: pd.DataFrame, ctx, recorder: LedgerRecorder, prov: Provenance) -> dict:
    """Run the steps up to ``last``, recording each outcome with ``prov`` by hand."""
    frames, frame = {}, raw
    for step in STEPS:
        result = step.fn(frame, ctx)
        result = run(result) if inspect.isawaitable(result) else result
        frame = validate(result.frame, step.output, step=step.name)
        recorder.record(step.name, frame, result.rejected, prov, result.extra)
        frames[step.name] = frame
        if step.name == last:
            return frames
    raise ValueError(last)


def test_null_recorder_records_nothing_and_knows_nothing() -> None:
    rec = NullRecorder()
    assert rec.known_signal_ids(["a"]) == set()
    assert rec.record("intake", pd.DataFrame(), no_rejections(), Provenance()) is None
    assert rec.record_failure("placement", pd.DataFrame(), "x", Provenance()) is None


def test_intake_records_signals_with_provenance_and_an_audit_row(ledger: Ledger, setup) -> None:
    ctx, rec, prov = setup
    signals = run_through(raw_signals({}, {"side": "sell"}), ctx, "intake")
    rec.record("intake", signals, no_rejections(), prov)
    rows = ledger.frame("signals", run_id=ctx.run_id)
    assert rows["signal_id"].tolist() == ["s1", "s2"]
    assert rows[["flow_run_id", "task_run_id"]].drop_duplicates().to_numpy().tolist() == [["flow-1", "task-1"]]
    assert (rows["namespace"] == ctx.namespace).all()
    audit = ledger.frame("audit_log", run_id=ctx.run_id)
    assert audit[["event", "entity"]].to_numpy().tolist() == [["step.intake", "batch"]]
    assert audit.loc[0, "payload"] == {"rows_out": 2, "rejected": 0}
    assert rec.known_signal_ids(["s1", "s3"]) == {"s1"}
    assert rec.known_signal_ids([]) == set()


def test_rejections_are_written_with_step_reason_and_an_audit_row_each(ledger: Ledger, setup) -> None:
    ctx, rec, prov = setup
    rec.record("intake", run_through(raw_signals({}).iloc[0:0], ctx, "intake"),
               rejections(["a", "b"], ["side: bad", "quantity: bad"]), prov)
    rows = ledger.frame("rejections", run_id=ctx.run_id)
    assert rows[["signal_id", "step", "reason"]].to_numpy().tolist() == [
        ["a", "intake", "side: bad"], ["b", "intake", "quantity: bad"]]
    assert rows["client_order_id"].isna().all()
    assert (rows["task_run_id"] == "task-1").all()
    audit = ledger.frame("audit_log", run_id=ctx.run_id)
    rejected = audit[audit["event"] == "signal.rejected"]
    assert rejected["entity_id"].tolist() == ["a", "b"]
    assert rejected["payload"].tolist() == [{"step": "intake", "reason": "side: bad"},
                                            {"step": "intake", "reason": "quantity: bad"}]


def test_a_pre_check_rejection_marks_its_order_rejected(ledger: Ledger, setup) -> None:
    ctx, rec, prov = setup
    ctx.config = PipelineConfig(rules={SYM: SymbolRules(min_quantity=2.0)}, order_timeout_s=None)
    record_up_to("pre_checks", raw_signals({"timestamp": t(1)}, {"timestamp": t(1), "quantity": 3.0}), ctx, rec, prov)
    orders = ledger.frame("orders", run_id=ctx.run_id).set_index("client_order_id")
    assert orders.loc[client_order_id("s1"), "status"] == "REJECTED"
    assert orders.loc[client_order_id("s1"), "reason"] == "quantity 1 below the minimum 2 for BTC/USDT"
    assert orders.loc[client_order_id("s2"), "status"] == "CREATED"
    [step] = ledger.frame("rejections", run_id=ctx.run_id)["step"].tolist()
    assert step == "pre_checks"


def test_an_order_refused_at_creation_is_a_rejection_not_an_order(ledger: Ledger, setup) -> None:
    ctx, rec, prov = setup
    ctx.config = PipelineConfig(rules={SYM: SymbolRules(lot_size=1.0)}, order_timeout_s=None)
    record_up_to("order_creation", raw_signals({"quantity": 0.5}, {"quantity": 1.5}), ctx, rec, prov)
    assert ledger.frame("orders", run_id=ctx.run_id)["client_order_id"].tolist() == [client_order_id("s2")]
    rows = ledger.frame("rejections", run_id=ctx.run_id)
    assert rows[["signal_id", "client_order_id", "step"]].to_numpy().tolist() == [
        ["s1", client_order_id("s1"), "order_creation"]]


def test_placement_and_monitoring_update_orders_and_record_fills(ledger: Ledger, setup) -> None:
    ctx, rec, prov = setup
    frames = record_up_to("monitoring", raw_signals({"timestamp": t(1), "quantity": 2.0}), ctx, rec, prov)
    [order] = ledger.frame("orders", run_id=ctx.run_id).to_dict("records")
    assert (order["broker_order_id"], order["status"]) == ("paper-1", "FILLED")
    assert (order["filled_quantity"], order["avg_price"], order["fees"]) == (2.0, 101.0, pytest.approx(0.202))
    assert order["placed_at"] == t(1)
    [fill] = ledger.frame("fills", run_id=ctx.run_id).to_dict("records")
    assert (fill["trade_id"], fill["quantity"], fill["price"], fill["fee"]) == ("paper-1-1", 2.0, 101.0,
                                                                                pytest.approx(0.202))
    assert fill["reference_price"] == 101.0  # the fill model's price, not the signal's reference (100)
    assert fill["timestamp"] == t(2)
    events = ledger.frame("audit_log", run_id=ctx.run_id)["event"].tolist()
    assert "order.placed" in events and "order.filled" in events

    rec.record("monitoring", frames["monitoring"], no_rejections(), prov)  # recorded again (a retry)
    assert len(ledger.frame("fills", run_id=ctx.run_id)) == 1


def test_positions_records_the_snapshot(ledger: Ledger, setup) -> None:
    ctx, rec, prov = setup
    record_up_to("positions", raw_signals({"timestamp": t(1)}), ctx, rec, prov)
    [pos] = ledger.frame("positions", run_id=ctx.run_id).to_dict("records")
    assert (pos["symbol"], pos["quantity"], pos["average_price"], pos["market_price"]) == (SYM, 1.0, 101.0, 102.0)
    assert pos["as_of"] == t(3)


def test_record_failure_at_placement_marks_every_order_unknown(ledger: Ledger, setup) -> None:
    ctx, rec, prov = setup
    frames = record_up_to("pre_checks", raw_signals({"timestamp": t(1)}, {"timestamp": t(1)}), ctx, rec, prov)
    rec.record_failure("placement", frames["pre_checks"], "placement failed after 3 retries: down", prov)
    rows = ledger.frame("rejections", run_id=ctx.run_id)
    assert rows[["signal_id", "client_order_id", "step", "reason"]].to_numpy().tolist() == [
        [sid, client_order_id(sid), "placement", "placement failed after 3 retries: down"] for sid in ("s1", "s2")]
    assert set(ledger.frame("orders", run_id=ctx.run_id)["status"]) == {"UNKNOWN"}
    audit = ledger.frame("audit_log", run_id=ctx.run_id)
    failed = audit[audit["event"] == "step.placement.failed"]
    assert failed["payload"].tolist() == [{"reason": "placement failed after 3 retries: down", "rows": 2}]


def test_a_step_is_one_transaction(ledger: Ledger, setup) -> None:
    ctx, rec, prov = setup
    orders = run_through(raw_signals({}), ctx, "order_creation")  # its signal was never recorded
    with pytest.raises(ValueError, match="no such signal"):
        rec.record("order_creation", orders, rejections(["x"], "refused"), prov)
    assert ledger.frame("orders").empty
    assert ledger.frame("rejections").empty
    assert ledger.frame("audit_log").empty
