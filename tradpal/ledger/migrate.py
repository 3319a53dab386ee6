"""Programmatic alembic configuration (no alembic.ini) and ``upgrade``.

Command line (for operators and for writing new revisions)::

    python -m tradpal.ledger upgrade --url sqlite:///.tradpal/ledger.db
    python -m tradpal.ledger current --url ...
    python -m tradpal.ledger revision --autogenerate -m "add column" --url ...
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

__all__ = ["MIGRATIONS_DIR", "alembic_config", "current_revision", "head_revision", "upgrade"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(
    *, connection: Connection | None = None, url: str | None = None, schema: str | None = None
) -> Config:
    """An alembic Config for the ledger migrations. Pass an open ``connection`` (used as
    is, inside its transaction) or a ``url`` (env.py then builds a ledger engine)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("version_locations", str(MIGRATIONS_DIR / "versions"))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    if url is not None:
        cfg.attributes["url"] = url  # attributes, not main options: no configparser '%' trouble
    if schema is not None:
        cfg.attributes["schema"] = schema
    return cfg


@lru_cache(maxsize=1)
def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: Connection, revision: str = "head") -> bool:
    """Upgrade the database behind ``connection`` (in its current transaction). Returns
    False when it is already at head (nothing run)."""
    if revision == "head" and current_revision(connection) == head_revision():
        return False
    command.upgrade(alembic_config(connection=connection), revision)
    return True
