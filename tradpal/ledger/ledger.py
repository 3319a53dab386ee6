"""The Ledger: transactional, bulk persistence of everything the execution pipeline does."""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

import pandas as pd
from sqlalchemy import Connection, Engine, Table, bindparam, func, insert, or_, select, update
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from tradpal.ledger import frames as fr
from tradpal.ledger import migrate as _migrate
from tradpal.ledger.engine import BEGIN_IMMEDIATE, create_ledger_engine
from tradpal.ledger.models import AuditLog, Base, Breaker, Fill, Order, Position, Rejection, Run, Signal

__all__ = ["DEFAULT_URL", "RUN_KINDS", "RUN_STATUSES", "TABLES", "Ledger", "Provenance"]

DEFAULT_URL = "sqlite:///.tradpal/ledger.db"
RUN_KINDS = frozenset({"replay", "live", "analytics"})
RUN_STATUSES = frozenset({"running", "completed", "failed", "crashed"})  # crashed: see mark_crashed
TABLES = ("runs", "signals", "orders", "fills", "positions", "rejections", "audit_log", "breakers")

# Keys per IN (...) list. SQLite allows 32766 bound parameters, psycopg 65535; one SELECT
# covers any realistic batch (a whole replay is ~5,000 keys).
_IN_CHUNK = 10_000
# pg_advisory_xact_lock key serialising concurrent migrations of one database
_MIGRATION_LOCK = zlib.crc32(b"tradpal.ledger.migrate")

_signals: Table = Signal.__table__  # type: ignore[assignment]
_orders: Table = Order.__table__  # type: ignore[assignment]
_fills: Table = Fill.__table__  # type: ignore[assignment]
_positions: Table = Position.__table__  # type: ignore[assignment]
_rejections: Table = Rejection.__table__  # type: ignore[assignment]
_audit: Table = AuditLog.__table__  # type: ignore[assignment]
_breakers: Table = Breaker.__table__  # type: ignore[assignment]
_runs: Table = Run.__table__  # type: ignore[assignment]

SIGNAL_COLUMNS = (
    "signal_id",
    "timestamp",
    "symbol",
    "side",
    "quantity",
    "strategy",
    "order_type",
    "limit_price",
    "stop_price",
    "reference_price",
    "received_at",
)
ORDER_COLUMNS = (
    "client_order_id",
    "symbol",
    "side",
    "order_type",
    "quantity",
    "price",
    "stop_price",
    "time_in_force",
    "created_at",
    "status",
    # also accepted when present (e.g. an order recorded after it was placed):
    "broker_order_id",
    "filled_quantity",
    "avg_price",
    "fees",
    "fee_currency",
    "reason",
    "placed_at",
    "updated_at",
)
ORDER_UPDATE_COLUMNS = (
    "broker_order_id",
    "status",
    "filled_quantity",
    "avg_price",
    "fees",
    "fee_currency",
    "reason",
    "placed_at",
    "updated_at",
)
FILL_COLUMNS = (
    "trade_id",
    "timestamp",
    "symbol",
    "side",
    "quantity",
    "price",
    "fee",
    "fee_currency",
    "is_maker",
    "reference_price",
)
POSITION_COLUMNS = (
    "symbol",
    "quantity",
    "average_price",
    "market_price",
    "realized_pnl",
    "unrealized_pnl",
    "as_of",
)
REJECTION_COLUMNS = ("signal_id", "client_order_id", "step", "reason", "payload", "created_at")


@dataclass(frozen=True)
class Provenance:
    """Who wrote a row: the ledger run and the Prefect flow run / task run."""

    run_id: str | None = None
    flow_run_id: str | None = None
    task_run_id: str | None = None

    def columns(self) -> dict[str, str | None]:
        return {"run_id": self.run_id, "flow_run_id": self.flow_run_id, "task_run_id": self.task_run_id}


def _now() -> datetime:
    return datetime.now(UTC)


def _conn(session: Session | Connection) -> Connection:
    return session if isinstance(session, Connection) else session.connection()


def _chunks(keys: Sequence[Any]) -> Iterator[list[Any]]:
    for i in range(0, len(keys), _IN_CHUNK):
        yield list(keys[i : i + _IN_CHUNK])


