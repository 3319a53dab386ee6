"""Persistence of each step's outcome: one ledger transaction per step call, so a
crash never leaves an order without its signal or a fill without its order, and every
rejection is written with its step and reason."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
from sqlalchemy.exc import OperationalError

from risk.sizing import TradeHistory
from tradpal.faults import crash_point
from tradpal.ledger import Ledger, Provenance
from tradpal.ledger.frames import column_list

log = logging.getLogger("tradpal.recorder")
LEDGER_RETRY_DELAYS_S = (0.5, 1.0, 2.0)  # a step's ledger write: up to 4 attempts over ~3.5 s


class LedgerUnavailableError(RuntimeError):
    """The ledger's database refused a step's write (down, unreachable, locked) through
    every retry; the run stops here. What the broker already accepted is not lost: bring
    the database back and start a live run — its reconciliation records those orders and
    fills from the venue."""


def write_with_retries(ledger: Ledger, what: str, write: Callable[[Any], Any],
                       delays: tuple[float, ...] = LEDGER_RETRY_DELAYS_S) -> Any:
    """``write(session)`` in one ledger transaction (`Ledger.write`), retried after a database fault
    (``OperationalError``: connection refused or lost, database locked). Safe to retry:
    the failed transaction rolled back, and a retry writes the same rows again (a commit
    whose acknowledgement was lost may then meet a unique key, and fail loudly). Raises
    `LedgerUnavailableError` once the retries are spent, after an alert
    (``TRADPAL_ALERT_URLS``) when one is configured."""
    for attempt, delay in enumerate((*delays, None), start=1):
        try:
            with ledger.write() as s:
                return write(s)
        except OperationalError as exc:
            cause = f"{type(exc.orig).__name__}: {str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else ''}"
            if delay is None:
                err = LedgerUnavailableError(
                    f"ledger unavailable: {what} could not be written to {ledger.url} after {attempt} attempts "
                    f"({cause}). Orders the venue accepted are not lost: once the database is back, start a live "
                    f"run; its reconciliation records them.")
                _alert(str(err))
                raise err from exc
            log.warning("ledger write failed (%s; attempt %d), retrying in %.1f s: %s", what, attempt, delay, cause)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _alert(body: str) -> None:
    from risk.alerts import alerter_from_env

    alerter = alerter_from_env()
    if alerter is not None:
        alerter.notify("ledger:unavailable", "TradPal ledger unavailable", body, level="failure")


#: an execution report's columns as the ledger's order columns (monitoring's update)
REPORT_AS_ORDER = {"status": "status", "filled_quantity": "cum_qty", "avg_price": "avg_px", "fees": "cum_fee",
                   "fee_currency": "fee_currency", "reason": "reason", "updated_at": "timestamp"}
#: an execution report's columns as the ledger's fill columns (its reference_price is the signal's)
REPORT_AS_FILL = {"quantity": "last_qty", "price": "last_px", "fee": "last_fee", "reference_price": "model_price"}
#: a placed order's columns as the ledger's order columns (placement's update)
PLACED_AS_ORDER = {"broker_order_id": "broker_order_id", "status": "status", "placed_at": "placed_at",
                   "updated_at": "acked_at"}
TERMINAL = frozenset({"FILLED", "CANCELED", "REJECTED", "EXPIRED"})
_PK_CACHE_MAX = 100_000  # ids kept per kind; past it the cache starts over (a miss is one look-up)


def _latest_per_order(reports: pd.DataFrame) -> pd.DataFrame:
    """Each order's last report (``reports`` itself when no order repeats)."""
    coids = column_list(reports, "client_order_id")
    last = {c: i for i, c in enumerate(coids)}
    if len(last) == len(coids):
        return reports
    return reports.iloc[sorted(last.values())]


