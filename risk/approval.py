"""Human approval of large orders, between step 4 (pre-checks) and step 5 (placement).

An order whose notional (quantity x reference price, in the quote currency; the limit
price when there is no reference price) is above the configured threshold waits for a
person: the live flow pauses with an approval form in the Prefect UI showing the order
and the risk checks it passed. Approve: the order goes on to placement. Refuse, or no
answer within the timeout: the order is rejected with that reason in the ledger. Every
request and decision is audited (who, when) and alerted.

This module is Prefect-free: which orders need approval (`needs_approval`), the form's
fields (`ApprovalForm`) and text (`ApprovalRequest.description`), what an answer means
(`Decision`), and recording a decision (`record_decision`). The flow only pauses and
reads the answer (`flows/live_execution.py`); the streaming session holds such an order
without pausing (`tradpal.streaming.ApprovalHolds`, its approval run in `flows/live_stream.py`).

Configuration: ``approval.notional_above`` / ``approval.timeout_s`` in the risk YAML, or
``TRADPAL_APPROVAL_NOTIONAL`` / ``TRADPAL_APPROVAL_TIMEOUT_S``; off unless a threshold is set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

STEP = "approval"  # the step name on rejections and in the audit log
DEFAULT_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class ApprovalPolicy:
    """``notional_above`` None: approval is off. ``poll_s``: how often the paused run
    looks for an answer."""

    notional_above: float | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    poll_s: float = 1.0

    def __post_init__(self) -> None:
        if self.notional_above is not None and not self.notional_above > 0:
            raise ValueError(f"approval.notional_above: must be > 0, got {self.notional_above}")
        if not self.timeout_s > 0:
            raise ValueError(f"approval.timeout_s: must be > 0, got {self.timeout_s}")

    @property
    def enabled(self) -> bool:
        return self.notional_above is not None


def policy_from(settings: Any = None, risk: Any = None) -> ApprovalPolicy:
    """The risk configuration's ``approval`` section when it sets a threshold, else the
    settings' ``approval_notional`` / ``approval_timeout_s``; off when neither does."""
    section = getattr(risk, "approval", None)
    if section is not None and section.notional_above is not None:
        return ApprovalPolicy(section.notional_above, section.timeout_s)
    threshold = getattr(settings, "approval_notional", None)
    timeout = getattr(settings, "approval_timeout_s", None) or DEFAULT_TIMEOUT_S
    return ApprovalPolicy(threshold, timeout) if threshold is not None else ApprovalPolicy()


def notionals(orders: pd.DataFrame) -> np.ndarray:
    """Quantity x reference price (the limit price where there is none; NaN if neither)."""
    ref = orders["reference_price"].to_numpy("float64")
    price = orders["price"].to_numpy("float64")
    return orders["quantity"].to_numpy("float64") * np.where(np.isnan(ref), price, ref)


def needs_approval(orders: pd.DataFrame, policy: ApprovalPolicy) -> np.ndarray:
    """Per order: True if it must wait for a person. An order that cannot be valued
    (no reference or limit price) waits too: it might be large."""
    if not policy.enabled or orders.empty:
        return np.zeros(len(orders), dtype=bool)
    value = notionals(orders)
    return np.isnan(value) | (value > policy.notional_above)


def checks_passed(config: Any, symbol: str) -> list[str]:
    """The step-4 checks an order on ``symbol`` passed to get here, as ``config``
    (`tasks.context.PipelineConfig`) set them up."""
    rules = config.rules_for(symbol)
    out = ["no circuit breaker halting the symbol or the portfolio", f"symbol {symbol} known to the venue",
           f"quantity >= {rules.min_quantity:g} and notional >= {rules.min_notional:g} (venue minimums)",
           f"limit/stop price within {config.max_price_deviation:.0%} of the reference price"]
    risk = config.risk
    if risk is not None:
        p = risk.portfolio
        limits = [f"drawdown <= {p.max_drawdown:.0%}", f"daily loss <= {p.max_daily_loss:.0%}",
                  f"gross exposure <= {p.max_gross_exposure:g}x equity"]
        if p.max_open_orders is not None:
            limits.append(f"open orders <= {p.max_open_orders}")
        if p.max_order_notional is not None:
            limits.append(f"order notional <= {p.max_order_notional:g}")
        asset = risk.assets.get(symbol)
        if asset is not None and asset.max_position is not None:
            limits.append(f"position <= {asset.max_position:g} {symbol.split('/')[0]}")
        sector = risk.sector_of(symbol)
        if sector is not None:
            limits.append(f"sector {sector} exposure <= {risk.sectors[sector].max_exposure:.0%}")
        out.append("risk limits: " + ", ".join(limits))
    if config.check_balance:
        out.append(f"cash/position projected over the batch, fees estimated at {config.fee_rate_estimate:.2%}")
    return out


