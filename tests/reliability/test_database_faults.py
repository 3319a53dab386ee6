"""Database faults: the ledger becomes unavailable in the middle of a live run (the real
ccxt client against the exchange emulator, on a real Prefect API), right after the
exchange accepted the orders and before the ledger recorded them.

* SQLite locked by another connection: a short lock is waited out (busy timeout, then the
  recorder's retries) and the run completes; a lock that outlasts every retry fails the
  run loudly: `LedgerUnavailableError`, the flow run Failed, an alert delivered.
* PostgreSQL (a server the test starts itself, see ``pg_instance.py``) stopped with
  ``-m immediate``: back within the retries, the run completes; gone for good, the run
  fails loudly the same way.

Either way nothing the exchange acknowledged is lost: once the database is back, a
restart's reconciliation records it, and the three invariants hold against the
emulator's own book."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import tempfile
import threading
from pathlib import Path

import pandas as pd
import pytest

from brokers.ccxt import CcxtBroker
from flows.live_execution import live_execution
from tasks.recorder import LedgerUnavailableError
from tests.emulated_venue import API_KEY, SYMBOL, canary, start_emulator, use_emulator
from tests.reliability.invariants import check, read_book
from tests.reliability.pg_instance import PgInstance, find_binaries
from tests.reliability.profile import CHAOS
from tradpal.ledger import Ledger


@pytest.fixture
def venue(monkeypatch, receiver):
    secret = canary()
    handle = start_emulator(secret)
    use_emulator(monkeypatch, handle, secret)
    url, received = receiver
    monkeypatch.setenv("TRADPAL_ALERT_URLS", url)
    monkeypatch.setenv("TRADPAL_ALERT_THROTTLE_S", "0")
    yield handle, secret, received
    handle.stop()


def signals(prefix: str, n: int = 3) -> list[dict]:
    return [{"timestamp": pd.Timestamp.now(tz="UTC").isoformat(), "symbol": SYMBOL, "side": side,
             "quantity": q, "signal_id": f"{prefix}-{i}"}
            for i, (side, q) in enumerate([("buy", 0.2), ("sell", 0.1), ("buy", 0.3)][:n])]


def run(batch: list[dict], db: str) -> dict:
    return asyncio.run(live_execution(batch, quote="BTC", database_url=db))


def after_placement(monkeypatch, action) -> list[str]:
    """Call ``action()`` once, right after the venue accepted the run's last order (the
    ledger has not heard of any yet: placement records its batch in one transaction)."""
    placed: list[str] = []
    original = CcxtBroker.place_order

    async def place_then_fault(self, order):
        result = await original(self, order)
        placed.append(order.client_order_id)
        if len(placed) == 3:
            action()
        return result

    monkeypatch.setattr(CcxtBroker, "place_order", place_then_fault)
    return placed


def flow_run_state(flow_run_id: str) -> str:
    from prefect.client.orchestration import get_client

    async def read() -> str:
        async with get_client() as client:
            return (await client.read_flow_run(flow_run_id)).state.type.value

    return asyncio.run(read())


def assert_nothing_lost(db: str, handle, secret: str, batch: list[dict]) -> dict:
    """The venue's orders are all in the ledger after a restart, and the invariants hold."""
    book = read_book(handle.base_url, API_KEY, secret, [SYMBOL])
    outcomes = check(Ledger(db), book, expect_signals={s["signal_id"] for s in batch})
    assert outcomes["orders"] == len(book.orders) == 3
    return outcomes


def assert_failed_loudly(failed: pytest.ExceptionInfo, received: list[dict], db_url_part: str, db: str) -> None:
    err = failed.value
    chain = [err, err.__cause__, err.__context__]
    unavailable = next((e for e in chain if isinstance(e, LedgerUnavailableError)), None)
    assert unavailable is not None, f"expected LedgerUnavailableError, got {err!r}"
    text = str(unavailable)
    assert "step placement" in text and db_url_part in text and "reconciliation records them" in text
    assert any("TradPal ledger unavailable" in str(r["json"]) for r in received), received


# -- SQLite locked by another connection -------------------------------------------------------


