"""Ledger tables (SQLAlchemy 2.0 typed declarative).

Money and quantities are ``Numeric(38, 18)`` read back as Python floats; on PostgreSQL
they are bound as ``Decimal(repr(value))`` so the stored numeric is the float's shortest
repr (a plain float parameter would be cast float8 -> numeric with only 15 significant
digits). Times are ``timestamp with time zone``, always written and read as UTC-aware
datetimes (SQLite has no time zone support, so naive values are stored as UTC).

The migration ``migrations/versions/0001_initial.py`` must match these definitions
exactly; ``tests/ledger/test_migrations.py`` enforces it with alembic's compare_metadata.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "NAMING_CONVENTION",
    "Amount",
    "AuditLog",
    "Base",
    "Breaker",
    "Fill",
    "Order",
    "Position",
    "Rejection",
    "Run",
    "Signal",
    "UTCDateTime",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Amount(TypeDecorator[float]):
    """``Numeric(38, 18, asdecimal=False)``: floats in Python, exact numeric in the database."""

    impl = Numeric(38, 18, asdecimal=False)
    cache_ok = True

    # bind_processor is overridden (rather than process_bind_param) so that SQLite pays no
    # per-value Python call beyond the dialect's own; bulk writes bind ~100k values.
    def bind_processor(self, dialect: Dialect) -> Any:
        if dialect.name != "postgresql":
            return self.impl_instance.dialect_impl(dialect).bind_processor(dialect)

        def process(value: Any) -> Any:
            if value is None or isinstance(value, Decimal):
                return value
            # the float's shortest repr, exactly (a float8 parameter keeps 15 digits only)
            return Decimal(repr(float(value)))

        return process

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        impl_process = self.impl_instance.dialect_impl(dialect).result_processor(dialect, coltype)
        if dialect.name == "postgresql":
            return impl_process  # numeric -> float

        # SQLite's NUMERIC affinity stores integral floats (2.0) as INTEGER: give floats back
        def process(value: Any) -> Any:
            if impl_process is not None:
                value = impl_process(value)
            return None if value is None else float(value)

        return process


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that always stores and returns UTC-aware datetimes.

    Naive datetimes are taken to be UTC. SQLite stores the UTC wall time (it has no time
    zones); PostgreSQL gets an aware UTC value for its ``timestamptz``."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Any:
        impl_process = self.impl_instance.dialect_impl(dialect).bind_processor(dialect)
        naive_ok = dialect.name == "sqlite"  # stored as text without offset

        def process(value: Any) -> Any:
            if value is None:
                return None
            if not isinstance(value, datetime):
                raise TypeError(f"expected a datetime, got {type(value).__name__}: {value!r}")
            if value.tzinfo is None:
                if not naive_ok:
                    value = value.replace(tzinfo=UTC)
            else:
                value = value.astimezone(UTC)
                if naive_ok:
                    value = value.replace(tzinfo=None)
            return impl_process(value) if impl_process is not None else value

        return process

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _json() -> JSON:
    # none_as_null: Python None is SQL NULL, not the JSON literal 'null'
    return JSON(none_as_null=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        float: Amount(),
        datetime: UTCDateTime(),
        dict[str, Any]: _json(),
    }


# BIGINT surrogate keys on PostgreSQL (the audit log grows forever); on SQLite an INTEGER
# PRIMARY KEY is the rowid alias, which BIGINT would not be.
_PK = BigInteger().with_variant(Integer(), "sqlite")
_ID = 128  # length of free-form identifiers (signal ids, order ids, trade ids, prefect ids)


class Run(Base):
    """One pipeline run (a replay, a live session, an analytics job)."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # replay / live / analytics
    status: Mapped[str] = mapped_column(String(16))  # running / completed / failed
    flow_run_id: Mapped[str | None] = mapped_column(String(_ID))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    params: Mapped[dict[str, Any] | None]
    summary: Mapped[dict[str, Any] | None]