class ApprovalForm(BaseModel):
    """The fields a person fills in to answer (the Prefect UI renders them as a form)."""

    model_config = ConfigDict(extra="forbid")

    approve: bool = Field(False, description="Tick to place the order; leave unticked to refuse it.")
    approver: str = Field(min_length=1, max_length=128, description="Your name (recorded in the audit log).")
    comment: str = Field("", max_length=500, description="Why (recorded with the decision).")

    @field_validator("approver")
    @classmethod
    def _named(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("approver: give your name")
        return v.strip()


def _num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


@dataclass(frozen=True)
class ApprovalRequest:
    """One order waiting for a person, with what they need to decide."""

    signal_id: str
    client_order_id: str
    symbol: str
    side: str
    order_type: str
    quantity: float
    price: float | None
    reference_price: float | None
    notional: float | None
    strategy: str
    threshold: float
    timeout_s: float
    checks: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_order(cls, order: dict, policy: ApprovalPolicy, checks: list[str]) -> ApprovalRequest:
        ref, price = _num(order.get("reference_price")), _num(order.get("price"))
        basis = ref if ref is not None else price
        return cls(str(order["signal_id"]), str(order["client_order_id"]), str(order["symbol"]), str(order["side"]),
                   str(order["order_type"]), float(order["quantity"]), price, ref,
                   None if basis is None else float(order["quantity"]) * basis, str(order.get("strategy", "")),
                   float(policy.notional_above or 0.0), policy.timeout_s, tuple(checks))

    def headline(self) -> str:
        notional = "unknown notional" if self.notional is None else f"notional {self.notional:,.2f}"
        return f"{self.side} {self.quantity:g} {self.symbol} ({self.order_type}, {notional})"

    def description(self) -> str:
        """The form's text (markdown): the order, why it waits, the checks it passed."""
        price = "market" if self.price is None else f"{self.price:g}"
        ref = "none" if self.reference_price is None else f"{self.reference_price:g}"
        notional = "unknown" if self.notional is None else f"{self.notional:,.2f}"
        lines = [f"## Approve order {self.client_order_id}?", "",
                 f"**{self.headline()}** is above the approval threshold of {self.threshold:,.2f}.", "",
                 "| field | value |", "|---|---|",
                 f"| signal | `{self.signal_id}` |", f"| client order id | `{self.client_order_id}` |",
                 f"| strategy | {self.strategy} |", f"| symbol | {self.symbol} |", f"| side | {self.side} |",
                 f"| type | {self.order_type} |", f"| quantity | {self.quantity:g} |", f"| limit price | {price} |",
                 f"| reference price | {ref} |", f"| notional | {notional} |", "",
                 "Risk checks passed (step 4):", "", *[f"- {c}" for c in self.checks], "",
                 f"Tick **approve** to place it; leave it unticked to refuse. Give your name. Without an answer "
                 f"within {self.timeout_s:g} s the order is cancelled."]
        return "\n".join(lines)

    def payload(self) -> dict:
        return {"symbol": self.symbol, "side": self.side, "quantity": self.quantity, "order_type": self.order_type,
                "price": self.price, "reference_price": self.reference_price, "notional": self.notional,
                "threshold": self.threshold, "timeout_s": self.timeout_s, "checks": list(self.checks)}


OUTCOMES = ("approved", "refused", "timeout", "cancelled")
EVENTS = {"approved": "order.approved", "refused": "order.refused", "timeout": "order.approval_timeout",
          "cancelled": "order.approval_cancelled"}


@dataclass(frozen=True)
class Decision:
    """What became of a request: ``outcome`` approved | refused | timeout | cancelled,
    ``by`` whom (None on a timeout), ``at`` when (UTC). Cancelled: no person decided and the
    wait ended for another reason, given as ``comment`` (the streaming session stopped)."""

    outcome: str
    at: datetime
    by: str | None = None
    comment: str = ""

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"decision outcome must be one of {OUTCOMES}, got {self.outcome!r}")

    @property
    def approved(self) -> bool:
        return self.outcome == "approved"

    @classmethod
    def from_form(cls, form: ApprovalForm, at: datetime) -> Decision:
        return cls("approved" if form.approve else "refused", at, form.approver, form.comment)

    @classmethod
    def timed_out(cls, at: datetime | None = None) -> Decision:
        return cls("timeout", at or datetime.now(UTC))

    @classmethod
    def cancelled(cls, why: str, at: datetime | None = None) -> Decision:
        return cls("cancelled", at or datetime.now(UTC), comment=why)

    def reason(self, request: ApprovalRequest) -> str:
        """The rejection reason for a refused or timed-out order."""
        when = self.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if self.outcome == "timeout":
            return f"approval timed out: no answer within {request.timeout_s:g} s (cancelled at {when})"
        if self.outcome == "cancelled":
            return f"approval cancelled at {when}: {self.comment}"
        why = f": {self.comment}" if self.comment else ""
        return f"approval refused by {self.by} at {when}{why}"


