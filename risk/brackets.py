"""Brackets: a protective stop and a target on each buy entry of a strategy, as an OCO
pair (one fills, the other is cancelled), the stop optionally trailing.

The risk configuration's ``brackets`` section chooses the legs per strategy
(`risk.config.BracketRule`); each leg's level is a percent of the entry's average fill
price, a multiple of the symbol's ATR at the signal's time, or an absolute price. Legs
are sells for the quantity the entry filled (spot: a long position is protected; a
sell entry gets no bracket). Their client order ids are deterministic: leg 1 is the
stop, leg 2 the target (`tasks.orders.client_order_id`).

A signal may carry its own levels (``stop_loss``, ``take_profit``: absolute prices;
``trailing_stop``): `rule_with_signal` puts them in place of the rule's legs and says
where each leg came from; `signal_level_problem` is the check at the door and at step 1.

The monitoring step (6) runs them: natively where the broker declares
``supports_brackets`` (the paper broker), else emulated with plain orders (it places the
legs as the entry fills — for what has filled, growing with it: stop legs 1, 3, 4, ...,
target legs 2, 500, 501, ... — and cancels the other leg on the first fill). Every leg
is an order in the ledger under the entry's signal; the bracket's life is in the audit
log (``bracket.requested`` / ``opened`` / ``grown`` / ``resumed`` / ``closed``); open legs
(`open_legs`) and entries still working or filled while the process was down
(`working_entries`, with the levels their signals carried: `recorded_specs`) are found
again from the ledger after a restart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pandas as pd

from risk.config import BracketRule, Level

STOP_LEG, TARGET_LEG = 1, 2
LEG_NAMES = {STOP_LEG: "stop", TARGET_LEG: "target"}
MAX_LEG = 999  # an emulated stop is replaced by legs 3, 4, ... as it trails or the bracket grows
TARGET_BASE = 500  # ... and an emulated target by legs 500, 501, ... as the bracket grows
SIGNAL_FIELDS = ("stop_loss", "take_profit", "trailing_stop")


def is_target(leg: int) -> bool:
    return leg == TARGET_LEG or leg >= TARGET_BASE


def leg_name(leg: int) -> str:
    return "target" if is_target(leg) else "stop"


def next_leg(legs, target: bool) -> int:
    """The number of the next replacement leg of that kind (the first is 1 or 2)."""
    used = [n for n in legs if is_target(n) == target]
    if not used:
        return TARGET_LEG if target else STOP_LEG
    if target:
        return max(max(used) + 1, TARGET_BASE)
    return max(max(used) + 1, 3)


def _given(v) -> bool:
    return v is not None and v == v


def signal_spec(stop_loss=None, take_profit=None, trailing_stop=False) -> dict | None:
    """A signal's own bracket levels as recorded (audit ``bracket.requested``), or None
    when it carries none."""
    if not (_given(stop_loss) or _given(take_profit) or bool(trailing_stop)):
        return None
    return {"stop_loss": float(stop_loss) if _given(stop_loss) else None,
            "take_profit": float(take_profit) if _given(take_profit) else None,
            "trailing_stop": bool(trailing_stop)}


def signal_level_problem(side: str, reference: float | None, stop_loss=None, take_profit=None,
                         trailing_stop=False, rule: BracketRule | None = None, *,
                         rule_known: bool = True) -> tuple[str, str] | None:
    """(field, reason) when a signal's own bracket levels cannot be right, else None.

    Levels are absolute prices protecting a buy entry: the stop below the reference
    price, the target above it (when the reference is known: given, or the last close).
    A sell signal carries none (spot: a sell entry gets no bracket). A trailing stop needs
    a stop loss, the signal's or the strategy's (``rule``; not checked unless ``rule_known``)."""
    spec = signal_spec(stop_loss, take_profit, trailing_stop)
    if spec is None:
        return None
    sl, tp = spec["stop_loss"], spec["take_profit"]
    first = "stop_loss" if sl is not None else "take_profit" if tp is not None else "trailing_stop"
    if side != "buy":
        return first, (f"a bracket protects a buy entry: a {side} signal cannot carry "
                       "stop_loss, take_profit or trailing_stop")
    for name, v in (("stop_loss", sl), ("take_profit", tp)):
        if v is not None and not (v > 0 and v != float("inf")):
            return name, f"{name} must be a price > 0, got {v!r}"
    if sl is not None and tp is not None and not sl < tp:
        return "take_profit", f"take_profit {tp:g} must be above stop_loss {sl:g}"
    if _given(reference):
        if sl is not None and not sl < reference:
            return "stop_loss", f"the stop loss {sl:g} of a buy must be below its reference price {reference:g}"
        if tp is not None and not tp > reference:
            return "take_profit", f"the take profit {tp:g} of a buy must be above its reference price {reference:g}"
    if spec["trailing_stop"] and sl is None and rule_known and (rule is None or rule.stop_loss is None):
        return "trailing_stop", "a trailing stop needs a stop_loss (in the signal or the strategy's bracket rule)"
    return None


def rule_with_signal(rule: BracketRule | None, spec: dict | None) -> tuple[BracketRule | None, dict[str, str]]:
    """The bracket of one entry: the strategy's rule (the default) with the signal's own
    levels in place of its legs; and where each leg's level came from (``signal`` or
    ``strategy``), as the audit log records it."""
    if not spec:
        return rule, ({} if rule is None else {k: "strategy" for k in ("stop_loss", "take_profit")
                                                if getattr(rule, k) is not None})
    sources: dict[str, str] = {}
    legs: dict[str, Level | None] = {}
    for key in ("stop_loss", "take_profit"):
        if spec.get(key) is not None:
            legs[key], sources[key] = Level(price=spec[key]), "signal"
        else:
            legs[key] = getattr(rule, key) if rule is not None else None
            if legs[key] is not None:
                sources[key] = "strategy"
    if legs["stop_loss"] is None and legs["take_profit"] is None:
        return None, {}
    trailing = (bool(spec.get("trailing_stop")) or (rule is not None and rule.trailing)) and legs["stop_loss"] is not None
    if spec.get("trailing_stop"):
        sources["trailing"] = "signal"
    elif trailing:
        sources["trailing"] = "strategy"
    return BracketRule(stop_loss=legs["stop_loss"], take_profit=legs["take_profit"], trailing=trailing), sources


def leg_price(level: Level | None, entry: float, atr: float, sign: int) -> float | None:
    """The level's price for an entry at ``entry``: ``sign`` -1 below (stop), +1 above (target)."""
    if level is None:
        return None
    if level.price is not None:
        return level.price
    if level.percent is not None:
        return entry * (1 + sign * level.percent)
    assert level.atr_multiple is not None
    return entry + sign * level.atr_multiple * atr if atr == atr else None


