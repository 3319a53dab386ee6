"""Reconciliation at the start of a live run: the ledger catches up with the venue.

* Each order the ledger still holds open at this venue (NEW, PARTIALLY_FILLED,
  CREATED, UNKNOWN) is looked up by its client order id. Fills made while we were not
  watching are recorded (idempotent on the venue's trade id) and the order's state is
  brought up to date. An order the venue never received (CREATED or UNKNOWN, and not
  found) becomes REJECTED: "never reached the venue". So is each order the placement
  answer left terminal (FILLED, CANCELED, EXPIRED) that monitoring never followed up
  (the process died, or monitoring failed, in between): its fills are recorded.
* Each order open at the venue that bears our client id prefix but is missing from
  the ledger is adopted: recorded under a synthetic signal ``adopted:<client id>``
  (strategy "adopted") in the live namespace.
* Each signal of the namespace that a run which is gone left with neither an order nor a
  rejection (the process died between receiving it and creating its order) gets a
  rejection at step ``reconcile``: "interrupted ..." — it was never traded. Only signals
  received more than ``ORPHAN_AFTER_S`` ago count, and only when their run is gone: each
  live run records its host and process id (`tradpal.live`), so another worker's signal in
  flight on this host is left alone while its process lives; a run of another host counts
  as gone after ``REMOTE_ORPHAN_AFTER_S``.

* Each live run the ledger still holds ``running`` whose process is gone (the same test:
  dead or a zombie on this host; on another host, or with no process recorded, nothing
  written under it for ``REMOTE_ORPHAN_AFTER_S`` — a stream of another host idles without
  writing, so it is never judged from here) becomes ``crashed`` with its reason, and its
  Prefect flow run, if it recorded one, is set to Crashed (`crash_flow_run`; an API that no
  longer knows the id, or does not answer, is noted and the ledger is marked all the same).

Every action is audited (``order.reconciled``, ``order.rejected``, ``order.adopted``,
``order.missing_at_venue``, ``signal.interrupted``, ``run.crashed``), and the whole pass as
``reconcile.completed``. The look-up
of open orders at the venue is a capability (``get_open_orders``), used if the broker
has it. ``reconcile`` is a plain coroutine; ``reconcile_task`` its thin Prefect task.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import and_, exists, func, or_, select

from brokers.base import BaseBroker, Order, OrderResult, is_retryable
from tradpal.ledger import Ledger, Provenance
from tradpal.ledger.models import AuditLog as AuditRow
from tradpal.ledger.models import Order as OrderRow
from tradpal.ledger.models import Rejection as RejectionRow
from tradpal.ledger.models import Run as RunRow
from tradpal.ledger.models import Signal as SignalRow
from tradpal.processes import recorded_process_alive

OPEN_STATUSES = ("NEW", "PARTIALLY_FILLED", "CREATED", "UNKNOWN")
# terminal in the placement answer, then never followed up by monitoring (the process died
# or monitoring failed between the two): the venue's fills are not in the ledger yet
ANSWERED_TERMINAL = ("FILLED", "CANCELED", "EXPIRED")
FOLLOWED_UP = ("order.filled", "order.canceled", "order.expired", "order.reconciled", "order.adopted")
UNSENT_STATUSES = ("CREATED", "UNKNOWN")
NEVER_REACHED = "never reached the venue"
INTERRUPTED = ("interrupted: the process stopped after the signal was received and before its order was "
               "created; not traded")
ORPHAN_AFTER_S = 2.0
REMOTE_ORPHAN_AFTER_S = 300.0  # a run of another host: its process cannot be asked
STEP = "reconcile"


@dataclass
class ReconcileReport:
    """What one reconciliation pass did, by client order id."""

    checked: int = 0
    updated: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    fills: int = 0
    interrupted: list[str] = field(default_factory=list)  # signal ids
    crashed: list[str] = field(default_factory=list)  # run ids marked crashed

    def as_dict(self) -> dict[str, Any]:
        return {"checked": self.checked, "updated": self.updated, "rejected": self.rejected,
                "adopted": self.adopted, "missing": self.missing, "fills": self.fills,
                "interrupted": self.interrupted, "crashed": self.crashed}


def open_ledger_orders(ledger: Ledger, venue: str, namespace: str) -> list[dict[str, Any]]:
    """The orders of ``namespace`` the ledger holds open at ``venue``, or terminal as placed
    but never followed up (no monitoring or reconciliation record), with their signal id."""
    o, s, a, runs = OrderRow.__table__, SignalRow.__table__, AuditRow.__table__, RunRow.__table__
    followed_up = exists().where(a.c.entity == "order", a.c.entity_id == o.c.client_order_id,
                                 a.c.event.in_(FOLLOWED_UP))
    unsettled = and_(o.c.status.in_(ANSWERED_TERMINAL), o.c.broker_order_id.is_not(None), ~followed_up)
    stmt = (select(o.c.client_order_id, o.c.symbol, o.c.status, s.c.signal_id, o.c.run_id,
                   runs.c.status.label("run_status"), runs.c.params.label("run_params"))
            .join(s, s.c.id == o.c.signal_pk).outerjoin(runs, runs.c.id == o.c.run_id)
            .where(o.c.venue == venue, or_(o.c.status.in_(OPEN_STATUSES), unsettled), s.c.namespace == namespace)
            .order_by(o.c.id))
    with ledger.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


_AT_WORK: set[str] = set()  # the live runs of this process that are placing or monitoring now


def at_work(run_id: str) -> None:
    """Say that ``run_id`` works in this process (`tradpal.live.start_session`)."""
    _AT_WORK.add(run_id)


def off_work(run_id: str) -> None:
    """Say that ``run_id`` no longer places or monitors (its steps are over, or it failed)."""
    _AT_WORK.discard(run_id)


def owned_by_working_run(row: dict[str, Any], run_id: str | None) -> bool:
    """Whether ``row`` (from `open_ledger_orders`) belongs to another run that is still at
    work: ``running`` in the ledger and its process alive on this host (a run of another host
    counts as working until it is marked crashed, after its silence). Such a run places,
    monitors and settles its own orders; reconciling them under it would race it (an order it
    created a moment ago is not at the venue yet, and is not 'unsent')."""
    if not row.get("run_id") or row["run_id"] == run_id or row.get("run_status") != "running":
        return False
    params = row.get("run_params") or {}
    host, pid = params.get("host"), params.get("pid")
    if not host or not pid:
        return False  # no process recorded: nothing says it still works
    if host != socket.gethostname():
        return True
    if pid == os.getpid():  # this process: a run of ours still at work, not one that ended here
        return row["run_id"] in _AT_WORK
    return recorded_process_alive(params)


def orphan_signals(ledger: Ledger, namespace: str, run_id: str | None, before: datetime,
                   remote_before: datetime | None = None) -> list[str]:
    """Signal ids of ``namespace`` received before ``before`` by a run other than ``run_id``
    that have neither an order nor a rejection, and whose run is gone: a run of this host
    whose process no longer lives, a run of another host received before ``remote_before``
    (its process cannot be asked), or a run that recorded no process (before ``before``)."""
    s, o, r, runs = SignalRow.__table__, OrderRow.__table__, RejectionRow.__table__, RunRow.__table__
    where = [s.c.namespace == namespace, s.c.received_at < before,
             ~exists().where(o.c.signal_pk == s.c.id),
             ~exists().where(r.c.namespace == namespace, r.c.signal_id == s.c.signal_id)]
    if run_id:
        where.append(or_(s.c.run_id.is_(None), s.c.run_id != run_id))
    stmt = (select(s.c.signal_id, s.c.received_at, runs.c.params).select_from(s.outerjoin(runs, runs.c.id == s.c.run_id))
            .where(*where).order_by(s.c.id))
    with ledger.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    remote_before = remote_before or before - timedelta(seconds=REMOTE_ORPHAN_AFTER_S)
    return [sid for sid, received, params in rows if run_is_gone(params or {}, _utc(received), remote_before)]


def run_is_gone(params: dict[str, Any], received: pd.Timestamp, remote_before: datetime) -> bool:
    """Whether the run that recorded ``params`` ({"host", "pid"}, see `tradpal.live`) has
    stopped. On this host: its process is gone (or a zombie). Elsewhere: only a signal older
    than ``remote_before`` counts. No process recorded: gone (the age rule alone)."""
    host, pid = params.get("host"), params.get("pid")
    if not host or not pid:
        return True
    if host != socket.gethostname():
        return received < _utc(remote_before)
    return not recorded_process_alive(params)


def _settle_orphans(ledger: Ledger, namespace: str, prov: Provenance, report: ReconcileReport) -> None:
    before = datetime.now(UTC) - timedelta(seconds=ORPHAN_AFTER_S)
    ids = orphan_signals(ledger, namespace, prov.run_id, before)
    if not ids:
        return
    with ledger.transaction() as s:
        ledger.record_rejections(s, pd.DataFrame({"signal_id": ids, "step": STEP, "reason": INTERRUPTED}),
                                 namespace=namespace, prov=prov)
        ledger.audit_many(s, [{"event": "signal.interrupted", "entity": "signal", "entity_id": sid,
                               "payload": {"reason": INTERRUPTED}} for sid in ids], prov=prov)
    report.interrupted += ids


# -- runs whose process is gone: crashed -----------------------------------------------

CRASH_TIMEOUT_S = 15.0  # the Prefect API's answer about one flow run, at most


@dataclass
class GoneRun:
    """A run still ``running`` in the ledger whose process is gone, and why we think so."""

    run_id: str
    flow_run_id: str | None
    reason: str
    last_seen: pd.Timestamp  # its last write to the ledger (start, signal received, audit row)
    certain: bool  # its process was asked (this host); else judged by its silence


def gone_runs(ledger: Ledger, run_id: str | None, *, kind: str = "live", now: datetime | None = None,
              silent_after_s: float = REMOTE_ORPHAN_AFTER_S) -> list[GoneRun]:
    """The runs of ``kind`` other than ``run_id`` still ``running`` in the ledger whose
    process is gone (`run_gone_reason`), oldest first."""
    runs = RunRow.__table__
    where = [runs.c.kind == kind, runs.c.status == "running"]
    if run_id:
        where.append(runs.c.id != run_id)
    stmt = select(runs.c.id, runs.c.flow_run_id, runs.c.params, runs.c.started_at).where(*where).order_by(
        runs.c.started_at)
    with ledger.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    now_ts = _utc(now)
    out = []
    for rid, flow_run_id, params, started in rows:
        params, seen = params or {}, {}

        def silent_s(rid: str = rid, started: datetime = started, seen: dict = seen) -> float:
            seen["at"] = last_seen(ledger, rid, started)
            return (now_ts - seen["at"]).total_seconds()

        reason = run_gone_reason(params, silent_s, silent_after_s)
        if reason:
            certain = bool(params.get("host") == socket.gethostname() and params.get("pid"))
            out.append(GoneRun(rid, flow_run_id, reason, seen.get("at") or last_seen(ledger, rid, started), certain))
    return out


def last_seen(ledger: Ledger, run_id: str, started: datetime) -> pd.Timestamp:
    """The run's last write to the ledger: its start, a signal it received, an audit row."""
    s, a = SignalRow.__table__, AuditRow.__table__
    stmt = select(select(func.max(s.c.received_at)).where(s.c.run_id == run_id).scalar_subquery(),
                  select(func.max(a.c.time)).where(a.c.run_id == run_id).scalar_subquery())
    with ledger.engine.connect() as conn:
        times = conn.execute(stmt).one()
    return max(_utc(t) for t in (started, *times) if t is not None)