def record_request(ledger: Any, request: ApprovalRequest, prov: Any, *, flow_run_id: str | None) -> None:
    """Audit that ``request`` now waits for a person (and in which Prefect flow run)."""
    with ledger.transaction() as s:
        ledger.audit(s, "order.approval_requested", "order", entity_id=request.client_order_id,
                     payload={**request.payload(), "signal_id": request.signal_id, "flow_run_id": flow_run_id},
                     prov=prov)


def record_decision(ledger: Any, request: ApprovalRequest, decision: Decision, prov: Any, *,
                    namespace: str, venue: str) -> None:
    """One transaction: the decision in the audit log (who, when, comment); a refused or
    timed-out order also becomes REJECTED with the reason, with a rejection row (step
    ``approval``) for its signal."""
    at = decision.at.astimezone(UTC)
    payload = {"decision": decision.outcome, "decided_by": decision.by, "decided_at": at.isoformat(),
               "comment": decision.comment, "signal_id": request.signal_id, **request.payload()}
    rows = [{"event": EVENTS[decision.outcome], "entity": "order", "entity_id": request.client_order_id,
             "payload": payload}]
    with ledger.transaction() as s:
        if not decision.approved:
            reason = decision.reason(request)
            ledger.record_rejections(s, pd.DataFrame({
                "signal_id": [request.signal_id], "client_order_id": [request.client_order_id], "step": [STEP],
                "reason": [reason], "payload": [{"decided_by": decision.by, "decided_at": at.isoformat()}]}),
                namespace=namespace, prov=prov)
            ledger.update_orders(s, pd.DataFrame({
                "client_order_id": [request.client_order_id], "status": ["REJECTED"], "reason": [reason],
                "updated_at": [pd.Timestamp(at)]}), venue=venue, prov=prov)
            rows.append({"event": "signal.rejected", "entity": "signal", "entity_id": request.signal_id,
                         "payload": {"step": STEP, "reason": reason}})
        ledger.audit_many(s, rows, prov=prov)


def request_alert(alerter: Any, request: ApprovalRequest, *, flow_run_id: str | None, ui_url: str | None = None):
    """Tell people an order waits for them (and where to answer)."""
    where = f" Answer in the Prefect UI: {ui_url}" if ui_url else f" Answer in the Prefect UI (flow run {flow_run_id})."
    return alerter.notify(f"approval:request:{request.client_order_id}",
                          f"TradPal approval needed: {request.headline()}",
                          f"Order {request.client_order_id} for signal {request.signal_id} (strategy {request.strategy}) "
                          f"is above the approval threshold of {request.threshold:,.2f} and waits up to "
                          f"{request.timeout_s:g} s.{where}", level="warning")


