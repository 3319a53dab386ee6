"""The risk monitor (the ``risk-monitor`` deployment, every minute): from the ledger alone,

- **breakers** tripped now in a namespace (default ``live``: a replay's breakers never page anyone),
- **stale orders**: orders of live runs still open (CREATED, NEW, PARTIALLY_FILLED, UNKNOWN)
  longer than ``stale_after`` since they were placed (or created, if never placed),
- **positions**: the latest snapshot per symbol of the live runs,

as a plain dict and a markdown report; `send_alerts` alerts (Apprise, `risk.alerts`) on
stale orders and tripped breakers, at most once per ``throttle`` per alert key *across
runs* (each scheduled run is a new process, so the audit log remembers what was sent).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select

from tradpal.ledger import Ledger, Provenance
from tradpal.ledger.models import AuditLog, Order, Position, Run

OPEN_STATUSES = ("CREATED", "NEW", "PARTIALLY_FILLED", "UNKNOWN")


def risk_report(ledger: Ledger, *, now: datetime | None = None, stale_after: timedelta = timedelta(minutes=15),
                namespace: str = "live") -> dict[str, Any]:
    """Breakers, stale orders and positions of ``namespace`` at ``now`` (default: now, UTC)."""
    now = now or datetime.now(UTC)
    breakers = [b for b in ledger.active_breakers(now) if b["scope"].startswith(f"{namespace}|")]
    o, r = Order.__table__, Run.__table__
    since = func.coalesce(o.c.placed_at, o.c.created_at)
    live_runs = select(r.c.id).where(r.c.kind == namespace)
    stale_q = (select(o.c.client_order_id, o.c.symbol, o.c.side, o.c.quantity, o.c.filled_quantity, o.c.status,
                      since.label("since"), o.c.run_id, o.c.flow_run_id)
               .where(o.c.status.in_(OPEN_STATUSES), o.c.run_id.in_(live_runs), since < now - stale_after)
               .order_by(since))
    p = Position.__table__
    latest = (select(p.c.symbol, func.max(p.c.id).label("id")).where(p.c.run_id.in_(live_runs))
              .group_by(p.c.symbol).subquery())
    pos_q = (select(p.c.symbol, p.c.quantity, p.c.average_price, p.c.market_price, p.c.realized_pnl,
                    p.c.unrealized_pnl, p.c.as_of)
             .join(latest, and_(p.c.id == latest.c.id)).order_by(p.c.symbol))
    with ledger.engine.connect() as conn:
        stale = [dict(row._mapping) for row in conn.execute(stale_q)]
        positions = [dict(row._mapping) for row in conn.execute(pos_q) if row.quantity]
    for s in stale:
        s["age_s"] = round((now - s["since"]).total_seconds(), 1)
    return {"as_of": now, "namespace": namespace, "stale_after_s": stale_after.total_seconds(),
            "breakers": breakers, "stale_orders": stale, "positions": positions,
            "ok": not breakers and not stale}


def report_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Risk monitor — {report['namespace']}", "", f"as of {report['as_of'].isoformat()}: "
             + ("**all clear**" if report["ok"] else "**attention needed**"), "",
             f"## Breakers tripped ({len(report['breakers'])})", ""]
    lines += [f"- `{b['name']}` [{b['scope']}] since {b['tripped_at'].isoformat()}"
              f" ({'until ' + b['until'].isoformat() if b['until'] else 'until reset'}): {b['reason']}"
              for b in report["breakers"]] or ["none"]
    lines += ["", f"## Stale orders: open longer than {report['stale_after_s']:g} s ({len(report['stale_orders'])})",
              ""]
    if report["stale_orders"]:
        lines += ["| client order id | symbol | side | quantity | filled | status | open for (s) | flow run |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {s['client_order_id']} | {s['symbol']} | {s['side']} | {s['quantity']:g} | "
                  f"{s['filled_quantity']:g} | {s['status']} | {s['age_s']:g} | {s['flow_run_id'] or ''} |"
                  for s in report["stale_orders"]]
    else:
        lines.append("none")
    lines += ["", f"## Positions ({len(report['positions'])})", ""]
    if report["positions"]:
        lines += ["| symbol | quantity | average price | market price | unrealised PnL | as of |", "|---|---|---|---|---|---|"]
        lines += [f"| {p['symbol']} | {p['quantity']:g} | {_num(p['average_price'])} | {_num(p['market_price'])} | "
                  f"{_num(p['unrealized_pnl'])} | {p['as_of'].isoformat()} |" for p in report["positions"]]
    else:
        lines.append("flat")
    return "\n".join(lines)


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:g}"


def recently_alerted(ledger: Ledger, key: str, since: datetime) -> bool:
    a = AuditLog.__table__
    with ledger.engine.connect() as conn:
        return conn.execute(select(a.c.id).where(a.c.event == "alert.sent", a.c.entity == "alert",
                                                 a.c.entity_id == key, a.c.time >= since).limit(1)).first() is not None


def send_alerts(report: dict[str, Any], alerter, ledger: Ledger, prov: Provenance, *,
                throttle: timedelta = timedelta(minutes=15)) -> list:
    """Alert on each tripped breaker and on stale orders (one alert listing them), unless
    the same alert was sent within ``throttle``; each outcome goes to the audit log."""
    if alerter is None:
        return []
    wanted = [(f"breaker:{b['name']}:{b['scope']}", f"TradPal breaker tripped: {b['name']}",
               f"{b['name']} ({b['scope']}) tripped since {b['tripped_at'].isoformat()}: {b['reason']}.", "failure")
              for b in report["breakers"]]
    if report["stale_orders"]:
        coids = ", ".join(s["client_order_id"] for s in report["stale_orders"][:10])
        more = len(report["stale_orders"]) - 10
        wanted.append((f"stale-orders:{report['namespace']}", f"TradPal: {len(report['stale_orders'])} stale order(s)",
                       f"Open longer than {report['stale_after_s']:g} s: {coids}"
                       + (f" (+{more} more)" if more > 0 else "") + ". Check the venue and reconcile.", "warning"))
    since = report["as_of"] - throttle
    alerts = [alerter.notify(key, title, body, level=level) for key, title, body, level in wanted
              if not recently_alerted(ledger, key, since)]
    rows = [{"event": "alert.throttled" if a.throttled else ("alert.sent" if a.delivered else "alert.failed"),
             "entity": "alert", "entity_id": a.key,
             "payload": {"title": a.title, "body": a.body, "sent": list(a.sent),
                         "failed": [{"channel": c, "why": w} for c, w in a.failed]}} for a in alerts]
    if rows:
        with ledger.transaction() as s:
            ledger.audit_many(s, rows, prov=prov)
    return alerts