def run_gone_reason(params: dict[str, Any], silent_s: Callable[[], float],
                    silent_after_s: float = REMOTE_ORPHAN_AFTER_S) -> str | None:
    """Why the run that recorded ``params`` ({"host", "pid", "mode"}, see `tradpal.live`)
    is gone, or None while it may still be working. On this host: its process is dead or a
    zombie. Another host (or none recorded): nothing written for ``silent_after_s``
    (``silent_s()``, asked only then), except a stream of another host, which writes nothing
    while no signal comes."""
    host, pid = params.get("host"), params.get("pid")
    if host and pid and host == socket.gethostname():
        return None if recorded_process_alive(params) else f"process {pid} on {host} is gone"
    if host and params.get("mode") == "stream":
        return None
    silent = silent_s()
    if silent <= silent_after_s:
        return None
    where = f"host {host}" if host else "a run that recorded no process"
    return f"nothing written for {silent:.0f} s by {where} (its process cannot be asked from here)"


async def crash_flow_run(flow_run_id: str, message: str, *, leave_paused: bool = False) -> str:
    """Set Prefect flow run ``flow_run_id`` to Crashed with ``message`` and say what
    happened: ``crashed`` (its unfinished task runs too: ``crashed (and N task runs)``),
    ``already <state>`` (a final state is left as it is), ``paused``
    (left alone when ``leave_paused``: it may be waiting for a person), ``unknown to the
    Prefect API``, or ``Prefect API error: ...``. Never raises: the ledger is marked anyway."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Crashed

    try:
        fid = UUID(flow_run_id)
    except ValueError:
        return "not a Prefect flow run id"

    async def go() -> str:
        async with get_client() as client:
            try:
                flow_run = await client.read_flow_run(fid)
            except ObjectNotFound:
                return "unknown to the Prefect API"
            state = flow_run.state
            if state is not None and state.is_final():
                return f"already {state.name}"
            if leave_paused and state is not None and state.is_paused():
                return "paused"
            result = await client.set_flow_run_state(fid, Crashed(message=message))
            if result.status != SetStateStatus.ACCEPT:
                return f"Prefect refused: {result.status.value} {result.details}"
            # its task runs the kill left Running (or Pending) go with it
            unfinished = TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(
                any_=[StateType.RUNNING, StateType.PENDING])))
            tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[fid])),
                                                task_run_filter=unfinished)
            for task_run in tasks:
                await client.set_task_run_state(task_run.id, Crashed(message=message), force=True)
            return "crashed" + (f" (and {len(tasks)} task run{'s' if len(tasks) > 1 else ''})" if tasks else "")

    try:
        return await asyncio.wait_for(go(), CRASH_TIMEOUT_S)
    except Exception as exc:  # the API is down or slow: the ledger still says what happened
        return f"Prefect API error: {type(exc).__name__}: {exc}"[:300]


CrashFlowRun = Callable[..., Awaitable[str]]


async def mark_crashed_runs(ledger: Ledger, prov: Provenance, *, kind: str = "live",
                            flow_runs: CrashFlowRun | None = crash_flow_run,
                            now: datetime | None = None) -> list[str]:
    """Mark each gone run (`gone_runs`) ``crashed`` in the ledger with its reason and a
    ``run.crashed`` audit row (entity: the crashed run; provenance: the run that found it),
    after setting its Prefect flow run, if any, to Crashed (``flow_runs``; None: the
    ledger only). A run of another host whose flow run is paused is left alone. Returns
    the run ids marked here (a concurrent reconciliation may have marked the others)."""
    marked = []
    for run in gone_runs(ledger, prov.run_id, kind=kind, now=now):
        reason = f"crashed: {run.reason}; found by run {prov.run_id or '(none)'}"
        prefect = None
        if run.flow_run_id and flow_runs is not None:
            prefect = await flow_runs(run.flow_run_id, reason, leave_paused=not run.certain)
            if prefect == "paused":
                continue
        details = {"last_seen": run.last_seen.isoformat(), "flow_run_id": run.flow_run_id, "prefect": prefect}
        with ledger.transaction() as s:
            if ledger.mark_crashed(s, run.run_id, reason, details):
                ledger.audit(s, "run.crashed", "run", entity_id=run.run_id, prov=prov,
                             payload={"reason": reason, **details})
                marked.append(run.run_id)
    return marked


def _utc(t: datetime | None) -> pd.Timestamp:
    ts = pd.Timestamp(t if t is not None else datetime.now(UTC))
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def fills_frame(result: OrderResult, symbol: str) -> pd.DataFrame:
    """The result's fills as ledger fill rows (trade id as monitoring derives it when the
    venue gives none)."""
    return pd.DataFrame([{
        "client_order_id": result.client_order_id, "trade_id": f.trade_id or f"{result.order_id}-{i}",
        "timestamp": _utc(f.timestamp), "symbol": symbol, "side": f.side.value, "quantity": f.quantity,
        "price": f.price, "fee": f.fee, "fee_currency": f.fee_currency, "is_maker": f.is_maker,
    } for i, f in enumerate(result.fills, start=1)])


def state_frame(result: OrderResult) -> pd.DataFrame:
    """The order's state at the venue as a ledger order update."""
    return pd.DataFrame([{
        "client_order_id": result.client_order_id, "broker_order_id": result.order_id,
        "status": result.status.value, "filled_quantity": result.executed_quantity,
        "avg_price": result.executed_price, "fees": result.fees, "fee_currency": result.fee_currency,
        "reason": result.reason, "updated_at": _utc(result.timestamp),
    }])