def decision_alert(alerter: Any, request: ApprovalRequest, decision: Decision, *, flow_run_id: str | None):
    """One alert per decision: approved (info), refused or timed out (warning)."""
    if decision.approved:
        when = decision.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        what, body, level = "approved", f"approved by {decision.by} at {when}", "info"
    else:
        what = {"refused": "refused", "timeout": "timed out", "cancelled": "cancelled"}[decision.outcome]
        body, level = decision.reason(request), "warning"
    comment = f" Comment: {decision.comment}." if decision.comment and decision.approved else ""
    return alerter.notify(f"approval:{decision.outcome}:{request.client_order_id}",
                          f"TradPal order {what}: {request.headline()}",
                          f"Order {request.client_order_id} for signal {request.signal_id}: {body}.{comment} "
                          f"Flow run {flow_run_id}.", level=level)


STREAM_REFUSAL = ("approval needs a person and the streaming session (tradpal live run) does not pause for one: "
                  "send orders above the threshold through the live-execution deployment")


def refused_in_stream(request: ApprovalRequest) -> Decision:
    """The answer `tradpal live run` gives an order above the approval threshold: refused
    at once (one long run serving every signal cannot pause for a person)."""
    return Decision("refused", datetime.now(UTC), by="tradpal live run", comment=STREAM_REFUSAL)


def request_for(order: dict, ctx: Any, policy: ApprovalPolicy) -> ApprovalRequest:
    """The request for one checked order (a row of step 4's frame, as a dict)."""
    return ApprovalRequest.from_order(order, policy, checks_passed(ctx.config, str(order["symbol"])))


def open_request(ctx: Any, request: ApprovalRequest, prov: Any, *, alert: bool = True,
                 ui_url: str | None = None) -> None:
    """Audit the request (``order.approval_requested``) and, with ``alert``, tell people."""
    record_request(ctx.recorder.ledger, request, prov, flow_run_id=prov.flow_run_id)
    if alert:
        alert_request(ctx, request, prov, ui_url=ui_url)


def alert_request(ctx: Any, request: ApprovalRequest, prov: Any, *, ui_url: str | None = None) -> None:
    if ctx.alerter is not None:
        ctx.recorder.record_alerts([request_alert(ctx.alerter, request, flow_run_id=prov.flow_run_id,
                                                  ui_url=ui_url)], prov)


def close_request(ctx: Any, request: ApprovalRequest, decision: Decision, prov: Any) -> None:
    """Record ``decision`` (`record_decision`: audit, and the rejection unless approved),
    alert it, and count a rejection as ``approval.rejected``."""
    record_decision(ctx.recorder.ledger, request, decision, prov, namespace=ctx.namespace, venue=ctx.venue)
    if ctx.alerter is not None:
        ctx.recorder.record_alerts([decision_alert(ctx.alerter, request, decision,
                                                   flow_run_id=prov.flow_run_id)], prov)
    ctx.counts[f"{STEP}.rejected"] += 0 if decision.approved else 1


async def review(orders: pd.DataFrame, ctx: Any, policy: ApprovalPolicy, ask, *,
                 ui_url: str | None = None) -> pd.DataFrame:
    """The orders of ``orders`` (a checked frame) that may go on to placement: those
    below the threshold, and those a person approved. ``ask(request)`` waits for the
    answer and returns a `Decision` (the flow pauses in the Prefect UI). Each request and
    decision is audited and alerted (``ui_url``: where to answer, in the alert); refused
    and timed-out orders are rejected in the ledger (`record_decision`) and counted as
    ``approval.rejected``."""
    from tasks.pipeline import provenance

    waiting = needs_approval(orders, policy)
    if not waiting.any():
        return orders
    keep = ~waiting
    for i in np.flatnonzero(waiting):
        prov = provenance(ctx)
        request = request_for(orders.iloc[i].to_dict(), ctx, policy)
        open_request(ctx, request, prov, ui_url=ui_url)
        decision = await ask(request)
        close_request(ctx, request, decision, prov)
        keep[i] = decision.approved
    return orders.loc[keep].reset_index(drop=True)
