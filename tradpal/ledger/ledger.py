"""The Ledger: transactional, bulk persistence of everything the execution pipeline does."""

from __future__ import annotations

import sqlite3
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
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from tradpal.ledger import frames as fr
from tradpal.ledger import migrate as _migrate
from tradpal.ledger.engine import BEGIN_IMMEDIATE, create_ledger_engine, json_dumps
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


def _conn(session: Session | Connection | SqliteWrite) -> Connection:
    return session if isinstance(session, Connection) else session.connection()


# -- SQLite at the driver level ---------------------------------------------------------
# Bulk writes on SQLite skip SQLAlchemy's per-row compile and bind processing: the values
# are converted once per column (`frames.convert_sqlite`: exactly what the column types
# would bind) and handed to the sqlite3 driver as tuples, in the caller's transaction.

# values per multi-row INSERT ... RETURNING (SQLite's limit: 32766): a replay batch of
# orders (500 x 24) is one statement
_SQLITE_MAX_PARAMS = 32_000


def _execute(db: sqlite3.Connection, sql: str, params: Any = (), many: bool = False) -> sqlite3.Cursor:
    """One driver-level statement (``many``: one executemany); sqlite3 errors are raised
    as SQLAlchemy's (``OperationalError``: locked, busy; ``IntegrityError``: a key), as a
    statement through SQLAlchemy would raise them."""
    try:
        return db.executemany(sql, params) if many else db.execute(sql, params)
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc


class SqliteWrite:
    """A SQLite transaction of `Ledger.write`, at the driver level: ``db`` is the pooled
    sqlite3 connection, in a transaction begun IMMEDIATE. ``connection()`` gives a
    SQLAlchemy Connection on the same DBAPI connection and transaction, for the few Core
    statements (breakers, runs); it never begins or ends the transaction itself."""

    __slots__ = ("_conn", "_engine", "_raw", "db")

    def __init__(self, engine: Engine, raw: Any) -> None:
        self._engine, self._raw, self._conn = engine, raw, None
        self.db: sqlite3.Connection = raw.driver_connection

    def connection(self) -> Connection:
        if self._conn is None:
            # _allow_autobegin=False: the transaction is this object's (BEGIN IMMEDIATE issued)
            self._conn = Connection(self._engine, connection=self._raw, _allow_autobegin=False)
        return self._conn


def _driver(session: Session | Connection | SqliteWrite) -> sqlite3.Connection | None:
    """The sqlite3 connection under ``session`` (its transaction begun), or None elsewhere."""
    if type(session) is SqliteWrite:
        return session.db
    conn = _conn(session)
    if conn.dialect.name != "sqlite":
        return None
    db = conn.connection.driver_connection
    if not db.in_transaction and not conn.in_transaction():
        conn.begin()  # as Core's autobegin would
    return db


_SQL: dict[tuple, str] = {}
_ANY_TRIPPED = "SELECT 1 FROM \"breakers\" WHERE \"state\" = 'tripped' LIMIT 1"


def _q(names: Iterable[str]) -> str:
    return ", ".join(f'"{n}"' for n in names)


def _insert_sql(table: str, names: tuple[str, ...], rows: int = 1, tail: str = "") -> str:
    key = ("insert", table, names, rows, tail)
    sql = _SQL.get(key)
    if sql is None:
        one = "(" + ", ".join("?" * len(names)) + ")"
        sql = f'INSERT INTO "{table}" ({_q(names)}) VALUES {", ".join([one] * rows)}{tail}'
        if rows <= 4:  # the live path's sizes, built once; large statements are not kept
            _SQL[key] = sql
    return sql


def _lists(columns: dict[str, list[Any]], constants: Mapping[str, Any], n: int) -> tuple[tuple[str, ...], list]:
    names = (*columns, *constants)
    return names, [*columns.values(), *([v] * n for v in constants.values())]


def _sqlite_insert(db: sqlite3.Connection, table: str, columns: dict[str, list[Any]],
                   constants: Mapping[str, Any], n: int, tail: str = "") -> int:
    """One executemany of the rows; returns the number of rows changed."""
    names, lists = _lists(columns, constants, n)
    return _execute(db, _insert_sql(table, names, 1, tail), zip(*lists, strict=True), many=True).rowcount