class LedgerRecorder:
    """Writes what each step did to the ledger, tagged with the Prefect run ids."""

    def __init__(self, ledger: Ledger, *, run_id: str, namespace: str, venue: str) -> None:
        self.ledger, self.run_id, self.namespace, self.venue = ledger, run_id, namespace, venue
        self._claimed: set[str] = set()  # signal ids the latest `claim_signals` inserted (one batch's)
        # ids of rows this recorder inserted, once committed: the next steps' writes need no
        # look-up (a miss, e.g. an order another writer recorded, is looked up)
        self._signal_pks: dict[str, int] = {}
        self._order_pks: dict[str, int] = {}

    def known_signal_ids(self, signal_ids: list[str]) -> set[str]:
        return self.ledger.existing_signal_ids(self.namespace, signal_ids) if signal_ids else set()

    def claim_signals(self, signals: pd.DataFrame, prov: Provenance) -> set[str]:
        """Insert ``signals`` as a claim (one transaction, ``ON CONFLICT DO NOTHING`` on
        ``UNIQUE(namespace, signal_id)``); returns the ids that were already taken — by an
        earlier run, or by another worker at the same moment. The database decides, so
        this holds across processes and hosts sharing the ledger (no lock needed).

        Only the latest batch's claims are kept for `claimed_here` (a batch runs its steps
        before the next is claimed): what a long-running stream remembers stays one batch,
        and an order of an earlier batch sent again is looked up first."""
        if signals.empty:
            return set()
        with self.ledger.write() as s:
            got = self.ledger.record_signals(s, signals, namespace=self.namespace, prov=prov, skip_existing=True)
        self._claimed = set(got)
        _remember(self._signal_pks, got)
        return set(signals["signal_id"]) - set(got)

    def claimed_here(self, signal_id: str) -> bool:
        """Whether this recorder's latest `claim_signals` (the batch running) inserted
        ``signal_id``: the ledger had never seen it, so no run sharing this ledger can have
        sent its orders before."""
        return signal_id in self._claimed

    def active_breakers(self, now: pd.Timestamp) -> list[dict]:
        return self.ledger.active_breakers(now.floor("us").to_pydatetime())

    def trade_history(self, strategy: str) -> TradeHistory:
        """The strategy's completed round trips in this namespace (Kelly sizing)."""
        from tradpal.metrics import book_fills, prepare_fills, round_trips

        signals = self.ledger.frame("signals")
        signals = signals[(signals["namespace"] == self.namespace) & (signals["strategy"] == strategy)]
        orders = self.ledger.frame("orders")
        orders = orders[orders["signal_pk"].isin(signals["id"])]
        fills = self.ledger.frame("fills")
        fills = fills[fills["order_pk"].isin(orders["id"])]
        if fills.empty:
            return TradeHistory(0, 0.0, 0.0)
        trips = round_trips(book_fills(prepare_fills(fills, orders, signals)))
        return TradeHistory.from_pnl(trips.loc[trips["complete"], "net_pnl"].to_numpy("float64"))

    def record(self, step: str, frame: pd.DataFrame, rejected: pd.DataFrame, prov: Provenance,
               extra: dict[str, Any] | None = None) -> None:
        writer = getattr(self, f"_{step}", None)
        audit = [{"event": f"step.{step}", "entity": "batch", "entity_id": None,
                  "payload": {"rows_out": len(frame), "rejected": len(rejected)}}]
        done: dict[str, Any] = {}  # ids inserted, what ended: kept once the transaction committed

        def write(s) -> None:
            done.clear()
            rows = audit + ((writer(s, frame, prov, extra or {}, done) or []) if writer is not None else [])
            if len(rejected):
                rows += self._reject(s, step, rejected, prov)
            self.ledger.audit_many(s, rows, prov=prov)  # one statement for all of the step's audit rows

        write_with_retries(self.ledger, f"step {step}", write)
        self._committed(done)
        crash_point(f"{step}.recorded")

    def _committed(self, done: dict[str, Any]) -> None:
        """The ids a committed step inserted join the caches; orders that ended leave them."""
        if "orders" in done:
            _remember(self._order_pks, done["orders"])
            for sid in done["signals_used"]:
                self._signal_pks.pop(sid, None)  # (an order per signal: its id is not needed again)
        for coid in done.get("ended", ()):
            self._order_pks.pop(coid, None)

    def record_failure(self, step: str, frame: pd.DataFrame, reason: str, prov: Provenance) -> None:
        """A broker step failed for good (retries exhausted or not retryable).

        Placement: the broker may or may not have accepted each order of the batch, so
        each one is marked UNKNOWN (not REJECTED) and its signal gets a rejection with
        the reason; reconciliation against the broker settles the order later. Later
        steps (monitoring, positions): the orders are live at the broker and keep their
        state; the failure is audited and the run fails."""
        def write(s) -> None:
            if step == "placement" and len(frame):
                rows = pd.DataFrame({"signal_id": frame["signal_id"], "client_order_id": frame["client_order_id"],
                                     "reason": reason, "step": step})
                self.ledger.record_rejections(s, rows, namespace=self.namespace, prov=prov)
                self.ledger.update_orders(s, pd.DataFrame({
                    "client_order_id": frame["client_order_id"], "status": "UNKNOWN", "reason": reason,
                    "updated_at": pd.Timestamp.now(tz="UTC")}), venue=self.venue, prov=prov)
            self.ledger.audit(s, f"step.{step}.failed", "batch", payload={"reason": reason, "rows": len(frame)},
                              prov=prov)

        write_with_retries(self.ledger, f"the failure of step {step}", write)

    def record_alerts(self, alerts: list, prov: Provenance) -> None:
        """Each alert's outcome in the audit log: sent, throttled, or failed on which channel and why."""
        rows = [{"event": "alert.throttled" if a.throttled else ("alert.sent" if a.delivered else "alert.failed"),
                 "entity": "alert", "entity_id": a.key,
                 "payload": {"title": a.title, "body": a.body, "sent": list(a.sent),
                             "failed": [{"channel": c, "why": w} for c, w in a.failed]}} for a in alerts]
        if rows:
            with self.ledger.transaction() as s:
                self.ledger.audit_many(s, rows, prov=prov)

    def _reject(self, s, step: str, rejected: pd.DataFrame, prov: Provenance) -> list[dict]:
        rows = rejected.assign(step=step)
        self.ledger.record_rejections(s, rows, namespace=self.namespace, prov=prov)
        coids = rows["client_order_id"].dropna()
        if len(coids) and step != "order_creation":  # refused at creation: the order was never recorded
            known = rows[rows["client_order_id"].notna()]
            self.ledger.update_orders(s, pd.DataFrame({
                "client_order_id": known["client_order_id"], "status": "REJECTED", "reason": known["reason"],
                "updated_at": pd.Timestamp.now(tz="UTC")}), venue=self.venue, prov=prov)
        return [{"event": "signal.rejected", "entity": "signal", "entity_id": sid, "payload": {"step": step, "reason": why}}
                for sid, why in zip(column_list(rows, "signal_id"), column_list(rows, "reason"), strict=True)]

    def _intake(self, s, frame, prov, extra, done) -> list[dict] | None:
        claimed = self._claimed
        if not all(sid in claimed for sid in column_list(frame, "signal_id")):
            unclaimed = frame[~frame["signal_id"].isin(claimed)]  # claimed ones are in already
            self.ledger.record_signals(s, unclaimed, namespace=self.namespace, prov=prov)
        from tasks.intake import requested_levels

        return requested_levels(frame, self.namespace)  # a signal's own bracket levels, for a restart

    def _sizing(self, s, frame, prov, extra, done) -> list[dict] | None:
        """Each sized signal's method and inputs, in the audit log."""
        return [{"event": "signal.sized", "entity": "signal", "entity_id": sid,
                 "payload": {"quantity": q, "method": m, "inputs": json.loads(d)}}
                for sid, q, m, d in zip(*(column_list(frame, c) for c in ("signal_id", "quantity", "sizing_method",
                                                                          "sizing_detail")), strict=True)]

    def _order_creation(self, s, frame, prov, extra, done) -> list[dict] | None:
        if frame.empty:
            return
        done["orders"] = self.ledger.record_orders(s, frame, namespace=self.namespace, venue=self.venue, prov=prov,
                                                   signal_pks=self._signal_pks)
        done["signals_used"] = column_list(frame, "signal_id")

    def _placement(self, s, frame, prov, extra, done) -> list[dict] | None:
        if frame.empty:
            return
        self.ledger.update_orders(s, frame, venue=self.venue, prov=prov, names=PLACED_AS_ORDER)
        return [{"event": "order.placed", "entity": "order", "entity_id": c, "payload": {"broker_order_id": b}}
                for c, b in zip(column_list(frame, "client_order_id"), column_list(frame, "broker_order_id"), strict=True)]

    def _monitoring(self, s, frame, prov, extra, done) -> list[dict] | None:
        if frame.empty:
            return
        filled = [q > 0 for q in column_list(frame, "last_qty")]
        if any(filled):
            fills = frame if all(filled) else frame[filled]
            self.ledger.record_fills(s, fills, venue=self.venue, prov=prov, order_pks=self._order_pks,
                                     names=REPORT_AS_FILL)
        latest = _latest_per_order(frame)
        self.ledger.update_orders(s, latest, venue=self.venue, prov=prov, names=REPORT_AS_ORDER)
        out, ended = [], []
        for c, st, q, r in zip(*(column_list(latest, c) for c in ("client_order_id", "status", "cum_qty", "reason")),
                               strict=True):
            if st in TERMINAL:
                ended.append(c)
                out.append({"event": f"order.{st.lower()}", "entity": "order", "entity_id": c,
                            "payload": {"filled_quantity": q, "reason": r}})
        done["ended"] = ended
        return out

    def _positions(self, s, frame, prov, extra, done) -> list[dict] | None:
        snapshot = extra.get("positions")
        if snapshot is not None and len(snapshot):
            self.ledger.record_positions(s, snapshot, prov=prov)
        for trip in extra.get("trips", []):  # breaker state is namespaced: a replay never halts live trading
            self.ledger.trip_breaker(s, trip.name, f"{self.namespace}|{trip.scope}", trip.reason, value=trip.value,
                                     threshold=trip.threshold, at=trip.at.floor("us").to_pydatetime(),
                                     until=trip.until.floor("us").to_pydatetime() if trip.until is not None else None,
                                     prov=prov)
        return None


def _remember(cache: dict[str, int], ids: dict[str, int]) -> None:
    if len(cache) + len(ids) > _PK_CACHE_MAX:
        cache.clear()
    cache.update(ids)


class NullRecorder:
    """Records nothing (unit tests of single steps)."""

    def known_signal_ids(self, signal_ids: list[str]) -> set[str]:
        return set()

    def claim_signals(self, signals: pd.DataFrame, prov: Provenance) -> set[str]:
        return set()

    def active_breakers(self, now: pd.Timestamp) -> list[dict]:
        return []

    def trade_history(self, strategy: str) -> TradeHistory:
        return TradeHistory(0, 0.0, 0.0)

    def record(self, *args: Any, **kwargs: Any) -> None:
        return None

    def record_failure(self, *args: Any, **kwargs: Any) -> None:
        return None

    def record_alerts(self, *args: Any, **kwargs: Any) -> None:
        return None