def _catch_up(ledger: Ledger, venue: str, row: dict[str, Any], result: OrderResult, prov: Provenance,
              report: ReconcileReport) -> None:
    result = OrderResult(**{**result.__dict__, "client_order_id": row["client_order_id"]})
    with ledger.transaction() as s:
        added = ledger.record_fills(s, fills_frame(result, row["symbol"]), venue=venue, prov=prov) if result.fills else 0
        if not added and result.status.value == row["status"] and row["status"] not in ANSWERED_TERMINAL:
            return
        ledger.update_orders(s, state_frame(result), venue=venue, prov=prov)
        ledger.audit(s, "order.reconciled", "order", entity_id=row["client_order_id"], prov=prov, payload={
            "from": row["status"], "to": result.status.value, "broker_order_id": result.order_id,
            "new_fills": added, "filled_quantity": result.executed_quantity})
    report.updated.append(row["client_order_id"])
    report.fills += added


def _reject_unsent(ledger: Ledger, venue: str, namespace: str, row: dict[str, Any], prov: Provenance) -> None:
    coid = row["client_order_id"]
    with ledger.transaction() as s:
        ledger.update_orders(s, pd.DataFrame([{"client_order_id": coid, "status": "REJECTED", "reason": NEVER_REACHED,
                                               "updated_at": _utc(None)}]), venue=venue, prov=prov)
        ledger.record_rejections(s, pd.DataFrame([{"signal_id": row["signal_id"], "client_order_id": coid,
                                                   "step": STEP, "reason": NEVER_REACHED}]),
                                 namespace=namespace, prov=prov)
        ledger.audit(s, "order.rejected", "order", entity_id=coid, prov=prov,
                     payload={"from": row["status"], "reason": NEVER_REACHED})