def levels_for(rule: BracketRule, atr: Callable[[int], float]) -> Callable[[float], tuple[float | None, float | None]]:
    """(stop, target) for an entry's average price; a leg on the wrong side of the entry
    (a stop at or above it, a target at or below it) or without an ATR is left out."""
    stop_atr = atr(rule.stop_loss.atr_period) if rule.stop_loss and rule.stop_loss.atr_multiple else float("nan")
    target_atr = atr(rule.take_profit.atr_period) if rule.take_profit and rule.take_profit.atr_multiple \
        else float("nan")

    def levels(entry: float) -> tuple[float | None, float | None]:
        stop = leg_price(rule.stop_loss, entry, stop_atr, -1)
        target = leg_price(rule.take_profit, entry, target_atr, +1)
        return (stop if stop is not None and 0 < stop < entry else None,
                target if target is not None and target > entry else None)

    return levels


def describe(level: Level) -> str:
    if level.price is not None:
        return f"price {level.price:g}"
    if level.percent is not None:
        return f"percent {level.percent:g}"
    return f"{level.atr_multiple:g} x ATR({level.atr_period})"


def skipped_legs(rule: BracketRule, stop: float | None, target: float | None, entry: float) -> list[str]:
    """Why a configured leg was not placed (for the audit log and the alert)."""
    out = []
    if rule.stop_loss is not None and stop is None:
        out.append(f"stop_loss ({describe(rule.stop_loss)}) gives no price below the entry {entry:g}")
    if rule.take_profit is not None and target is None:
        out.append(f"take_profit ({describe(rule.take_profit)}) gives no price above the entry {entry:g}")
    return out