def _sqlite_insert_returning(db: sqlite3.Connection, table: str, columns: dict[str, list[Any]],
                             constants: Mapping[str, Any], n: int, key: str, tail: str = "") -> dict[Any, int]:
    """Multi-row ``INSERT ... RETURNING key, id`` (sqlite3's executemany drops RETURNING
    rows): {key: id} of the rows inserted."""
    names, lists = _lists(columns, constants, n)
    width = len(names)
    step = max(1, _SQLITE_MAX_PARAMS // width)
    tail = f'{tail} RETURNING "{key}", "id"'
    out: dict[Any, int] = {}
    for start in range(0, n, step):
        rows = min(step, n - start)
        flat: list[Any] = [None] * (rows * width)
        for j, col in enumerate(lists):
            flat[j::width] = col[start:start + rows]
        out.update(_execute(db, _insert_sql(table, names, rows, tail), flat).fetchall())
    return out


def _sqlite_lookup(db: sqlite3.Connection, table: str, key: str, keys: Iterable[Any],
                   scope: tuple[str, Any]) -> dict[Any, int]:
    """{key: id} for the rows of ``table`` with ``scope`` (column, value) whose ``key`` is in ``keys``."""
    wanted = _unique(keys)
    out: dict[Any, int] = {}
    for start in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[start:start + _IN_CHUNK]
        sql = (f'SELECT "{key}", "id" FROM "{table}" WHERE "{scope[0]}" = ? AND "{key}" IN '
               f'({", ".join("?" * len(chunk))})')
        out.update(_execute(db, sql, [scope[1], *chunk]).fetchall())
    return out


def _stored(db: sqlite3.Connection | None, value: Any, kind: str) -> Any:
    """A default value as the writer binds it: SQLite's stored form on the driver path."""
    return value if db is None else fr.sqlite_value(value, kind)


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



def _audit_fields(i: int, r: Mapping[str, Any]) -> tuple[Any, str, str, str | None, Any]:
    """An audit row's (time, event, entity, entity_id, payload), checked: ``event`` and
    ``entity`` are required; ``entity_id`` becomes text."""
    event, entity = r.get("event"), r.get("entity")
    if not event or not entity:
        raise ValueError(f"audit_many: row {i} needs 'event' and 'entity', got {dict(r)!r}")
    entity_id = r.get("entity_id")
    return (r.get("time"), str(event), str(entity),
            entity_id if entity_id is None or type(entity_id) is str else fr.scalar_str(entity_id), r.get("payload"))

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

    @contextmanager
    def write(self) -> Iterator[SqliteWrite | Connection]:
        """One transaction for the writers, like :meth:`transaction` (committed when the
        block ends, rolled back if it raises; on SQLite begun IMMEDIATE), without the ORM
        Session: on SQLite BEGIN IMMEDIATE / COMMIT on a pooled sqlite3 connection (a
        `SqliteWrite`), elsewhere a Core Connection in ``engine.begin()``. A pipeline
        step's rows go through here, one transaction per step call."""
        if self._dialect != "sqlite":
            with self._write_engine.begin() as conn:
                yield conn
            return
        raw = self._engine.raw_connection()
        try:
            tx = SqliteWrite(self._engine, raw)
            _execute(tx.db, "BEGIN IMMEDIATE")
            try:
                yield tx
            except BaseException:
                if tx.db.in_transaction:
                    tx.db.rollback()
                raise
            _execute(tx.db, "COMMIT")
        finally:
            raw.close()  # back to the pool (which rolls back whatever a failed COMMIT left)

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
        db = _driver(session)
        cols = fr.columns_from_frame(
            frame,
            _signals,
            SIGNAL_COLUMNS,
            op=op,
            required=("signal_id", "timestamp", "symbol", "side", "order_type"),
            sqlite=db is not None,
        )
        cols["received_at"] = _fill_default(cols.get("received_at"), n, _stored(db, _now(), "datetime"))
        self._check_not_null(
            op, cols, ("signal_id", "timestamp", "symbol", "side", "order_type"), "signal_id"
        )
        constants = {"namespace": namespace, **prov.columns()}
        if db is not None:
            tail = ' ON CONFLICT ("namespace", "signal_id") DO NOTHING' if skip_existing else ""
            return _sqlite_insert_returning(db, "signals", cols, constants, n, "signal_id", tail)
        rows = fr.rows_from_columns(cols, n, constants)
        if skip_existing:
            stmt = (self._dialect_insert(_signals)
                    .on_conflict_do_nothing(index_elements=[_signals.c.namespace, _signals.c.signal_id])
                    .returning(_signals.c.signal_id, _signals.c.id))
            return {k: pk for k, pk in _conn(session).execute(stmt, rows)}
        return self._insert_returning(
            _conn(session), _signals, rows, "signal_id", ("namespace", namespace)
        )

    def record_orders(
        self,
        session: Session | Connection,
        frame: pd.DataFrame,
        *,
        namespace: str,
        venue: str,
        prov: Provenance,
        signal_pks: Mapping[str, int] | None = None,
    ) -> dict[str, int]:
        """Insert orders for signals of ``namespace``; returns {client_order_id: pk}.
        Raises ValueError (writing nothing) if a signal is not recorded. ``signal_pks``:
        {signal_id: pk} already known (committed) for signals of ``namespace``; the others
        are looked up."""
        n = len(frame)
        if n == 0:
            return {}
        op = "record_orders"
        required = ("signal_id", "client_order_id", "symbol", "side", "order_type", "quantity", "created_at")
        if "signal_id" not in frame.columns:
            raise ValueError(f"{op}: frame is missing required column(s) ['signal_id']")
        db = _driver(session)
        signal_ids = fr.column_values(frame, "signal_id", "str", op=op)
        cols = fr.columns_from_frame(frame, _orders, ORDER_COLUMNS, op=op, required=required, sqlite=db is not None)
        self._check_not_null(op, {"signal_id": signal_ids, **cols}, required, "client_order_id")
        cols["time_in_force"] = _fill_default(cols.get("time_in_force"), n, "GTC")
        cols["status"] = _fill_default(cols.get("status"), n, "CREATED")
        cols["filled_quantity"] = _fill_default(cols.get("filled_quantity"), n, 0.0)
        cols["fees"] = _fill_default(cols.get("fees"), n, 0.0)
        if "updated_at" not in cols:
            cols["updated_at"] = cols["created_at"]

        pks = dict(signal_pks) if signal_pks else {}
        unknown = [sid for sid in signal_ids if sid not in pks]
        if unknown:
            pks.update(self._lookup(session, _signals, "signal_id", unknown, ("namespace", namespace)))
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
        constants = {"venue": venue, **prov.columns()}
        if db is not None:
            return _sqlite_insert_returning(db, "orders", cols, constants, n, "client_order_id")
        rows = fr.rows_from_columns(cols, n, constants)
        return self._insert_returning(_conn(session), _orders, rows, "client_order_id", ("venue", venue))

    def update_orders(
        self, session: Session | Connection, frame: pd.DataFrame, *, venue: str, prov: Provenance,
        names: Mapping[str, str] | None = None,
    ) -> None:
        """Update the columns present in ``frame`` (of ORDER_UPDATE_COLUMNS) for the orders
        (venue, client_order_id), in one executemany. Other columns are left untouched,
        except flow_run_id / task_run_id which record the last writer when ``prov`` has
        them. Raises ValueError if an order does not exist. ``names``: {ledger column:
        frame column}, the only columns updated then (the frame's others are ignored)."""
        op = "update_orders"
        if "client_order_id" not in frame.columns:
            raise ValueError(f"{op}: frame is missing required column(s) ['client_order_id']")
        n = len(frame)
        source = dict(names) if names is not None else {c: c for c in ORDER_UPDATE_COLUMNS}
        unknown = [c for c in source if c not in ORDER_UPDATE_COLUMNS]
        if unknown:
            raise ValueError(f"{op}: not order columns that can be updated: {unknown}")
        present = [c for c in ORDER_UPDATE_COLUMNS if c in source and source[c] in frame.columns]
        if n == 0 or not present:
            return
        db = _driver(session)
        coids = fr.column_values(frame, "client_order_id", "str", op=op)
        cols = {c: fr.column_values(frame, source[c], fr.kind_of(_orders, c), op=op, sqlite=db is not None,
                                    key=c) for c in present}
        not_null = ["client_order_id", *(c for c in present if not _orders.c[c].nullable)]
        self._check_not_null(op, {"client_order_id": coids, **cols}, not_null, "client_order_id")
        if db is not None:
            last = {k: v for k, v in (("flow_run_id", prov.flow_run_id), ("task_run_id", prov.task_run_id))
                    if v is not None}
            sets = [*present, *last]
            key = ("update", tuple(sets))
            sql = _SQL.get(key)
            if sql is None:
                sql = _SQL[key] = (f'UPDATE "orders" SET {", ".join(f"{_q([c])} = ?" for c in sets)} '
                                   f'WHERE "venue" = ? AND "client_order_id" = ?')
            params = zip(*(cols[c] for c in present), *([v] * n for v in last.values()), [venue] * n, coids,
                         strict=True)
            if _execute(db, sql, params, many=True).rowcount == n:
                return
            found = _sqlite_lookup(db, "orders", "client_order_id", coids, ("venue", venue))
            missing = [c for c in _unique(coids) if c not in found]
            if missing:
                raise ValueError(f"{op}: no order(s) {_fmt(missing[:5], len(missing))} at venue {venue!r}")
            return

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
        found = self._lookup(conn, _orders, "client_order_id", coids, ("venue", venue))
        missing = [c for c in _unique(coids) if c not in found]
        if missing:
            raise ValueError(f"{op}: no order(s) {_fmt(missing[:5], len(missing))} at venue {venue!r}")

    def record_fills(
        self, session: Session | Connection, frame: pd.DataFrame, *, venue: str, prov: Provenance,
        order_pks: Mapping[str, int] | None = None, names: Mapping[str, str] | None = None,
    ) -> int:
        """Insert fills of orders at ``venue``; a trade_id already recorded for the venue
        (or repeated in the frame) is skipped. Returns the number of rows inserted. Raises
        ValueError (writing nothing) if an order is not recorded. ``order_pks``:
        {client_order_id: pk} already known (committed) for orders at ``venue``; the others
        are looked up. ``names``: {fill column: frame column} for the columns the frame
        names otherwise (read from there only)."""
        n = len(frame)
        if n == 0:
            return 0
        op = "record_fills"
        required = ("client_order_id", "trade_id", "timestamp", "symbol", "side", "quantity", "price")
        if "client_order_id" not in frame.columns:
            raise ValueError(f"{op}: frame is missing required column(s) ['client_order_id']")
        db = _driver(session)
        coids = fr.column_values(frame, "client_order_id", "str", op=op)
        cols = fr.columns_from_frame(frame, _fills, FILL_COLUMNS, op=op, required=required, sqlite=db is not None,
                                     source=names)
        self._check_not_null(op, {"client_order_id": coids, **cols}, required, "trade_id")
        cols["fee"] = _fill_default(cols.get("fee"), n, 0.0)

        pks = dict(order_pks) if order_pks else {}
        unknown = [c for c in coids if c not in pks]
        if unknown:
            pks.update(self._lookup(session, _orders, "client_order_id", unknown, ("venue", venue)))
        missing = _unique(c for c in coids if c not in pks)
        if missing:
            raise ValueError(
                f"{op}: no order(s) {_fmt(missing[:5], len(missing))} at venue {venue!r}; record the order first"
            )
        cols["order_pk"] = [pks[c] for c in coids]
        constants = {"venue": venue, **prov.columns()}
        if db is not None:
            # a trade already recorded (by anyone, at any time) or repeated in the frame: the
            # unique key decides, the first one stays; the count is what was inserted
            tail = ' ON CONFLICT ("venue", "trade_id") DO NOTHING'
            return _sqlite_insert(db, "fills", cols, constants, n, tail)
        conn = _conn(session)
        rows = fr.rows_from_columns(cols, n, constants)
        existing = self._lookup(conn, _fills, "trade_id", cols["trade_id"], ("venue", venue))
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
        db = _driver(session)
        cols = fr.columns_from_frame(frame, _positions, POSITION_COLUMNS, op=op, required=required,
                                     sqlite=db is not None)
        self._check_not_null(op, cols, required, "symbol")
        if db is not None:
            _sqlite_insert(db, "positions", cols, prov.columns(), n)
            return
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
        db = _driver(session)
        cols = fr.columns_from_frame(frame, _rejections, REJECTION_COLUMNS, op=op, required=required,
                                     sqlite=db is not None)
        key = "signal_id" if "signal_id" in cols else "step"
        self._check_not_null(op, cols, required, key)
        cols["created_at"] = _fill_default(cols.get("created_at"), n, _stored(db, _now(), "datetime"))
        constants = {"namespace": namespace, **prov.columns()}
        if db is not None:
            _sqlite_insert(db, "rejections", cols, constants, n)
            return n
        _conn(session).execute(insert(_rejections), fr.rows_from_columns(cols, n, constants))
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
        db = _driver(session)
        if db is not None:
            self._sqlite_audit(db, rows, now, p)
            return
        out = []
        for i, r in enumerate(rows):
            t, event, entity, entity_id, payload = _audit_fields(i, r)
            out.append({"time": now if t is None else t, "event": event, "entity": entity, "entity_id": entity_id,
                        "payload": payload, **p})
        if out:
            _conn(session).execute(insert(_audit), out)

    @staticmethod
    def _sqlite_audit(db: sqlite3.Connection, rows: Iterable[Mapping[str, Any]], now: datetime,
                      p: dict[str, str | None]) -> None:
        stamp = fr.sqlite_datetime(now)
        dumps = json_dumps
        out = []
        for i, r in enumerate(rows):
            t, event, entity, entity_id, payload = _audit_fields(i, r)
            out.append((stamp if t is None else fr.sqlite_datetime(t), event, entity, entity_id,
                        None if payload is None else dumps(payload)))
        if out:
            names = ("time", "event", "entity", "entity_id", "payload", *p)
            tail = tuple(p.values())
            _execute(db, _insert_sql("audit_log", names), [row + tail for row in out], many=True)

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
        if self._dialect == "sqlite":  # checked per signal: the usual answer (none) at the driver level
            raw = self._engine.raw_connection()
            try:
                if _execute(raw.driver_connection, _ANY_TRIPPED).fetchone() is None:
                    return []
            finally:
                raw.close()
        with self.engine.connect() as conn:
            rows = self._dicts(conn, select(_breakers).where(_breakers.c.state == "tripped").order_by(_breakers.c.id))
        return [r for r in rows if r["until"] is None or r["until"] > now]

    def existing_signal_ids(self, namespace: str, signal_ids: Iterable[str]) -> set[str]:
        """The ids among ``signal_ids`` already recorded in ``namespace`` (re-deliveries)."""
        with self.engine.connect() as conn:
            return set(self._lookup(conn, _signals, "signal_id", signal_ids, ("namespace", namespace)))

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
    def _lookup(session: Session | Connection | SqliteWrite, table: Table, key: str, keys: Iterable[Any],
                scope: tuple[str, Any]) -> dict[Any, int]:
        """{key: id} for the rows of ``table`` with ``scope`` (column, value) whose ``key``
        is in ``keys`` (one SELECT ... IN per 10,000 keys)."""
        db = _driver(session)
        if db is not None:
            return _sqlite_lookup(db, table.name, key, keys, scope)
        conn = _conn(session)
        wanted = _unique(keys)
        out: dict[Any, int] = {}
        col = table.c[key]
        for chunk in _chunks(wanted):
            out.update((k, pk) for k, pk in conn.execute(
                select(col, table.c.id).where(table.c[scope[0]] == scope[1], col.in_(chunk))))
        return out

    def _insert_returning(
        self, conn: Connection, table: Table, rows: list[dict[str, Any]], key: str, scope: Any
    ) -> dict[str, int]:
        """Insert ``rows`` (one executemany) and return {key: id}, off SQLite (which uses
        `_sqlite_insert_returning`): a plain executemany then one SELECT of the id map; with
        psycopg that is ~5x faster than RETURNING, whose multi-row VALUES statements psycopg
        parses in Python."""
        conn.execute(insert(table), rows)
        return self._lookup(conn, table, key, (r[key] for r in rows), scope)