def _adopt(ledger: Ledger, venue: str, namespace: str, order: Order, result: OrderResult, prov: Provenance) -> int:
    """Record an order found open at the venue under a synthetic signal; returns fills added."""
    coid = order.client_order_id
    placed = _utc(order.placed_at or result.timestamp)
    signal = pd.DataFrame([{
        "signal_id": f"adopted:{coid}", "timestamp": placed, "symbol": order.symbol, "side": order.side.value,
        "quantity": order.quantity, "strategy": "adopted", "order_type": order.order_type.value,
        "limit_price": order.price, "stop_price": order.stop_price,
    }])
    row = pd.DataFrame([{
        "signal_id": f"adopted:{coid}", "client_order_id": coid, "symbol": order.symbol, "side": order.side.value,
        "order_type": order.order_type.value, "quantity": order.quantity, "price": order.price,
        "stop_price": order.stop_price, "time_in_force": order.time_in_force.value, "created_at": placed,
        "placed_at": placed,
    }])
    with ledger.transaction() as s:
        ledger.record_signals(s, signal, namespace=namespace, prov=prov)
        ledger.record_orders(s, row, namespace=namespace, venue=venue, prov=prov)
        ledger.update_orders(s, state_frame(result), venue=venue, prov=prov)
        added = ledger.record_fills(s, fills_frame(result, order.symbol), venue=venue, prov=prov) if result.fills else 0
        ledger.audit(s, "order.adopted", "order", entity_id=coid, prov=prov, payload={
            "broker_order_id": result.order_id, "symbol": order.symbol, "side": order.side.value,
            "quantity": order.quantity, "status": result.status.value, "signal_id": f"adopted:{coid}"})
    return added


