"""circuit-breaker state

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "breakers",
        sa.Column("id", PK, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("value", sa.Numeric(precision=38, scale=18, asdecimal=False), nullable=True),
        sa.Column("threshold", sa.Numeric(precision=38, scale=18, asdecimal=False), nullable=True),
        sa.Column("tripped_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reset_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reset_reason", sa.Text(), nullable=True),
        sa.Column("run_id", sa.String(36), nullable=True),
        sa.Column("flow_run_id", sa.String(128), nullable=True),
        sa.Column("task_run_id", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_breakers"),
        sa.UniqueConstraint("name", "scope", name="uq_breakers_name_scope"),
    )


def downgrade() -> None:
    op.drop_table("breakers")
