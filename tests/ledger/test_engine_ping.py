"""PostgreSQL: a pooled ledger connection is pinged before use only after it sat idle
(`tradpal.ledger.engine.PING_IDLE_S`); one the server dropped meanwhile is replaced."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from tradpal.ledger.engine import (
    PING_IDLE_ENV,
    create_ledger_engine,
    ledger_ping_idle_s,
    sqlite_busy_timeout_s,
)


@pytest.fixture
def pg_url(ledger_url: str) -> str:
    """PostgreSQL only (SQLite connections are files, never dropped by a server)."""
    return ledger_url


postgresql_only = pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)


def counting_pings(engine) -> list[float]:
    pings: list[float] = []
    ping = engine.dialect.do_ping

    def counted(dbapi_connection):
        pings.append(time.monotonic())
        return ping(dbapi_connection)

    engine.dialect.do_ping = counted
    return pings


@postgresql_only
def test_a_connection_back_soon_is_used_without_a_ping_and_an_idle_one_is_pinged(pg_url, monkeypatch) -> None:
    monkeypatch.setenv(PING_IDLE_ENV, "0.3")
    engine = create_ledger_engine(pg_url)
    pings = counting_pings(engine)
    try:
        for _ in range(5):  # back within milliseconds: no ping (the first one is just connected)
            with engine.connect() as conn:
                assert conn.execute(text("SELECT 1")).scalar() == 1
        assert pings == []
        time.sleep(0.35)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 2")).scalar() == 2
        assert len(pings) == 1
    finally:
        engine.dispose()


@postgresql_only
def test_a_connection_the_server_dropped_while_idle_is_replaced(pg_url, monkeypatch) -> None:
    monkeypatch.setenv(PING_IDLE_ENV, "0")  # every checkout after a checkin pings
    engine = create_ledger_engine(pg_url)
    admin = create_ledger_engine(pg_url)
    try:
        with engine.connect() as conn:
            first = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        with admin.begin() as conn:  # the server drops the pooled connection (a restart, an idle timeout)
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": first}).scalar() is True
        time.sleep(0.2)
        with engine.connect() as conn:
            second = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        assert second != first
    finally:
        engine.dispose()
        admin.dispose()


@pytest.mark.parametrize("raw", ["soon", "-1", "nan", "inf"])
def test_a_bad_idle_setting_is_refused_with_its_name(raw: str, monkeypatch) -> None:
    monkeypatch.setenv(PING_IDLE_ENV, raw)
    with pytest.raises(ValueError, match=f"{PING_IDLE_ENV}={raw!r}: expected a number of seconds"):
        ledger_ping_idle_s()


def test_the_idle_setting_defaults_and_reads_the_environment(monkeypatch) -> None:
    monkeypatch.delenv(PING_IDLE_ENV, raising=False)
    assert ledger_ping_idle_s() == 1.0
    monkeypatch.setenv(PING_IDLE_ENV, "2.5")
    assert ledger_ping_idle_s() == 2.5
    monkeypatch.setenv("TRADPAL_SQLITE_BUSY_TIMEOUT_S", "-3")
    with pytest.raises(ValueError, match="TRADPAL_SQLITE_BUSY_TIMEOUT_S='-3'"):
        sqlite_busy_timeout_s()