async def reconcile(ledger: Ledger, broker: BaseBroker, *, namespace: str = "live", prefix: str = "tp",
                    prov: Provenance | None = None,
                    flow_runs: CrashFlowRun | None = crash_flow_run) -> ReconcileReport:
    """Bring the ledger up to date with ``broker`` (see the module docstring). Retryable
    broker errors propagate (the task retries; the pass is idempotent). ``flow_runs``
    sets a crashed run's Prefect flow run to Crashed (None: the ledger only)."""
    prov = prov or Provenance()
    venue, report = broker.name, ReconcileReport()
    report.crashed = await mark_crashed_runs(ledger, prov, flow_runs=flow_runs)
    for row in open_ledger_orders(ledger, venue, namespace):
        if owned_by_working_run(row, prov.run_id):
            continue
        report.checked += 1
        result = await broker.get_order_by_client_id(row["client_order_id"], row["symbol"])
        if result is not None:
            _catch_up(ledger, venue, row, result, prov, report)
        elif row["status"] in UNSENT_STATUSES:
            _reject_unsent(ledger, venue, namespace, row, prov)
            report.rejected.append(row["client_order_id"])
        else:
            report.missing.append(row["client_order_id"])
            with ledger.transaction() as s:
                ledger.audit(s, "order.missing_at_venue", "order", entity_id=row["client_order_id"], prov=prov,
                             payload={"status": row["status"], "note": "open in the ledger, unknown to the venue"})
    get_open_orders = getattr(broker, "get_open_orders", None)
    if get_open_orders is not None:
        for order, result in await get_open_orders():
            coid = order.client_order_id
            if coid.startswith(f"{prefix}-") and ledger.find_order(venue, coid) is None:
                report.fills += _adopt(ledger, venue, namespace, order, result, prov)
                report.adopted.append(coid)
    _settle_orphans(ledger, namespace, prov, report)
    with ledger.transaction() as s:
        ledger.audit(s, "reconcile.completed", "venue", entity_id=venue, payload=report.as_dict(), prov=prov)
    return report


def _retryable(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's retry hook
    return is_retryable(state.data)


@task(name="0-reconcile", task_run_name="0-reconcile [{label}]", cache_policy=NO_CACHE, persist_result=False,
      retries=3, retry_delay_seconds=[0.5, 1.0, 2.0], retry_condition_fn=_retryable)
async def reconcile_task(ledger: Ledger, broker: BaseBroker, run_id: str, label: str = "live",
                         namespace: str = "live", prefix: str = "tp") -> dict[str, Any]:
    """``reconcile`` as the first task of a live run, with the Prefect run ids as provenance."""
    from prefect.context import FlowRunContext, TaskRunContext

    task_ctx, flow_ctx = TaskRunContext.get(), FlowRunContext.get()
    prov = Provenance(run_id=run_id, flow_run_id=str(flow_ctx.flow_run.id) if flow_ctx and flow_ctx.flow_run else None,
                      task_run_id=str(task_ctx.task_run.id) if task_ctx else None)
    return (await reconcile(ledger, broker, namespace=namespace, prefix=prefix, prov=prov)).as_dict()
