"""Engine construction: SQLite pragmas and transaction handling, PostgreSQL schema, JSON."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time as _time
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
import pandas as pd
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import StaticPool

__all__ = ["BEGIN_IMMEDIATE", "SQLITE_BUSY_TIMEOUT_S", "create_ledger_engine", "json_dumps"]

SQLITE_BUSY_TIMEOUT_S = 30.0
#: environment override of the busy timeout, in seconds (how long a SQLite write waits for
#: another connection's lock before "database is locked")
SQLITE_BUSY_TIMEOUT_ENV = "TRADPAL_SQLITE_BUSY_TIMEOUT_S"
#: execution option: on SQLite, start the transaction with BEGIN IMMEDIATE (take the write
#: lock up front, so two writers queue on the busy timeout instead of failing to upgrade a
#: read lock with SQLITE_BUSY). Used by ``Ledger.transaction()``; ignored elsewhere.
BEGIN_IMMEDIATE = "tradpal_sqlite_begin_immediate"
#: PostgreSQL: a pooled connection idle at least this long (seconds) is pinged before use, and
#: replaced if the server dropped it (a restart, an idle timeout). One back sooner is used as it
#: is: under load a connection returns within milliseconds, and a ping per checkout was a round
#: trip per ledger write. A connection that died meanwhile fails its statement, which the
#: ledger's writes retry (`tasks.recorder.write_with_retries`) on a fresh one. PgBouncer's
#: ``server_check_delay`` makes the same trade (default 30 s).
PING_IDLE_S = 1.0
PING_IDLE_ENV = "TRADPAL_LEDGER_PING_IDLE_S"


def _json_default(o: Any) -> Any:
    if o is pd.NaT:
        return None
    if isinstance(o, Enum):
        return o.value
    if isinstance(o, (datetime, date, time)):
        return o.isoformat()
    if isinstance(o, (timedelta, pd.Timedelta)):
        return o.total_seconds()
    if isinstance(o, Decimal):
        return float(o)
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, frozenset)):
        return sorted(o, key=repr)
    if isinstance(o, (UUID, Path)):
        return str(o)
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def _sanitize(o: Any) -> Any:
    """NaN/inf (not valid JSON; PostgreSQL refuses them) become null, recursively."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k) if not isinstance(k, str) else k: _sanitize(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_sanitize(v) for v in o]
    if isinstance(o, (np.ndarray, set, frozenset)) or (
        dataclasses.is_dataclass(o) and not isinstance(o, type)
    ):
        return _sanitize(_json_default(o))
    if isinstance(o, np.generic):
        return _sanitize(o.item())
    return o


def json_dumps(obj: Any) -> str:
    """JSON for payload columns: accepts datetimes, enums, numpy scalars, Decimals,
    dataclasses; NaN/inf become null."""
    try:
        return _ENCODER.encode(obj)
    except ValueError:
        return _ENCODER.encode(_sanitize(obj))


# json.dumps with these arguments, built once (json.dumps builds an encoder per call)
_ENCODER = json.JSONEncoder(default=_json_default, allow_nan=False, separators=(",", ":"))


def _is_memory_sqlite(url: URL) -> bool:
    db = url.database or ""
    return db in ("", ":memory:") or url.query.get("mode") == "memory" or db.startswith("file::memory:")


def _seconds_from_env(name: str, default: float) -> float:
    """Seconds >= 0 from the environment variable ``name`` (unset or empty: ``default``);
    anything else is an `InputError` naming the variable (the CLI's one line, exit 2)."""
    from tradpal.errors import InputError

    raw = os.environ.get(name)
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise InputError(f"{name}={raw!r}: expected a number of seconds") from None
    if not (value >= 0 and math.isfinite(value)):
        raise InputError(f"{name}={raw!r}: expected a number of seconds >= 0")
    return value


