"""Shared fixtures."""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

# -- ledger ----------------------------------------------------------------------------

LEDGER_TEST_DATABASE_ENV = "TRADPAL_TEST_DATABASE_URL"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh, empty ledger database, once per backend.

    sqlite: a file under tmp_path (in a directory that does not exist yet).
    postgresql: $TRADPAL_TEST_DATABASE_URL (skipped when unset), with every connection's
    search_path set (libpq ``options``) to a new schema of its own, dropped afterwards,
    so that tests never share state.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger' / 'ledger.db'}"
        return

    base = os.environ.get(LEDGER_TEST_DATABASE_ENV)
    if not base:
        pytest.skip(
            f"{LEDGER_TEST_DATABASE_ENV} is not set; set it to a PostgreSQL URL "
            "(e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test) to run the PostgreSQL variant"
        )
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.pool import NullPool

    schema = f"test_ledger_{uuid.uuid4().hex[:16]}"
    url = make_url(base)
    options = " ".join(filter(None, [url.query.get("options"), f"-csearch_path={schema}"]))
    admin = create_engine(url, poolclass=NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield url.update_query_dict({"options": options}).render_as_string(hide_password=False)
    finally:
        try:
            with admin.begin() as conn:
                conn.exec_driver_sql("SET LOCAL lock_timeout = '10s'")
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        except SQLAlchemyError as exc:  # a connection left open by a failed test: don't hide its error
            warnings.warn(f"could not drop test schema {schema}: {exc}", stacklevel=1)
        admin.dispose()
