"""Migrations: idempotent, reversible, and identical to the models."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tradpal.ledger import TABLES, Base, Ledger, Provenance
from tradpal.ledger.migrate import alembic_config, current_revision, head_revision, upgrade

from .helpers import signals_frame


def _diff(ledger: Ledger) -> list:
    with ledger.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(ctx, Base.metadata)


def test_ledger_migrates_to_head(ledger: Ledger) -> None:
    with ledger.engine.connect() as conn:
        assert current_revision(conn) == head_revision()
        names = set(inspect(conn).get_table_names())
    assert set(TABLES) | {"alembic_version"} <= names


def test_migration_is_idempotent(ledger_url: str) -> None:
    with Ledger(ledger_url) as first:
        first.start_run("live", {})
    with Ledger(ledger_url) as second:  # a no-op: nothing recreated, data kept
        with second.engine.begin() as conn:
            assert upgrade(conn) is False
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
        assert len(second.frame("runs")) == 1


def test_models_match_migrations(ledger: Ledger) -> None:
    assert _diff(ledger) == []


def test_compare_detects_drift(ledger: Ledger) -> None:
    """Guard for the test above: a schema that differs from the models is noticed."""
    with ledger.engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_orders_run_id"))
    diff = _diff(ledger)
    assert [d[0] for d in diff] == ["add_index"]
    assert diff[0][1].name == "ix_orders_run_id"


def test_downgrade_then_upgrade(ledger: Ledger) -> None:
    with ledger.engine.begin() as conn:
        command.downgrade(alembic_config(connection=conn), "base")
    with ledger.engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    with ledger.engine.begin() as conn:
        assert upgrade(conn) is True
    assert _diff(ledger) == []


def test_migrate_false_leaves_database_alone(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with Ledger(url, migrate=False) as led, led.engine.connect() as conn:
        assert inspect(conn).get_table_names() == []


def test_sqlite_file_settings(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "ledger.db"
    with Ledger(f"sqlite:///{path}") as led:
        assert path.exists()
        with led.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 1  # NORMAL
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() >= 1000


def test_sqlite_in_memory(tmp_path: Path) -> None:
    with Ledger("sqlite://") as led:
        run_id = led.start_run("analytics", {})
        with led.transaction() as s:
            led.record_signals(s, signals_frame(2), namespace="live", prov=Provenance(run_id))
        assert len(led.frame("signals")) == 2


def test_schema_is_postgresql_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PostgreSQL"):
        Ledger(f"sqlite:///{tmp_path / 'x.db'}", schema="x")


@pytest.mark.postgres
def test_postgresql_schema_parameter() -> None:
    base = os.environ.get("TRADPAL_TEST_DATABASE_URL")
    if not base:
        pytest.skip("TRADPAL_TEST_DATABASE_URL is not set")
    schema = f"test_ledger_schema_{uuid.uuid4().hex[:12]}"
    admin = create_engine(make_url(base), poolclass=NullPool)
    try:
        with Ledger(base, schema=schema) as led:  # creates the schema
            run_id = led.start_run("replay", {})
            with led.transaction() as s:
                led.record_signals(s, signals_frame(2), namespace="live", prov=Provenance(run_id))
        with Ledger(base, schema=schema) as again:  # same schema: no-op migration, data kept
            assert len(again.frame("signals")) == 2
            assert _diff(again) == []
        with admin.connect() as conn:
            tables = set(inspect(conn).get_table_names(schema=schema))
            assert set(TABLES) | {"alembic_version"} <= tables
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()
