"""initial ledger schema: runs, signals, orders, fills, positions, rejections, audit_log

Revision ID: 0001
Revises:
Create Date: 2025-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the model types (a migration must not change when the models do).
PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def AMOUNT() -> sa.Numeric:
    return sa.Numeric(precision=38, scale=18, asdecimal=False)


def TS() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _id(name: str, length: int = 128, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.String(length), nullable=nullable)


def _provenance() -> list[sa.Column]:
    return [_id("flow_run_id"), _id("task_run_id")]


def _run_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=f"fk_{table}_run_id_runs")


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _id("flow_run_id"),
        sa.Column("started_at", TS(), nullable=False),
        sa.Column("finished_at", TS(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )

    op.create_table(
        "signals",
        sa.Column("id", PK, nullable=False),
        sa.Column("run_id", sa.String(36), nullable=True),
        sa.Column("namespace", sa.String(128), nullable=False),
        _id("signal_id", nullable=False),
        sa.Column("timestamp", TS(), nullable=False),
        sa.Column("symbol", sa.String(64), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("quantity", AMOUNT(), nullable=True),
        sa.Column("strategy", sa.String(64), nullable=True),
        sa.Column("order_type", sa.String(16), nullable=False),
        sa.Column("limit_price", AMOUNT(), nullable=True),
        sa.Column("stop_price", AMOUNT(), nullable=True),
        sa.Column("reference_price", AMOUNT(), nullable=True),
        sa.Column("received_at", TS(), nullable=False),
        *_provenance(),
        sa.PrimaryKeyConstraint("id", name="pk_signals"),
        _run_fk("signals"),
        sa.UniqueConstraint("namespace", "signal_id", name="uq_signals_namespace_signal_id"),
    )
    op.create_index("ix_signals_run_id", "signals", ["run_id"])

    op.create_table(
        "orders",
        sa.Column("id", PK, nullable=False),
        sa.Column("run_id", sa.String(36), nullable=True),
        sa.Column("signal_pk", PK, nullable=False),
        sa.Column("venue", sa.String(64), nullable=False),
        sa.Column("client_order_id", sa.String(64), nullable=False),
        sa.Column("broker_order_id", sa.String(128), nullable=True),
        sa.Column("symbol", sa.String(64), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("order_type", sa.String(16), nullable=False),
        sa.Column("quantity", AMOUNT(), nullable=False),
        sa.Column("price", AMOUNT(), nullable=True),
        sa.Column("stop_price", AMOUNT(), nullable=True),
        sa.Column("time_in_force", sa.String(8), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("filled_quantity", AMOUNT(), nullable=False),
        sa.Column("avg_price", AMOUNT(), nullable=True),
        sa.Column("fees", AMOUNT(), nullable=False),
        sa.Column("fee_currency", sa.String(16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", TS(), nullable=False),
        sa.Column("placed_at", TS(), nullable=True),
        sa.Column("updated_at", TS(), nullable=True),
        *_provenance(),
        sa.PrimaryKeyConstraint("id", name="pk_orders"),
        _run_fk("orders"),
        sa.ForeignKeyConstraint(["signal_pk"], ["signals.id"], name="fk_orders_signal_pk_signals"),
        sa.UniqueConstraint("venue", "client_order_id", name="uq_orders_venue_client_order_id"),
    )
    op.create_index("ix_orders_run_id", "orders", ["run_id"])
    op.create_index("ix_orders_signal_pk", "orders", ["signal_pk"])

    op.create_table(
        "fills",
        sa.Column("id", PK, nullable=False),
        sa.Column("run_id", sa.String(36), nullable=True),
        sa.Column("order_pk", PK, nullable=False),
        sa.Column("venue", sa.String(64), nullable=False),
        _id("trade_id", nullable=False),
        sa.Column("timestamp", TS(), nullable=False),
        sa.Column("symbol", sa.String(64), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("quantity", AMOUNT(), nullable=False),
        sa.Column("price", AMOUNT(), nullable=False),
        sa.Column("fee", AMOUNT(), nullable=False),
        sa.Column("fee_currency", sa.String(16), nullable=True),
        sa.Column("is_maker", sa.Boolean(), nullable=True),
        sa.Column("reference_price", AMOUNT(), nullable=True),
        *_provenance(),
        sa.PrimaryKeyConstraint("id", name="pk_fills"),
        _run_fk("fills"),
        sa.ForeignKeyConstraint(["order_pk"], ["orders.id"], name="fk_fills_order_pk_orders"),
        sa.UniqueConstraint("venue", "trade_id", name="uq_fills_venue_trade_id"),
    )
    op.create_index("ix_fills_run_id", "fills", ["run_id"])
    op.create_index("ix_fills_order_pk", "fills", ["order_pk"])

    op.create_table(
        "positions",
        sa.Column("id", PK, nullable=False),
        sa.Column("run_id", sa.String(36), nullable=True),
        sa.Column("symbol", sa.String(64), nullable=False),
        sa.Column("quantity", AMOUNT(), nullable=False),
        sa.Column("average_price", AMOUNT(), nullable=True),
        sa.Column("market_price", AMOUNT(), nullable=True),
        sa.Column("realized_pnl", AMOUNT(), nullable=True),
        sa.Column("unrealized_pnl", AMOUNT(), nullable=True),
        sa.Column("as_of", TS(), nullable=False),
        *_provenance(),
        sa.PrimaryKeyConstraint("id", name="pk_positions"),
        _run_fk("positions"),
    )
    op.create_index("ix_positions_run_id", "positions", ["run_id"])

    op.create_table(
        "rejections",
        sa.Column("id", PK, nullable=False),
        sa.Column("run_id", sa.String(36), nullable=True),
        sa.Column("namespace", sa.String(128), nullable=False),
        _id("signal_id"),
        sa.Column("client_order_id", sa.String(64), nullable=True),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("created_at", TS(), nullable=False),
        *_provenance(),
        sa.PrimaryKeyConstraint("id", name="pk_rejections"),
        _run_fk("rejections"),
    )
    op.create_index("ix_rejections_run_id", "rejections", ["run_id"])
    op.create_index("ix_rejections_namespace_signal_id", "rejections", ["namespace", "signal_id"])

    op.create_table(
        "audit_log",
        sa.Column("id", PK, nullable=False),
        sa.Column("time", TS(), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("entity", sa.String(64), nullable=False),
        sa.Column("entity_id", sa.String(128), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("run_id", sa.String(36), nullable=True),
        *_provenance(),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_run_id", "audit_log", ["run_id"])
    op.create_index("ix_audit_log_entity_entity_id", "audit_log", ["entity", "entity_id"])


def downgrade() -> None:
    for table in ("audit_log", "rejections", "positions", "fills", "orders", "signals", "runs"):
        op.drop_table(table)