@dataclass(frozen=True)
class Bracket:
    """Monitoring's view of one bracket. ``state``: pending (the entry is working), open
    (legs working), closed."""

    signal_id: str
    entry: str  # the entry's client order id
    symbol: str
    strategy: str
    legs: dict[int, str]  # leg number -> client order id
    native: bool
    trailing: bool = False
    state: str = "pending"
    levels: Callable[[float], tuple[float | None, float | None]] | None = field(default=None, compare=False)
    rule: BracketRule | None = None
    signal_time: pd.Timestamp | None = None
    stop: float | None = None  # the working stop's price
    trail: float | None = None  # emulated trailing: the stop's distance below the high water
    high_water: float = 0.0
    watched_ns: int = 0  # emulated trailing in a replay: bars up to here are in the high water
    sources: dict[str, str] = field(default_factory=dict)  # leg -> "signal" / "strategy" (audit)
    entry_filled: float = 0.0  # emulated: the entry's filled quantity the legs protect so far
    entry_done: bool = False  # emulated: the entry has ended and what it filled is protected

    def leg_of(self, client_order_id: str) -> int | None:
        return next((n for n, c in self.legs.items() if c == client_order_id), None)

    def with_state(self, state: str) -> Bracket:
        return replace(self, state=state)


def open_legs(ledger, namespace: str, venue: str, prefix: str = "tp") -> list[dict]:
    """Bracket legs still working at the broker according to the ledger (NEW or
    PARTIALLY_FILLED, a leg's client id derived from its signal), with what the ledger
    has seen of them: the rows a restarted monitoring step resumes from."""
    return _legs(ledger, namespace, venue, prefix, ["NEW", "PARTIALLY_FILLED"])


def filled_legs(ledger, namespace: str, venue: str, signal_ids: list[str], prefix: str = "tp") -> list[dict]:
    """Legs of these signals' brackets that the ledger knows filled (in whole or in part;
    e.g. recorded by the reconciliation of a restarted live run): the other legs must go."""
    if not signal_ids:
        return []
    return [r for r in _legs(ledger, namespace, venue, prefix, ["FILLED", "PARTIALLY_FILLED", "CANCELED"],
                             signal_ids) if (r["filled_quantity"] or 0) > 0]


def _legs(ledger, namespace: str, venue: str, prefix: str, statuses: list[str],
          signal_ids: list[str] | None = None) -> list[dict]:
    from sqlalchemy import func, select

    from tasks.orders import client_order_id
    from tradpal.ledger.models import Fill, Order, Signal

    n_fills = select(Fill.order_pk, func.count().label("n")).group_by(Fill.order_pk).subquery()
    stmt = (select(Order.client_order_id, Order.broker_order_id, Order.symbol, Order.side, Order.order_type,
                   Order.quantity, Order.price, Order.stop_price, Order.filled_quantity, Order.avg_price,
                   Order.fees, Order.placed_at, Order.created_at, Signal.signal_id, Signal.strategy,
                   Signal.timestamp.label("signal_time"), func.coalesce(n_fills.c.n, 0).label("fills_seen"))
            .join(Signal, Signal.id == Order.signal_pk)
            .outerjoin(n_fills, n_fills.c.order_pk == Order.id)
            .where(Signal.namespace == namespace, Order.venue == venue, Order.status.in_(statuses),
                   Order.client_order_id.not_like("%-0"))
            .order_by(Order.id))
    if signal_ids is not None:
        stmt = stmt.where(Signal.signal_id.in_(signal_ids))
    with ledger.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
    out = []
    for r in rows:
        suffix = r["client_order_id"].rsplit("-", 1)[-1]
        leg = int(suffix) if suffix.isdigit() and 0 < int(suffix) <= MAX_LEG else None
        if leg is not None and client_order_id(r["signal_id"], leg, prefix) == r["client_order_id"]:
            out.append({**r, "leg": leg})
    return out