class Signal(Base):
    __tablename__ = "signals"
    __table_args__ = (
        UniqueConstraint("namespace", "signal_id"),
        Index(None, "run_id"),
    )

    id: Mapped[int] = mapped_column(_PK, primary_key=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"))
    namespace: Mapped[str] = mapped_column(String(128))  # "live" or "replay:<run_id>"
    signal_id: Mapped[str] = mapped_column(String(_ID))
    timestamp: Mapped[datetime]
    symbol: Mapped[str] = mapped_column(String(64))
    side: Mapped[str] = mapped_column(String(8))
    quantity: Mapped[float | None]
    strategy: Mapped[str | None] = mapped_column(String(64))
    order_type: Mapped[str] = mapped_column(String(16))
    limit_price: Mapped[float | None]
    stop_price: Mapped[float | None]
    reference_price: Mapped[float | None]
    received_at: Mapped[datetime]
    flow_run_id: Mapped[str | None] = mapped_column(String(_ID))
    task_run_id: Mapped[str | None] = mapped_column(String(_ID))


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("venue", "client_order_id"),
        Index(None, "run_id"),
        Index(None, "signal_pk"),
    )

    id: Mapped[int] = mapped_column(_PK, primary_key=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"))
    signal_pk: Mapped[int] = mapped_column(_PK, ForeignKey("signals.id"))
    venue: Mapped[str] = mapped_column(String(64))
    client_order_id: Mapped[str] = mapped_column(String(64))
    broker_order_id: Mapped[str | None] = mapped_column(String(128))
    symbol: Mapped[str] = mapped_column(String(64))
    side: Mapped[str] = mapped_column(String(8))
    order_type: Mapped[str] = mapped_column(String(16))
    quantity: Mapped[float]
    price: Mapped[float | None]
    stop_price: Mapped[float | None]
    time_in_force: Mapped[str] = mapped_column(String(8), default="GTC")
    status: Mapped[str] = mapped_column(String(32), default="CREATED")
    filled_quantity: Mapped[float] = mapped_column(default=0.0)
    avg_price: Mapped[float | None]
    fees: Mapped[float] = mapped_column(default=0.0)
    fee_currency: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    placed_at: Mapped[datetime | None]
    updated_at: Mapped[datetime | None]
    flow_run_id: Mapped[str | None] = mapped_column(String(_ID))
    task_run_id: Mapped[str | None] = mapped_column(String(_ID))


class Fill(Base):
    __tablename__ = "fills"
    __table_args__ = (
        UniqueConstraint("venue", "trade_id"),
        Index(None, "run_id"),
        Index(None, "order_pk"),
    )

    id: Mapped[int] = mapped_column(_PK, primary_key=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"))
    order_pk: Mapped[int] = mapped_column(_PK, ForeignKey("orders.id"))
    venue: Mapped[str] = mapped_column(String(64))
    trade_id: Mapped[str] = mapped_column(String(128))
    timestamp: Mapped[datetime]
    symbol: Mapped[str] = mapped_column(String(64))
    side: Mapped[str] = mapped_column(String(8))
    quantity: Mapped[float]
    price: Mapped[float]
    fee: Mapped[float] = mapped_column(default=0.0)
    fee_currency: Mapped[str | None] = mapped_column(String(16))
    is_maker: Mapped[bool | None] = mapped_column(Boolean)
    reference_price: Mapped[float | None]
    flow_run_id: Mapped[str | None] = mapped_column(String(_ID))
    task_run_id: Mapped[str | None] = mapped_column(String(_ID))


class Position(Base):
    """Append-only position snapshots."""

    __tablename__ = "positions"
    __table_args__ = (Index(None, "run_id"),)

    id: Mapped[int] = mapped_column(_PK, primary_key=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"))
    symbol: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[float]
    average_price: Mapped[float | None]
    market_price: Mapped[float | None]
    realized_pnl: Mapped[float | None]
    unrealized_pnl: Mapped[float | None]
    as_of: Mapped[datetime]
    flow_run_id: Mapped[str | None] = mapped_column(String(_ID))
    task_run_id: Mapped[str | None] = mapped_column(String(_ID))


class Rejection(Base):
    __tablename__ = "rejections"
    __table_args__ = (
        Index(None, "run_id"),
        Index(None, "namespace", "signal_id"),
    )

    id: Mapped[int] = mapped_column(_PK, primary_key=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"))
    namespace: Mapped[str] = mapped_column(String(128))
    signal_id: Mapped[str | None] = mapped_column(String(_ID))
    client_order_id: Mapped[str | None] = mapped_column(String(64))
    step: Mapped[str] = mapped_column(String(32))  # intake, sizing, order_creation, pre_checks, ...
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[Any] = mapped_column(_json(), nullable=True)
    created_at: Mapped[datetime]
    flow_run_id: Mapped[str | None] = mapped_column(String(_ID))
    task_run_id: Mapped[str | None] = mapped_column(String(_ID))


class AuditLog(Base):
    """Append-only: the application only ever inserts into this table."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index(None, "run_id"),
        Index(None, "entity", "entity_id"),
    )

    id: Mapped[int] = mapped_column(_PK, primary_key=True)
    time: Mapped[datetime]
    event: Mapped[str] = mapped_column(String(64))
    entity: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str | None] = mapped_column(String(128))
    payload: Mapped[Any] = mapped_column(_json(), nullable=True)
    run_id: Mapped[str | None] = mapped_column(String(36))  # no FK: the log accepts anything
    flow_run_id: Mapped[str | None] = mapped_column(String(_ID))
    task_run_id: Mapped[str | None] = mapped_column(String(_ID))


class Breaker(Base):
    """Circuit-breaker state, one row per (name, scope): survives restarts. Every trip and
    reset is also written to the audit log with its reason."""

    __tablename__ = "breakers"
    __table_args__ = (UniqueConstraint("name", "scope"),)

    id: Mapped[int] = mapped_column(_PK, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))  # volatility_halt, loss_limit, connectivity, ...
    scope: Mapped[str] = mapped_column(String(128))  # a symbol, a broker, or "portfolio"
    state: Mapped[str] = mapped_column(String(16))  # tripped | reset
    reason: Mapped[str] = mapped_column(Text)
    value: Mapped[float | None] = mapped_column(Amount())
    threshold: Mapped[float | None] = mapped_column(Amount())
    tripped_at: Mapped[datetime]
    until: Mapped[datetime | None]  # cooldown end; None: until reset by a person
    reset_at: Mapped[datetime | None]
    reset_reason: Mapped[str | None] = mapped_column(Text)
    run_id: Mapped[str | None] = mapped_column(String(36))
    flow_run_id: Mapped[str | None] = mapped_column(String(_ID))
    task_run_id: Mapped[str | None] = mapped_column(String(_ID))