def _unique(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(v for v in values if v is not None))


def _fill_default(col: list[Any] | None, n: int, default: Any) -> list[Any]:
    if col is None:
        return [default] * n
    return [default if v is None else v for v in col]


def _fmt(keys: list[Any], total: int) -> str:
    shown = ", ".join(repr(k) for k in keys)
    return f"{shown} (+{total - len(keys)} more)" if total > len(keys) else shown


class Ledger:
    """Persistence for runs, signals, orders, fills, positions, rejections and the audit log.

    ``Ledger(url)`` migrates the database to the latest revision (idempotent). Writers take
    a session from :meth:`transaction` so that one pipeline task is one transaction::

        with ledger.transaction() as s:
            ids = ledger.record_signals(s, frame, namespace="live", prov=prov)
            ledger.audit_many(s, rows, prov=prov)

    Writers also accept a plain ``Connection`` in a transaction. Frames: extra columns are
    ignored, NaN/NaT/None become NULL, naive datetimes are taken as UTC, enums are stored
    by value; a missing required column or a null in a NOT NULL one raises ValueError
    naming the rows. Every writer is one executemany plus at most two key lookups
    (``SELECT ... WHERE key IN (...)``), whatever the number of rows.

    Notes: on SQLite a transaction takes the write lock when it begins, so do not open a
    second ``transaction()`` (or write through ``engine``) inside one in the same thread;
    concurrent writers queue on the busy timeout. Readers (``frame``, ``find_order``,
    ``lineage``, ``get_run``) use their own connection and see committed data only; with an
    in-memory SQLite URL (one shared connection) call them outside a transaction.
    """

    def __init__(self, url: str | URL, *, schema: str | None = None, migrate: bool = True) -> None:
        self._engine = create_ledger_engine(url, schema=schema)
        self._schema = schema
        self._dialect = self._engine.dialect.name
        self._write_engine = (
            self._engine.execution_options(**{BEGIN_IMMEDIATE: True})
            if self._dialect == "sqlite"
            else self._engine
        )
        if migrate:
            try:
                self._migrate()
            except BaseException:
                self._engine.dispose()
                raise

    def _migrate(self) -> None:
        with self._write_engine.begin() as conn:
            if self._dialect == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
                if self._schema is not None:
                    quoted = self._engine.dialect.identifier_preparer.quote_identifier(self._schema)
                    conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
            _migrate.upgrade(conn)

    # -- plumbing ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The database URL with any password masked."""
        return self._engine.url.render_as_string(hide_password=True)

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def schema(self) -> str | None:
        return self._schema

    def __repr__(self) -> str:
        schema = f", schema={self._schema!r}" if self._schema else ""
        return f"Ledger({self.url!r}{schema})"

    def close(self) -> None:
        """Close pooled connections (the Ledger stays usable; new connections are opened)."""
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises.
        On SQLite it begins IMMEDIATE (takes the write lock up front)."""
        with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
            yield session

    # -- runs ---------------------------------------------------------------------------

    def start_run(
        self, kind: str, params: dict[str, Any], *, run_id: str | None = None, flow_run_id: str | None = None
    ) -> str:
        if kind not in RUN_KINDS:
            raise ValueError(f"start_run: kind must be one of {sorted(RUN_KINDS)}, got {kind!r}")
        run_id = run_id or uuid.uuid4().hex
        if len(run_id) > 36:
            raise ValueError(f"start_run: run_id must be at most 36 characters, got {run_id!r}")
        with self.transaction() as s:
            _conn(s).execute(
                insert(_runs).values(
                    id=run_id,
                    kind=kind,
                    status="running",
                    flow_run_id=flow_run_id,
                    started_at=_now(),
                    params=dict(params or {}),
                )
            )
        return run_id

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        if status not in RUN_STATUSES - {"running"}:
            raise ValueError(f"finish_run: status must be one of {sorted(RUN_STATUSES - {'running'})}, got {status!r}")
        with self.transaction() as s:
            res = _conn(s).execute(
                update(_runs)
                .where(_runs.c.id == run_id)
                .values(status=status, finished_at=_now(), summary=dict(summary or {}))
            )
            if res.rowcount != 1:
                raise ValueError(f"finish_run: no run {run_id!r}")

    def mark_crashed(self, session: Session | Connection, run_id: str, reason: str,
                     summary: dict[str, Any] | None = None) -> bool:
        """A run whose process is gone without finishing it (found by a later run's
        reconciliation): status ``crashed`` with ``reason`` (and ``summary``) in its summary,
        finished at the time it was found. Only a run still ``running`` changes; returns
        whether this call changed it (two reconciliations racing: one wins)."""
        res = _conn(session).execute(
            update(_runs)
            .where(_runs.c.id == run_id, _runs.c.status == "running")
            .values(status="crashed", finished_at=_now(), summary={**(summary or {}), "reason": reason})
        )
        return res.rowcount == 1

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        return self._one(select(_runs).where(_runs.c.id == run_id))

    # -- writers ------------------------------------------------------------------------

    def record_signals(
        self, session: Session | Connection, frame: pd.DataFrame, *, namespace: str, prov: Provenance,
        skip_existing: bool = False,
    ) -> dict[str, int]:
        """Insert signals; returns {signal_id: pk}. A signal_id already recorded in the
        namespace raises IntegrityError (the caller's transaction then rolls back) or, with
        ``skip_existing``, is left alone and missing from the result: the insert is then a
        claim (``INSERT ... ON CONFLICT DO NOTHING``), atomic across processes and hosts
        sharing the database, so of two writers of one id exactly one gets it."""
        n = len(frame)
        if n == 0:
            return {}
        op = "record_signals"
        cols = fr.columns_from_frame(
            frame,
            _signals,
            SIGNAL_COLUMNS,
            op=op,
            required=("signal_id", "timestamp", "symbol", "side", "order_type"),
        )
        cols["received_at"] = _fill_default(cols.get("received_at"), n, _now())
        self._check_not_null(
            op, cols, ("signal_id", "timestamp", "symbol", "side", "order_type"), "signal_id"
        )
        rows = fr.rows_from_columns(cols, n, {"namespace": namespace, **prov.columns()})
        if skip_existing:
            stmt = (self._dialect_insert(_signals)
                    .on_conflict_do_nothing(index_elements=[_signals.c.namespace, _signals.c.signal_id])
                    .returning(_signals.c.signal_id, _signals.c.id))
            return {k: pk for k, pk in _conn(session).execute(stmt, rows)}
        return self._insert_returning(
            _conn(session), _signals, rows, "signal_id", _signals.c.namespace == namespace
        )

    def record_orders(
        self,
        session: Session | Connection,
        frame: pd.DataFrame,
        *,
        namespace: str,
        venue: str,
        prov: Provenance,
    ) -> dict[str, int]:
        """Insert orders for signals of ``namespace``; returns {client_order_id: pk}.
        Raises ValueError (writing nothing) if a signal is not recorded."""
        n = len(frame)
        if n == 0:
            return {}
        op = "record_orders"
        required = ("signal_id", "client_order_id", "symbol", "side", "order_type", "quantity", "created_at")
        if "signal_id" not in frame.columns:
            raise ValueError(f"{op}: frame is missing required column(s) ['signal_id']")
        signal_ids = fr.convert(frame["signal_id"], "str", "signal_id")
        cols = fr.columns_from_frame(frame, _orders, ORDER_COLUMNS, op=op, required=required)
        self._check_not_null(op, {"signal_id": signal_ids, **cols}, required, "client_order_id")
        cols["time_in_force"] = _fill_default(cols.get("time_in_force"), n, "GTC")
        cols["status"] = _fill_default(cols.get("status"), n, "CREATED")
        cols["filled_quantity"] = _fill_default(cols.get("filled_quantity"), n, 0.0)
        cols["fees"] = _fill_default(cols.get("fees"), n, 0.0)
        if "updated_at" not in cols:
            cols["updated_at"] = cols["created_at"]

        conn = _conn(session)
        pks = self._lookup(conn, _signals, "signal_id", signal_ids, _signals.c.namespace == namespace)
        missing = [
            (sid, coid)
            for sid, coid in zip(signal_ids, cols["client_order_id"], strict=True)
            if sid not in pks
        ]
        if missing:
            shown = ", ".join(f"signal {sid!r} (order {coid!r})" for sid, coid in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise ValueError(
                f"{op}: no such signal in namespace {namespace!r}: {shown}{more}; record the signal first"
            )
        cols["signal_pk"] = [pks[sid] for sid in signal_ids]
        rows = fr.rows_from_columns(cols, n, {"venue": venue, **prov.columns()})
        return self._insert_returning(conn, _orders, rows, "client_order_id", _orders.c.venue == venue)

    def update_orders(
        self, session: Session | Connection, frame: pd.DataFrame, *, venue: str, prov: Provenance
    ) -> None:
        """Update the columns present in ``frame`` (of ORDER_UPDATE_COLUMNS) for the orders
        (venue, client_order_id), in one executemany. Other columns are left untouched,
        except flow_run_id / task_run_id which record the last writer when ``prov`` has
        them. Raises ValueError if an order does not exist."""
        op = "update_orders"
        if "client_order_id" not in frame.columns:
            raise ValueError(f"{op}: frame is missing required column(s) ['client_order_id']")
        n = len(frame)
        present = [c for c in ORDER_UPDATE_COLUMNS if c in frame.columns]
        if n == 0 or not present:
            return
        coids = fr.convert(frame["client_order_id"], "str", "client_order_id")
        cols = fr.columns_from_frame(frame, _orders, present, op=op)
        not_null = ["client_order_id", *(c for c in present if not _orders.c[c].nullable)]
        self._check_not_null(op, {"client_order_id": coids, **cols}, not_null, "client_order_id")

        values: dict[str, Any] = {c: bindparam(f"v_{c}", type_=_orders.c[c].type) for c in present}
        if prov.flow_run_id is not None:
            values["flow_run_id"] = prov.flow_run_id
        if prov.task_run_id is not None:
            values["task_run_id"] = prov.task_run_id
        stmt = (
            update(_orders)
            .where(_orders.c.venue == venue, _orders.c.client_order_id == bindparam("k_client_order_id"))
            .values(values)
        )
        params = fr.rows_from_columns(
            {"k_client_order_id": coids, **{f"v_{c}": cols[c] for c in present}}, n, {}
        )
        conn = _conn(session)
        res = conn.execute(stmt, params)
        if conn.dialect.supports_sane_multi_rowcount and res.rowcount == n:
            return
        found = self._lookup(conn, _orders, "client_order_id", coids, _orders.c.venue == venue)
        missing = [c for c in _unique(coids) if c not in found]
        if missing:
            raise ValueError(f"{op}: no order(s) {_fmt(missing[:5], len(missing))} at venue {venue!r}")

    def record_fills(
        self, session: Session | Connection, frame: pd.DataFrame, *, venue: str, prov: Provenance
    ) -> int:
        """Insert fills of orders at ``venue``; a trade_id already recorded for the venue
        (or repeated in the frame) is skipped. Returns the number of rows inserted. Raises
        ValueError (writing nothing) if an order is not recorded."""
        n = len(frame)
        if n == 0:
            return 0
        op = "record_fills"
        required = ("client_order_id", "trade_id", "timestamp", "symbol", "side", "quantity", "price")
        if "client_order_id" not in frame.columns:
            raise ValueError(f"{op}: frame is missing required column(s) ['client_order_id']")
        coids = fr.convert(frame["client_order_id"], "str", "client_order_id")
        cols = fr.columns_from_frame(frame, _fills, FILL_COLUMNS, op=op, required=required)
        self._check_not_null(op, {"client_order_id": coids, **cols}, required, "trade_id")
        cols["fee"] = _fill_default(cols.get("fee"), n, 0.0)

        conn = _conn(session)
        pks = self._lookup(conn, _orders, "client_order_id", coids, _orders.c.venue == venue)
        missing = _unique(c for c in coids if c not in pks)
        if missing:
            raise ValueError(
                f"{op}: no order(s) {_fmt(missing[:5], len(missing))} at venue {venue!r}; record the order first"
            )
        cols["order_pk"] = [pks[c] for c in coids]
        rows = fr.rows_from_columns(cols, n, {"venue": venue, **prov.columns()})
        existing = self._lookup(conn, _fills, "trade_id", cols["trade_id"], _fills.c.venue == venue)
        seen: set[str] = set(existing)
        new_rows = []
        for row in rows:
            if row["trade_id"] not in seen:
                seen.add(row["trade_id"])
                new_rows.append(row)
        if not new_rows:
            return 0
        if self._dialect in ("postgresql", "sqlite"):
            # a concurrent writer may have recorded the same trade since the SELECT above
            ins = self._dialect_insert(_fills).on_conflict_do_nothing(index_elements=["venue", "trade_id"])
            res = conn.execute(ins.execution_options(preserve_rowcount=True), new_rows)
            return res.rowcount if conn.dialect.supports_sane_multi_rowcount else len(new_rows)
        conn.execute(insert(_fills), new_rows)
        return len(new_rows)

    def record_positions(
        self, session: Session | Connection, frame: pd.DataFrame, *, prov: Provenance
    ) -> None:
        """Append position snapshots."""
        n = len(frame)
        if n == 0:
            return
        op = "record_positions"
        required = ("symbol", "quantity", "as_of")
        cols = fr.columns_from_frame(frame, _positions, POSITION_COLUMNS, op=op, required=required)
        self._check_not_null(op, cols, required, "symbol")
        _conn(session).execute(insert(_positions), fr.rows_from_columns(cols, n, prov.columns()))

    def record_rejections(
        self, session: Session | Connection, frame: pd.DataFrame, *, namespace: str, prov: Provenance
    ) -> int:
        """Insert rejections; ``payload`` may be a dict (or list), a JSON string or a plain
        string; ``created_at`` defaults to now. Returns the number of rows inserted."""
        n = len(frame)
        if n == 0:
            return 0
        op = "record_rejections"
        required = ("step", "reason")
        cols = fr.columns_from_frame(frame, _rejections, REJECTION_COLUMNS, op=op, required=required)
        key = "signal_id" if "signal_id" in cols else "step"
        self._check_not_null(op, cols, required, key)
        cols["created_at"] = _fill_default(cols.get("created_at"), n, _now())
        rows = fr.rows_from_columns(cols, n, {"namespace": namespace, **prov.columns()})
        _conn(session).execute(insert(_rejections), rows)
        return n

    def audit(
        self,
        session: Session | Connection,
        event: str,
        entity: str,
        *,
        entity_id: str | None = None,
        payload: dict[str, Any] | None = None,
        prov: Provenance,
    ) -> None:
        self.audit_many(
            session,
            [{"event": event, "entity": entity, "entity_id": entity_id, "payload": payload}],
            prov=prov,
        )

    def audit_many(
        self, session: Session | Connection, rows: Iterable[Mapping[str, Any]], *, prov: Provenance
    ) -> None:
        """Append audit rows: each has ``event``, ``entity`` and optionally ``entity_id``,
        ``payload`` and ``time`` (default now, UTC)."""
        now = _now()
        p = prov.columns()
        out = []
        for i, r in enumerate(rows):
            event, entity = r.get("event"), r.get("entity")
            if not event or not entity:
                raise ValueError(f"audit_many: row {i} needs 'event' and 'entity', got {dict(r)!r}")
            entity_id = r.get("entity_id")
            t = r.get("time")
            out.append(
                {
                    "time": now if t is None else t,
                    "event": str(event),
                    "entity": str(entity),
                    "entity_id": entity_id
                    if entity_id is None or type(entity_id) is str
                    else fr.scalar_str(entity_id),
                    "payload": r.get("payload"),
                    **p,
                }
            )
        if out:
            _conn(session).execute(insert(_audit), out)

    # -- readers ------------------------------------------------------------------------

    def frame(self, table: str, *, run_id: str | None = None) -> pd.DataFrame:
        """A table as a typed frame (columns in table order), sorted by id (runs: by
        started_at, then id), optionally only the rows of ``run_id``."""
        if table not in TABLES:
            raise ValueError(f"frame: unknown table {table!r}; expected one of {TABLES}")
        t = Base.metadata.tables[table]
        if table == "runs":
            stmt = select(t).order_by(t.c.started_at, t.c.id)
            key = t.c.id
        else:
            stmt = select(t).order_by(t.c.id)
            key = t.c.run_id
        if run_id is not None:
            stmt = stmt.where(key == run_id)
        with self._engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return fr.to_frame(rows, t)

    # -- circuit breakers ---------------------------------------------------------------

    def trip_breaker(self, session: Session | Connection, name: str, scope: str, reason: str, *,
                     value: float | None = None, threshold: float | None = None, until: datetime | None = None,
                     at: datetime | None = None, prov: Provenance) -> None:
        """Trip (or re-trip) breaker ``name`` for ``scope``; audited as ``breaker.tripped``."""
        conn = _conn(session)
        at = at or _now()
        row = {"state": "tripped", "reason": reason, "value": value, "threshold": threshold, "tripped_at": at,
               "until": until, "reset_at": None, "reset_reason": None, **prov.columns()}
        done = conn.execute(update(_breakers).where(_breakers.c.name == name, _breakers.c.scope == scope)
                            .values(**row)).rowcount
        if not done:
            conn.execute(insert(_breakers).values(name=name, scope=scope, **row))
        self.audit(conn, "breaker.tripped", "breaker", entity_id=f"{name}:{scope}",
                   payload={"reason": reason, "value": value, "threshold": threshold,
                            "until": until.isoformat() if until else None}, prov=prov)

    def reset_breakers(self, reason: str, *, name: str | None = None, scope: str | None = None,
                       prov: Provenance) -> list[str]:
        """Reset tripped breakers (all, or those matching name/scope), each audited as
        ``breaker.reset`` with the reason. Returns the ``name:scope`` of each reset."""
        if not reason or not reason.strip():
            raise ValueError("reset_breakers: a reason is required (it is audited)")
        cond = _breakers.c.state == "tripped"
        if name:
            cond &= _breakers.c.name == name
        if scope:
            cond &= _breakers.c.scope == scope
        with self.transaction() as s:
            conn = _conn(s)
            rows = conn.execute(select(_breakers.c.id, _breakers.c.name, _breakers.c.scope).where(cond)).all()
            now = _now()
            for r in rows:
                conn.execute(update(_breakers).where(_breakers.c.id == r.id).values(
                    state="reset", reset_at=now, reset_reason=reason, **prov.columns()))
            self.audit_many(conn, [{"event": "breaker.reset", "entity": "breaker", "entity_id": f"{r.name}:{r.scope}",
                                    "payload": {"reason": reason}} for r in rows], prov=prov)
        return [f"{r.name}:{r.scope}" for r in rows]

    def active_breakers(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Tripped breakers whose cooldown has not ended at ``now`` (default: now)."""
        now = now or _now()
        with self.engine.connect() as conn:
            rows = self._dicts(conn, select(_breakers).where(_breakers.c.state == "tripped").order_by(_breakers.c.id))
        return [r for r in rows if r["until"] is None or r["until"] > now]

    def existing_signal_ids(self, namespace: str, signal_ids: Iterable[str]) -> set[str]:
        """The ids among ``signal_ids`` already recorded in ``namespace`` (re-deliveries)."""
        with self.engine.connect() as conn:
            return set(self._lookup(conn, _signals, "signal_id", signal_ids, _signals.c.namespace == namespace))

    def find_order(self, venue: str, client_order_id: str) -> dict[str, Any] | None:
        return self._one(
            select(_orders).where(_orders.c.venue == venue, _orders.c.client_order_id == client_order_id)
        )

    def lineage(self, namespace: str, signal_id: str) -> dict[str, Any]:
        """Everything about one signal: ``{"signal": row | None, "orders": [...],
        "fills": [...], "rejections": [...], "audit": [...]}`` (rows as dicts, by id).

        Rejections: those of (namespace, signal_id) plus those naming one of its orders.
        Audit: rows whose entity_id is the signal id, one of its client order ids or one
        of its trade ids, restricted to the runs that wrote those rows (or no run)."""
        with self._engine.connect() as conn:
            sig = conn.execute(
                select(_signals).where(_signals.c.namespace == namespace, _signals.c.signal_id == signal_id)
            ).first()
            signal = dict(sig._mapping) if sig is not None else None
            orders: list[dict[str, Any]] = []
            fills: list[dict[str, Any]] = []
            if signal is not None:
                orders = self._dicts(
                    conn, select(_orders).where(_orders.c.signal_pk == signal["id"]).order_by(_orders.c.id)
                )
                if orders:
                    fills = self._dicts(
                        conn,
                        select(_fills)
                        .where(_fills.c.order_pk.in_([o["id"] for o in orders]))
                        .order_by(_fills.c.id),
                    )
            coids = [o["client_order_id"] for o in orders]
            rej_cond = _rejections.c.signal_id == signal_id
            if coids:
                rej_cond = or_(rej_cond, _rejections.c.client_order_id.in_(coids))
            rejections = self._dicts(
                conn,
                select(_rejections)
                .where(_rejections.c.namespace == namespace, rej_cond)
                .order_by(_rejections.c.id),
            )
            entity_ids = _unique([signal_id, *coids, *(f["trade_id"] for f in fills)])
            run_ids = _unique(
                r["run_id"] for r in [*([signal] if signal else []), *orders, *fills, *rejections]
            )
            cond = _audit.c.entity_id.in_(entity_ids)
            if run_ids:
                cond = cond & or_(_audit.c.run_id.in_(run_ids), _audit.c.run_id.is_(None))
            audit = self._dicts(conn, select(_audit).where(cond).order_by(_audit.c.id))
        return {"signal": signal, "orders": orders, "fills": fills, "rejections": rejections, "audit": audit}

    # -- helpers ------------------------------------------------------------------------

    def _one(self, stmt: Any) -> dict[str, Any] | None:
        with self._engine.connect() as conn:
            row = conn.execute(stmt).first()
        return dict(row._mapping) if row is not None else None

    @staticmethod
    def _dicts(conn: Connection, stmt: Any) -> list[dict[str, Any]]:
        return [dict(r._mapping) for r in conn.execute(stmt)]

    def _dialect_insert(self, table: Table) -> Any:
        if self._dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)

    @staticmethod
    def _check_not_null(op: str, cols: dict[str, list[Any]], names: Iterable[str], key: str) -> None:
        """ValueError naming the rows (by ``cols[key]``) where a required column is null."""
        for name in names:
            values = cols.get(name)
            if values is not None and None in values:
                keys = cols.get(key) or list(range(len(values)))
                total = values.count(None)
                raise ValueError(
                    f"{op}: column {name!r} is null for {key} {_fmt(fr.missing_keys(values, keys), total)}"
                )

    @staticmethod
    def _lookup(conn: Connection, table: Table, key: str, keys: Iterable[Any], scope: Any) -> dict[Any, int]:
        """{key: id} for the rows of ``table`` within ``scope`` whose ``key`` is in ``keys``
        (one SELECT ... IN per 10,000 keys)."""
        wanted = _unique(keys)
        out: dict[Any, int] = {}
        col = table.c[key]
        for chunk in _chunks(wanted):
            out.update(
                (k, pk) for k, pk in conn.execute(select(col, table.c.id).where(scope, col.in_(chunk)))
            )
        return out

    def _insert_returning(
        self, conn: Connection, table: Table, rows: list[dict[str, Any]], key: str, scope: Any
    ) -> dict[str, int]:
        """Insert ``rows`` (one executemany) and return {key: id}.

        SQLite: INSERT ... RETURNING (batched by SQLAlchemy's insertmanyvalues). Elsewhere a
        plain executemany then one SELECT of the id map: with psycopg that is ~5x faster
        than RETURNING, whose multi-row VALUES statements psycopg parses in Python."""
        if conn.dialect.name == "sqlite" and conn.dialect.insert_executemany_returning:
            result = conn.execute(insert(table).returning(table.c[key], table.c.id), rows)
            return {k: pk for k, pk in result}
        conn.execute(insert(table), rows)
        return self._lookup(conn, table, key, (r[key] for r in rows), scope)