def hold_write_lock(path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN EXCLUSIVE")
    return conn


def test_sqlite_lock_shorter_than_the_retries_is_waited_out(prefect_api, venue, tmp_path, monkeypatch):
    handle, secret, received = venue
    path = tmp_path / "ledger.db"
    db = f"sqlite:///{path}"
    Ledger(db).close()
    monkeypatch.setenv("TRADPAL_SQLITE_BUSY_TIMEOUT_S", "0.2")
    locks: list[sqlite3.Connection] = []

    def lock_for_a_second() -> None:
        locks.append(hold_write_lock(path))
        threading.Timer(1.0, lambda: locks[0].rollback()).start()

    after_placement(monkeypatch, lock_for_a_second)
    batch = signals("sqlite-short")
    summary = run(batch, db)
    assert locks, "the lock was never taken"
    assert summary["n_fills"] == 3
    outcomes = assert_nothing_lost(db, handle, secret, batch)
    assert outcomes["filled"] == 3
    assert not any("ledger unavailable" in str(r["json"]) for r in received)


def test_sqlite_lock_outlasting_the_retries_fails_loudly_and_loses_nothing(prefect_api, venue, tmp_path,
                                                                          monkeypatch):
    handle, secret, received = venue
    path = tmp_path / "ledger.db"
    db = f"sqlite:///{path}"
    Ledger(db).close()
    monkeypatch.setenv("TRADPAL_SQLITE_BUSY_TIMEOUT_S", "0.2")
    locks: list[sqlite3.Connection] = []
    after_placement(monkeypatch, lambda: locks.append(hold_write_lock(path)))
    batch = signals("sqlite-long")
    with pytest.raises(Exception) as failed:
        run(batch, db)
    assert_failed_loudly(failed, received, "ledger.db", db)
    assert len(handle.engine.orders) == 3
    locks[0].rollback()  # the other connection lets go
    locks[0].close()
    ledger = Ledger(db)
    assert set(ledger.frame("orders")["status"]) == {"CREATED"}  # the venue has them; the ledger did not hear
    runs = ledger.frame("runs")
    assert flow_run_state(runs["flow_run_id"].iloc[-1]) == "FAILED"

    monkeypatch.undo()  # the restart: no more faults (the venue's settings stay)
    use_emulator(monkeypatch, handle, secret)
    run(batch, db)  # the same signals re-delivered: refused as such; reconciliation records the orders
    outcomes = assert_nothing_lost(db, handle, secret, batch)
    assert outcomes["filled"] == 3 and outcomes["fills"] == 3


# -- PostgreSQL stopped mid-run ---------------------------------------------------------------

PG_BIN = find_binaries()
needs_pg = pytest.mark.skipif(PG_BIN is None, reason="no PostgreSQL server binaries (/usr/lib/postgresql/*/bin) "
                                                     "or no 'postgres' user to run them as")


@pytest.fixture
def pg():
    # not under pytest's tmp_path: as root the server runs as 'postgres', who cannot enter /tmp/pytest-of-root
    root = Path(tempfile.mkdtemp(prefix="tradpal-pg-"))
    instance = PgInstance(PG_BIN, root).init()
    instance.start()
    yield instance
    instance.stop()
    shutil.rmtree(root, ignore_errors=True)


@needs_pg
@pytest.mark.skipif(not CHAOS, reason="make chaos only (the SQLite lock proves the retries in make test)")
def test_postgres_back_within_the_retries_the_run_completes(prefect_api, venue, pg, monkeypatch):
    handle, secret, received = venue
    Ledger(pg.url).close()

    def bounce() -> None:
        pg.stop()
        threading.Thread(target=pg.start, daemon=True).start()  # back ~1 s later

    after_placement(monkeypatch, bounce)
    batch = signals("pg-bounce")
    summary = run(batch, pg.url)
    assert summary["n_fills"] == 3
    assert_nothing_lost(pg.url, handle, secret, batch)


@needs_pg
def test_postgres_gone_fails_loudly_and_a_restart_records_what_the_venue_took(prefect_api, venue, pg,
                                                                              monkeypatch):
    handle, secret, received = venue
    Ledger(pg.url).close()
    after_placement(monkeypatch, pg.stop)
    batch = signals("pg-down")
    with pytest.raises(Exception) as failed:
        run(batch, pg.url)
    assert_failed_loudly(failed, received, f"127.0.0.1:{pg.port}", pg.url)
    assert len(handle.engine.orders) == 3

    pg.start()
    ledger = Ledger(pg.url)
    assert set(ledger.frame("orders")["status"]) == {"CREATED"}
    assert flow_run_state(ledger.frame("runs")["flow_run_id"].iloc[-1]) == "FAILED"
    monkeypatch.undo()
    use_emulator(monkeypatch, handle, secret)
    run(batch, pg.url)
    outcomes = assert_nothing_lost(pg.url, handle, secret, batch)
    assert outcomes["filled"] == 3 and outcomes["fills"] == 3
