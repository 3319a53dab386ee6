"""Brackets: a protective stop and a target on each buy entry of a strategy, as an OCO
pair (one fills, the other is cancelled), the stop optionally trailing.

The risk configuration's ``brackets`` section chooses the legs per strategy
(`risk.config.BracketRule`); each leg's level is a percent of the entry's average fill
price, a multiple of the symbol's ATR at the signal's time, or an absolute price. Legs
are sells for the quantity the entry filled (spot: a long position is protected; a
sell entry gets no bracket). Their client order ids are deterministic: leg 1 is the
stop, leg 2 the target (`tasks.orders.client_order_id`).

The monitoring step (6) runs them: natively where the broker declares
``supports_brackets`` (the paper broker), else emulated with plain orders (it places the
legs when the entry has filled and cancels the other leg on the first fill). Every leg
is an order in the ledger under the entry's signal; the bracket's life is in the audit
log (``bracket.opened`` / ``bracket.closed``); open legs are found again from the ledger
after a restart (`open_legs`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pandas as pd

from risk.config import BracketRule, Level

STOP_LEG, TARGET_LEG = 1, 2
LEG_NAMES = {STOP_LEG: "stop", TARGET_LEG: "target"}
MAX_LEG = 999  # an emulated trailing stop is replaced by legs 3, 4, ... as it moves


def leg_name(leg: int) -> str:
    return "target" if leg == TARGET_LEG else "stop"


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


def last_bracket_state(ledger, signal_id: str) -> dict:
    """The latest ``bracket.opened`` / ``bracket.stop_moved`` payload of a signal's bracket
    (the trailing distance and high water a restarted emulation goes on from), or {}."""
    from sqlalchemy import select

    from tradpal.ledger.models import AuditLog

    stmt = (select(AuditLog.payload).where(AuditLog.entity == "signal", AuditLog.entity_id == signal_id,
                                           AuditLog.event.in_(["bracket.opened", "bracket.stop_moved"]))
            .order_by(AuditLog.id.desc()).limit(1))
    with ledger.engine.connect() as conn:
        row = conn.execute(stmt).first()
    return dict(row[0]) if row and row[0] else {}
