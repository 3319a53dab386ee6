"""Alembic environment for the ledger; no alembic.ini needed (see tradpal.ledger.migrate).

The caller normally hands over an open connection in ``config.attributes["connection"]``
(``Ledger`` does this, inside one transaction). Otherwise the URL comes from
``config.attributes["url"]``, the ``sqlalchemy.url`` main option or ``TRADPAL_LEDGER_URL``.
"""

from __future__ import annotations

import os

from alembic import context
from alembic.autogenerate.api import AutogenContext

from tradpal.ledger.models import Amount, Base, UTCDateTime

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    url = url or os.environ.get("TRADPAL_LEDGER_URL")
    if not url:
        raise RuntimeError("no database URL: pass one to tradpal.ledger.migrate or set TRADPAL_LEDGER_URL")
    return str(url)


def _render_item(type_: str, obj: object, autogen_context: AutogenContext) -> str | bool:
    """Render the ledger's TypeDecorators as their plain SQLAlchemy types in new revisions."""
    if type_ == "type" and isinstance(obj, Amount):
        return "sa.Numeric(precision=38, scale=18, asdecimal=False)"
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        render_item=_render_item,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode is harmless elsewhere
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return

    from tradpal.ledger.engine import create_ledger_engine

    engine = create_ledger_engine(_url(), schema=config.attributes.get("schema"))
    try:
        with engine.begin() as connection:
            _configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