def sqlite_busy_timeout_s() -> float:
    """The SQLite busy timeout: ``TRADPAL_SQLITE_BUSY_TIMEOUT_S``, default 30 s."""
    return _seconds_from_env(SQLITE_BUSY_TIMEOUT_ENV, SQLITE_BUSY_TIMEOUT_S)


def _install_sqlite_events(engine: Engine, *, file_db: bool, busy_timeout_s: float) -> None:
    busy_ms = int(busy_timeout_s * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite (which only BEGINs before DML and
        # runs DDL outside any transaction); we emit BEGIN ourselves in the "begin" event.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            if file_db:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get(BEGIN_IMMEDIATE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _install_search_path(engine: Engine, schema: str) -> None:
    quoted = engine.dialect.identifier_preparer.quote_identifier(schema)

    @event.listens_for(engine, "connect", insert=True)
    def _set_search_path(dbapi_connection: Any, _record: Any) -> None:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"SET SESSION search_path TO {quoted}")
        finally:
            cursor.close()
            dbapi_connection.autocommit = autocommit


def ledger_ping_idle_s() -> float:
    """`PING_IDLE_S`, or ``TRADPAL_LEDGER_PING_IDLE_S`` (seconds >= 0; 0 pings every checkout)."""
    return _seconds_from_env(PING_IDLE_ENV, PING_IDLE_S)


def _install_ping_when_idle(engine: Engine, idle_s: float) -> None:
    """Ping a pooled connection before use when it sat idle ``idle_s`` or longer (see
    `PING_IDLE_S`); a dead one is replaced (``DisconnectionError``: the pool reconnects)."""
    key = "tradpal_idle_since"

    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[key] = _time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(key)
        if since is None or _time.monotonic() - since < idle_s:  # just connected, or back soon
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            if engine.dialect.is_disconnect(exc, dbapi_connection, None) or isinstance(
                    exc, engine.dialect.loaded_dbapi.OperationalError):
                raise DisconnectionError(f"ledger connection dropped while idle: {exc}") from exc
            raise


def create_ledger_engine(url: str | URL, *, schema: str | None = None, **kwargs: Any) -> Engine:
    """An Engine set up for the ledger.

    SQLite: parent directories of the file are created; every connection gets
    ``foreign_keys=ON`` and a busy timeout, file databases ``journal_mode=WAL`` and
    ``synchronous=NORMAL``; in-memory databases share one connection (StaticPool).
    PostgreSQL: with ``schema``, every connection's ``search_path`` is that schema only
    (the schema itself is created by ``Ledger`` before migrating); a pooled connection is
    pinged before use only after ``PING_IDLE_S`` idle (unless ``pool_pre_ping`` is given).
    """
    u = make_url(url)
    backend = u.get_backend_name()
    if schema is not None:
        if backend != "postgresql":
            raise ValueError(f"schema= is only supported on PostgreSQL, not {backend}")
        if not schema or len(schema) > 63:
            raise ValueError(f"invalid schema name {schema!r}")
    kwargs.setdefault("json_serializer", json_dumps)

    if backend == "sqlite":
        memory = _is_memory_sqlite(u)
        db = u.database or ""
        if not memory and not db.startswith("file:"):
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        connect_args = dict(kwargs.pop("connect_args", {}))
        busy = sqlite_busy_timeout_s()
        connect_args.setdefault("timeout", busy)
        if memory:
            connect_args.setdefault("check_same_thread", False)
            kwargs.setdefault("poolclass", StaticPool)
        engine = create_engine(u, connect_args=connect_args, **kwargs)
        _install_sqlite_events(engine, file_db=not memory, busy_timeout_s=busy)
        return engine

    ping_when_idle = backend == "postgresql" and "pool_pre_ping" not in kwargs
    engine = create_engine(u, **kwargs)
    if ping_when_idle:
        _install_ping_when_idle(engine, ledger_ping_idle_s())
    if schema is not None:
        _install_search_path(engine, schema)
    return engine
