"""Human approval's plain logic (`risk.approval`): which orders wait, the form, what an
answer means, and the decision in a real ledger. The Prefect pause itself is tested on a
real API in tests/flows/test_approval.py."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from risk.approval import (
    ApprovalForm,
    ApprovalPolicy,
    ApprovalRequest,
    Decision,
    checks_passed,
    needs_approval,
    notionals,
    policy_from,
    review,
)
from risk.config import parse_risk_config
from tasks.context import PipelineConfig, SymbolRules
from tests.tasks.conftest import ledger_context, raw_signals, run, run_through
from tradpal.config import Settings, load_settings
from tradpal.errors import ConfigError

AT = datetime(2026, 11, 24, 8, 30, tzinfo=UTC)
PORTFOLIO = "portfolio: {max_drawdown: 0.2, max_daily_loss: 0.05, max_gross_exposure: 1.0}\n"


def orders(*rows: tuple[float, float, float]) -> pd.DataFrame:
    """(quantity, reference_price, limit price) rows; NaN for none."""
    return pd.DataFrame({"quantity": [r[0] for r in rows], "reference_price": [r[1] for r in rows],
                         "price": [r[2] for r in rows]})


def test_only_orders_strictly_above_the_threshold_wait():
    frame = orders((1, 100, np.nan), (10, 100, np.nan), (11, 100, np.nan))
    assert needs_approval(frame, ApprovalPolicy(1000)).tolist() == [False, False, True]


def test_approval_is_off_by_default():
    assert not ApprovalPolicy().enabled
    assert not needs_approval(orders((1e9, 1e9, np.nan)), ApprovalPolicy()).any()
    assert not policy_from(Settings()).enabled


def test_notional_uses_the_limit_price_without_a_reference_and_an_unvalued_order_waits():
    frame = orders((2, np.nan, 300), (2, np.nan, np.nan))
    assert notionals(frame)[0] == 600
    assert needs_approval(frame, ApprovalPolicy(1000)).tolist() == [False, True]


def test_policy_from_settings_and_from_the_risk_yaml(monkeypatch):
    monkeypatch.setenv("TRADPAL_APPROVAL_NOTIONAL", "2500")
    monkeypatch.setenv("TRADPAL_APPROVAL_TIMEOUT_S", "30")
    assert policy_from(Settings()) == ApprovalPolicy(2500, 30)
    risk = parse_risk_config(PORTFOLIO + "approval: {notional_above: 7000, timeout_s: 120}")
    assert policy_from(Settings(), risk) == ApprovalPolicy(7000, 120)  # the risk YAML wins when it sets one
    assert policy_from(Settings(), parse_risk_config(PORTFOLIO)) == ApprovalPolicy(2500, 30)


def test_bad_thresholds_are_refused_naming_the_key(monkeypatch):
    with pytest.raises(ConfigError, match="approval.notional_above: Input should be greater than 0"):
        parse_risk_config(PORTFOLIO + "approval: {notional_above: -1}")
    with pytest.raises(ValueError, match="approval.notional_above"):
        ApprovalPolicy(0)
    with pytest.raises(ValueError, match="approval.timeout_s"):
        ApprovalPolicy(100, timeout_s=0)
    monkeypatch.setenv("TRADPAL_APPROVAL_NOTIONAL", "-5")
    with pytest.raises(ConfigError, match="TRADPAL_APPROVAL_NOTIONAL"):
        load_settings()


def test_the_form_needs_a_name_and_refuses_unknown_fields():
    assert ApprovalForm(approver=" alice ").approver == "alice"
    assert ApprovalForm(approver="alice").approve is False  # resuming without ticking refuses
    for bad in ({"approve": True}, {"approve": True, "approver": "  "}, {"approver": "a", "amount": 5}):
        with pytest.raises(ValidationError):
            ApprovalForm(**bad)


def request(**kw) -> ApprovalRequest:
    order = {"signal_id": "s1", "client_order_id": "tp-abc-0", "symbol": "BTC/USDT", "side": "buy",
             "order_type": "limit", "quantity": 0.5, "price": 49_000.0, "reference_price": 50_000.0,
             "strategy": "momentum", **kw}
    return ApprovalRequest.from_order(order, ApprovalPolicy(10_000, 300), ["check one", "check two"])


def test_the_description_shows_the_order_and_the_checks_it_passed():
    text = request().description()
    for part in ("tp-abc-0", "`s1`", "momentum", "| quantity | 0.5 |", "| limit price | 49000 |",
                 "| notional | 25,000.00 |", "threshold of 10,000.00", "- check one", "- check two", "300 s"):
        assert part in text, part


def test_checks_passed_follow_the_configuration():
    config = PipelineConfig(rules={"BTC/USDT": SymbolRules(min_quantity=0.001, min_notional=10)})
    checks = checks_passed(config, "BTC/USDT")
    assert any("quantity >= 0.001 and notional >= 10" in c for c in checks)
    assert any("projected" in c for c in checks) and not any(c.startswith("risk limits") for c in checks)
    risk = parse_risk_config("portfolio: {max_drawdown: 0.2, max_daily_loss: 0.05, max_gross_exposure: 1.0, "
                             "max_order_notional: 5000}\nassets: {BTC/USDT: {max_position: 1.5}}")
    limits = [c for c in checks_passed(PipelineConfig(risk=risk, check_balance=False), "BTC/USDT")
              if c.startswith("risk limits")]
    assert len(limits) == 1 and "order notional <= 5000" in limits[0] and "position <= 1.5 BTC" in limits[0]


def test_decision_reasons_say_who_when_and_why():
    req = request()
    refused = Decision.from_form(ApprovalForm(approve=False, approver="bob", comment="too big"), AT)
    assert refused.reason(req) == "approval refused by bob at 2026-11-24T08:30:00Z: too big"
    assert Decision.from_form(ApprovalForm(approve=True, approver="alice"), AT).approved
    assert Decision.timed_out(AT).reason(req) == "approval timed out: no answer within 300 s (cancelled at 2026-11-24T08:30:00Z)"
    with pytest.raises(ValueError, match="outcome"):
        Decision("maybe", AT)


def test_review_places_approved_orders_and_rejects_the_rest_in_the_ledger(ledger):
    """Three orders, two above the threshold: one approved, one refused; the small one never asks."""
    ctx = ledger_context(ledger, kind="live", live=True, prices={"BTC/USDT": 100.0}, namespace="live")
    ctx.market.add("BTC/USDT", pd.DataFrame({"timestamp": [pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=1)],
                                             "open": [100.0], "high": [100.0], "low": [100.0], "close": [100.0],
                                             "volume": [0.0]}))
    now = pd.Timestamp.now(tz="UTC")
    checked = run_through(raw_signals({"signal_id": "small", "quantity": 1, "timestamp": now},
                                      {"signal_id": "yes", "quantity": 20, "timestamp": now},
                                      {"signal_id": "no", "quantity": 30, "timestamp": now}), ctx, "pre_checks")
    asked: list[str] = []

    async def ask(req: ApprovalRequest) -> Decision:
        asked.append(req.signal_id)
        return Decision.from_form(ApprovalForm(approve=req.signal_id == "yes", approver="carol"), AT)

    kept = run(review(checked, ctx, ApprovalPolicy(1000), ask))
    assert asked == ["yes", "no"] and kept["signal_id"].tolist() == ["small", "yes"]
    assert ctx.counts["approval.rejected"] == 1
    rej = ledger.frame("rejections", run_id=ctx.run_id)
    assert rej[["signal_id", "step"]].values.tolist() == [["no", "approval"]]
    assert rej["reason"].iloc[0] == "approval refused by carol at 2026-11-24T08:30:00Z"
    orders_ = ledger.frame("orders", run_id=ctx.run_id).set_index("signal_pk")
    assert sorted(orders_["status"]) == ["CREATED", "CREATED", "REJECTED"]
    audit = ledger.frame("audit_log", run_id=ctx.run_id)
    decided = audit[audit["event"].isin(["order.approved", "order.refused"])]
    assert decided["event"].tolist() == ["order.approved", "order.refused"]
    assert [p["decided_by"] for p in decided["payload"]] == ["carol", "carol"]
    assert all(p["decided_at"] == AT.isoformat() for p in decided["payload"])
    assert (audit["event"] == "order.approval_requested").sum() == 2
