"""The eight steps end to end (`run_batch`) with the ledger on each backend: every
signal ends in exactly one outcome, and the ledger tells the whole story."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.context import PipelineConfig, SymbolRules
from tasks.contracts import ContractViolation
from tasks.orders import client_order_id
from tasks.pipeline import STEPS, Step, run_batch, run_step
from tasks.step import StepResult
from tests.tasks.conftest import FLAT_100, SYM, bars, build_context, ledger_context, raw_signals, run, t
from tradpal.ledger import Ledger

CONFIG = PipelineConfig(rules={SYM: SymbolRules(lot_size=0.01, min_notional=5.0), "ETH/EUR": SymbolRules()},
                        check_balance=False, order_timeout_s=None)

# signal id -> (how it ends, the step that refused it)
EXPECTED = {
    "s1": ("FILLED", None),  # buy 1 at the t(2) open, 100
    "s2": ("rejected", "intake"),  # side 'hold'
    "s3": ("rejected", "sizing"),  # no quantity, sizing method 'signal'
    "s4": ("rejected", "order_creation"),  # 0.004 floors to 0 at the 0.01 lot
    "s5": ("rejected", "pre_checks"),  # notional 0.02 x 100 = 2 < 5
    "s6": ("rejected", "placement"),  # EUR is not the account's quote currency
    "s7": ("rejected", "monitoring"),  # 20 x 100 = 2,000 > the 900 left at fill time
    "s8": ("CANCELED", None),  # limit 90 on flat bars at 100: canceled at the end of the data
    "s9": ("FILLED", None),  # sell 0.5 of s1's 1
}


def scenario(ledger: Ledger):
    ctx = ledger_context(ledger, market={SYM: bars([FLAT_100] * 4)}, config=CONFIG, cash=1_000.0)
    ctx.monitor_until, ctx.final = t(4), True
    raw = raw_signals({}, {"side": "hold"}, {"quantity": np.nan}, {"quantity": 0.004}, {"quantity": 0.02},
                      {"symbol": "ETH/EUR"}, {"quantity": 20.0}, {"order_type": "limit", "limit_price": 90.0},
                      {"side": "sell", "quantity": 0.5})
    raw["timestamp"] = t(1)
    return ctx, raw


def test_run_batch_records_everything_and_every_signal_ends_once(ledger: Ledger) -> None:
    ctx, raw = scenario(ledger)
    report = run(run_batch(raw, ctx))
    run_id = ctx.run_id

    # the final report: two fills and one cancel (the refusal at fill time is a rejection)
    assert sorted(zip(report["signal_id"], report["exec_type"], strict=True)) == [
        ("s1", "FILL"), ("s7", "REJECTED"), ("s8", "CANCELED"), ("s9", "FILL")]

    signals = ledger.frame("signals", run_id=run_id)
    assert sorted(signals["signal_id"]) == ["s1", "s3", "s4", "s5", "s6", "s7", "s8", "s9"]

    rejections = ledger.frame("rejections", run_id=run_id)
    assert dict(zip(rejections["signal_id"], rejections["step"], strict=True)) == {
        sid: step for sid, (outcome, step) in EXPECTED.items() if outcome == "rejected"}
    assert rejections["reason"].notna().all() and (rejections["reason"].str.len() > 0).all()
    assert (rejections["namespace"] == ctx.namespace).all()
    reason = dict(zip(rejections["signal_id"], rejections["reason"], strict=True))
    assert reason["s2"].startswith("side: unknown side 'hold'")
    assert reason["s4"] == "quantity 0.004 rounds to zero at the lot size"
    assert reason["s5"] == "notional 2 below the minimum 5 for BTC/USDT"
    assert reason["s6"].startswith("InvalidOrderError: quote currency EUR")
    assert reason["s7"].startswith("insufficient funds: buy 20.0 BTC/USDT at 100.0")

    orders = ledger.frame("orders", run_id=run_id).set_index("client_order_id")
    status = {sid: orders.loc[client_order_id(sid), "status"] for sid in ["s1", "s5", "s6", "s7", "s8", "s9"]}
    assert status == {"s1": "FILLED", "s5": "REJECTED", "s6": "REJECTED", "s7": "REJECTED", "s8": "CANCELED",
                      "s9": "FILLED"}
    assert len(orders) == 6  # s4 was refused before it became an order
    s1 = orders.loc[client_order_id("s1")]
    assert (s1["filled_quantity"], s1["avg_price"], s1["broker_order_id"]) == (1.0, 100.0, "paper-1")

    fills = ledger.frame("fills", run_id=run_id)
    assert sorted(zip(fills["side"], fills["quantity"], fills["price"], strict=True)) == [
        ("buy", 1.0, 100.0), ("sell", 0.5, 100.0)]
    assert fills["trade_id"].is_unique

    # exactly one terminal outcome per signal: a fill, a cancel, or a rejection
    outcomes: dict[str, list[str]] = {sid: [] for sid in raw["signal_id"]}
    for sid in rejections["signal_id"]:
        outcomes[sid].append("rejected")
    for sid in EXPECTED:
        coid = client_order_id(sid)
        if coid in orders.index and orders.loc[coid, "status"] in ("FILLED", "CANCELED"):
            outcomes[sid].append(orders.loc[coid, "status"])
    assert outcomes == {sid: [outcome] for sid, (outcome, _) in EXPECTED.items()}

    audit = ledger.frame("audit_log", run_id=run_id)
    events = audit["event"].value_counts().to_dict()
    for s in STEPS:
        assert events[f"step.{s.name}"] == 1
    assert events["signal.rejected"] == 6
    assert events["order.placed"] == 4  # s1, s7, s8, s9
    assert events["order.filled"] == 2
    assert events["order.canceled"] == 1
    assert events["order.rejected"] == 1  # s7, at fill time
    payload = audit.loc[audit["event"] == "step.intake", "payload"].iloc[0]
    assert payload == {"rows_out": 8, "rejected": 1}

    positions = ledger.frame("positions", run_id=run_id)
    assert positions[["symbol", "quantity"]].to_numpy().tolist() == [[SYM, 0.5]]
    assert ctx.book.cash == pytest.approx(1_000.0 - 100.0 + 50.0)
    assert ctx.counts["intake.rejected"] == 1 and ctx.counts["analysis.out"] == 4


def test_lineage_of_a_filled_signal(ledger: Ledger) -> None:
    ctx, raw = scenario(ledger)
    run(run_batch(raw, ctx))
    story = ledger.lineage(ctx.namespace, "s1")
    assert story["signal"]["signal_id"] == "s1"
    assert [o["status"] for o in story["orders"]] == ["FILLED"]
    assert [f["quantity"] for f in story["fills"]] == [1.0]
    assert story["rejections"] == []
    assert {"order.placed", "order.filled"} <= {a["event"] for a in story["audit"]}


def test_a_second_batch_with_the_same_signals_is_ignored_as_a_redelivery(ledger: Ledger) -> None:
    ctx, raw = scenario(ledger)
    run(run_batch(raw, ctx))
    ctx.final = False
    again = run(run_batch(raw.iloc[[0, 8]], ctx))
    assert again.empty
    rejections = ledger.frame("rejections", run_id=ctx.run_id)
    redelivered = rejections[rejections["reason"].str.startswith("signal already received")]
    assert sorted(redelivered["signal_id"]) == ["s1", "s9"]
    assert len(ledger.frame("fills", run_id=ctx.run_id)) == 2


def test_batches_without_signal_ids_get_ids_unique_over_the_run(ledger: Ledger) -> None:
    ctx = ledger_context(ledger, market={SYM: bars([FLAT_100] * 4)}, config=PipelineConfig(order_timeout_s=None))
    raw = raw_signals({"timestamp": t(1)}).drop(columns="signal_id")
    ctx.monitor_until = t(2)
    first = run(run_batch(raw, ctx))
    ctx.monitor_until = t(3)
    second = run(run_batch(raw.assign(timestamp=t(2)), ctx))
    assert first["exec_type"].tolist() == second["exec_type"].tolist() == ["FILL"]
    assert first.loc[0, "signal_id"] != second.loc[0, "signal_id"]
    assert ledger.frame("rejections", run_id=ctx.run_id).empty


def test_a_batch_rejected_entirely_at_intake_still_goes_through_every_step() -> None:
    ctx = build_context(config=PipelineConfig(order_timeout_s=None))
    ctx.monitor_until = t(3)
    report = run(run_batch(raw_signals({"side": "hold"}, {"quantity": -1.0}), ctx))
    assert report.empty
    assert {s.name: ctx.counts[f"{s.name}.out"] for s in STEPS} == {s.name: 0 for s in STEPS}
    assert ctx.counts["intake.rejected"] == 2
    assert ctx.equity_segments[-1]["timestamp"].tolist() == [t(1), t(2), t(3)]  # the chunk was marked


def test_run_step_validates_the_output_and_names_the_step() -> None:
    def broken(frame: pd.DataFrame, ctx) -> StepResult:
        return StepResult(frame.assign(side="hold"))

    bad = Step(2, "sizing", broken, STEPS[0].output)
    ctx = build_context()
    signals = run(run_step(STEPS[0], raw_signals({}), ctx))
    with pytest.raises(ContractViolation, match="step 'sizing' broke contract SignalFrame: column 'side'"):
        run(run_step(bad, signals, ctx))
    assert ctx.counts["sizing.out"] == 0  # nothing recorded for the failed step


def test_run_step_uses_the_call_it_is_given() -> None:
    seen: list[str] = []

    async def call(step: Step, frame: pd.DataFrame, ctx) -> pd.DataFrame:
        seen.append(step.name)
        return await run_step(step, frame, ctx)

    ctx = build_context(config=PipelineConfig(order_timeout_s=None))
    ctx.monitor_until = t(2)
    run(run_batch(raw_signals({}), ctx, call=call))
    assert seen == [s.name for s in STEPS]
    assert [s.title for s in STEPS][:3] == ["1-intake", "2-sizing", "3-order-creation"]