def working_entries(ledger, namespace: str, venue: str, run_id: str | None, prefix: str = "tp") -> list[dict]:
    """Buy entries a restarted process must bracket: still working at the venue according
    to the ledger (NEW or PARTIALLY_FILLED), or ended with fills while the process was down
    (this run's reconciliation moved them on: ``order.reconciled``); none whose signal's
    bracket was opened or closed already, nor one with legs in the ledger."""
    from sqlalchemy import and_, exists, func, or_, select
    from sqlalchemy.orm import aliased

    from tasks.orders import client_order_id
    from tradpal.ledger.models import AuditLog, Fill, Order, Signal

    legs = aliased(Order)
    n_fills = select(Fill.order_pk, func.count().label("n")).group_by(Fill.order_pk).subquery()
    reconciled = exists().where(AuditLog.entity == "order", AuditLog.entity_id == Order.client_order_id,
                                AuditLog.event == "order.reconciled", AuditLog.run_id == run_id)
    had_bracket = exists().where(AuditLog.entity == "signal", AuditLog.entity_id == Signal.signal_id,
                                 AuditLog.event.in_(["bracket.opened", "bracket.closed"]))
    has_legs = exists().where(legs.signal_pk == Order.signal_pk, legs.id != Order.id)
    stmt = (select(Order.client_order_id, Order.broker_order_id, Order.symbol, Order.side, Order.order_type,
                   Order.quantity, Order.status, Order.filled_quantity, Order.avg_price, Order.fees,
                   Order.placed_at, Order.created_at, Signal.signal_id, Signal.strategy, Signal.reference_price,
                   Signal.timestamp.label("signal_time"), func.coalesce(n_fills.c.n, 0).label("fills_seen"))
            .join(Signal, Signal.id == Order.signal_pk)
            .outerjoin(n_fills, n_fills.c.order_pk == Order.id)
            .where(Signal.namespace == namespace, Order.venue == venue, Order.side == "buy",
                   Order.client_order_id.like("%-0"),
                   or_(Order.status.in_(["NEW", "PARTIALLY_FILLED"]),
                       and_(Order.filled_quantity > 0, reconciled)),
                   ~has_legs, ~had_bracket)
            .order_by(Order.id))
    with ledger.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
    return [r for r in rows if client_order_id(r["signal_id"], 0, prefix) == r["client_order_id"]]


def recorded_specs(ledger, namespace: str, signal_ids: list[str]) -> dict[str, dict]:
    """The bracket levels signals carried (audit ``bracket.requested`` of ``namespace``)."""
    if not signal_ids:
        return {}
    from sqlalchemy import select

    from tradpal.ledger.models import AuditLog

    stmt = (select(AuditLog.entity_id, AuditLog.payload)
            .where(AuditLog.entity == "signal", AuditLog.event == "bracket.requested",
                   AuditLog.entity_id.in_(signal_ids)).order_by(AuditLog.id))
    with ledger.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return {sid: dict(p) for sid, p in rows if p and p.get("namespace") == namespace}


def last_bracket_state(ledger, signal_id: str) -> dict:
    """The latest ``bracket.opened`` / ``bracket.stop_moved`` payload of a signal's bracket
    (the trailing distance and high water a restarted emulation goes on from), or {}."""
    from sqlalchemy import select

    from tradpal.ledger.models import AuditLog

    stmt = (select(AuditLog.payload).where(AuditLog.entity == "signal", AuditLog.entity_id == signal_id,
                                           AuditLog.event.in_(["bracket.opened", "bracket.stop_moved", "bracket.grown"]))
            .order_by(AuditLog.id.desc()).limit(1))
    with ledger.engine.connect() as conn:
        row = conn.execute(stmt).first()
    return dict(row[0]) if row and row[0] else {}
