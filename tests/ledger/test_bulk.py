"""Bulk behaviour: a fixed number of statements per call, replay-sized volumes, concurrency,
and never showing a password."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from tradpal.ledger import Ledger, Provenance
from tradpal.ledger import ledger as ledger_module

from .helpers import fills_frame, orders_frame, signals_frame

NS = "replay:bulk"
VENUE = "paper"


@contextmanager
def count_statements(ledger: Ledger) -> Iterator[list[str]]:
    """Statements sent through Connection.execute, and those the SQLite writers send to the
    driver themselves (`tradpal.ledger.ledger._execute`); a batched executemany counts once."""
    seen: list[str] = []

    def before_execute(conn: Any, clauseelement: Any, *args: Any) -> None:
        if not isinstance(clauseelement, str):  # skip BEGIN / PRAGMA issued by the engine
            seen.append(type(clauseelement).__name__)

    original = ledger_module._execute

    def driver_execute(db: Any, sql: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(sql.split(" ", 1)[0])
        return original(db, sql, *args, **kwargs)

    event.listen(ledger.engine, "before_execute", before_execute)
    ledger_module._execute = driver_execute
    try:
        yield seen
    finally:
        ledger_module._execute = original
        event.remove(ledger.engine, "before_execute", before_execute)


def _write_all(ledger: Ledger, prov: Provenance, n: int, counts: dict[str, int] | None = None) -> None:
    signals = signals_frame(n)
    orders = orders_frame(signals)
    fills = fills_frame(orders)
    update = pd.DataFrame(
        {"client_order_id": orders.client_order_id, "status": "NEW", "broker_order_id": "b"}
    )
    rejections = pd.DataFrame({"signal_id": signals.signal_id, "step": "sizing", "reason": "x"})
    positions = pd.DataFrame({"symbol": signals.symbol, "quantity": 1.0, "as_of": signals.timestamp})
    audit = [{"event": "e", "entity": "order", "entity_id": c} for c in orders.client_order_id]
    calls: dict[str, Callable[[Any], Any]] = {
        "record_signals": lambda s: ledger.record_signals(s, signals, namespace=NS, prov=prov),
        "record_orders": lambda s: ledger.record_orders(s, orders, namespace=NS, venue=VENUE, prov=prov),
        "update_orders": lambda s: ledger.update_orders(s, update, venue=VENUE, prov=prov),
        "record_fills": lambda s: ledger.record_fills(s, fills, venue=VENUE, prov=prov),
        "record_positions": lambda s: ledger.record_positions(s, positions, prov=prov),
        "record_rejections": lambda s: ledger.record_rejections(s, rejections, namespace=NS, prov=prov),
        "audit_many": lambda s: ledger.audit_many(s, audit, prov=prov),
    }
    with ledger.transaction() as s:
        for name, call in calls.items():
            with count_statements(ledger) as seen:
                call(s)
            if counts is not None:
                counts[name] = len(seen)


def test_statements_per_call_do_not_grow_with_rows(ledger: Ledger, prov: Provenance) -> None:
    small: dict[str, int] = {}
    _write_all(ledger, prov, 3, small)
    big: dict[str, int] = {}
    other = Provenance(run_id=ledger.start_run("replay", {}))
    with ledger.engine.begin() as conn:  # empty the tables so the same ids can be written again
        for t in ("positions", "rejections", "fills", "orders", "signals"):  # audit_log is append-only
            conn.exec_driver_sql(f"DELETE FROM {t}")
    _write_all(ledger, other, 600, big)
    assert big == small
    # one INSERT (plus the id SELECT where the dialect does not use RETURNING), one key lookup
    sqlite = ledger.engine.dialect.name == "sqlite"
    ids = 1 if sqlite else 2
    assert small == {
        "record_signals": ids,
        "record_orders": 1 + ids,  # signal lookup
        "update_orders": 1,
        # order lookup, insert (SQLite: ON CONFLICT DO NOTHING decides; elsewhere also a lookup of existing trades)
        "record_fills": 2 if sqlite else 3,
        "record_positions": 1,
        "record_rejections": 1,
        "audit_many": 1,
    }


@pytest.mark.slow
def test_replay_volume(ledger: Ledger, prov: Provenance) -> None:
    """~A replay: 5,000 signals, orders and fills, 15,000 audit rows, 10,000 order updates."""
    n = 5000
    signals = signals_frame(n)
    orders = orders_frame(signals)
    fills = fills_frame(orders)
    coids = orders.client_order_id
    placed = pd.DataFrame(
        {"client_order_id": coids, "broker_order_id": "b", "status": "NEW", "placed_at": orders.created_at}
    )
    filled = pd.DataFrame(
        {
            "client_order_id": coids,
            "status": "FILLED",
            "filled_quantity": orders.quantity,
            "avg_price": orders.price,
        }
    )
    audit = [
        {"event": ev, "entity": "order", "entity_id": c, "payload": {"n": 1}}
        for ev in ("a", "b", "c")
        for c in coids
    ]

    start = time.perf_counter()
    with ledger.transaction() as s:
        ledger.record_signals(s, signals, namespace=NS, prov=prov)
        ledger.record_orders(s, orders, namespace=NS, venue=VENUE, prov=prov)
        ledger.audit_many(s, audit[:n], prov=prov)
    with ledger.transaction() as s:
        ledger.update_orders(s, placed, venue=VENUE, prov=prov)
        ledger.audit_many(s, audit[n : 2 * n], prov=prov)
    with ledger.transaction() as s:
        assert ledger.record_fills(s, fills, venue=VENUE, prov=prov) == n
        ledger.update_orders(s, filled, venue=VENUE, prov=prov)
        ledger.audit_many(s, audit[2 * n :], prov=prov)
    elapsed = time.perf_counter() - start
    print(f"\nreplay volume on {ledger.engine.dialect.name}: {elapsed:.3f} s")

    df = ledger.frame("orders", run_id=prov.run_id)
    assert len(df) == n and set(df.status) == {"FILLED"} and set(df.broker_order_id) == {"b"}
    assert len(ledger.frame("audit_log", run_id=prov.run_id)) == 3 * n
    # generous bound (CI machines vary); about 0.5 s on SQLite and 1.2 s on PostgreSQL locally
    assert elapsed < 15


def test_sqlite_concurrent_writers(tmp_path: Path) -> None:
    """Writers in several threads queue on the write lock instead of failing."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    with Ledger(url) as led:
        run_id = led.start_run("live", {})

        def worker(k: int) -> None:
            for j in range(5):
                with led.transaction() as s:
                    # read first, then write: the case a deferred BEGIN cannot upgrade
                    s.connection().exec_driver_sql("SELECT count(*) FROM signals").scalar_one()
                    time.sleep(0.002)
                    frame = signals_frame(20, prefix=f"w{k}-{j}-")
                    led.record_signals(s, frame, namespace="live", prov=Provenance(run_id))

        with ThreadPoolExecutor(4) as pool:
            for future in [pool.submit(worker, k) for k in range(4)]:
                future.result()  # re-raises a worker's error ("database is locked")
        assert len(led.frame("signals")) == 4 * 5 * 20


def test_url_password_is_masked() -> None:
    led = Ledger("postgresql+psycopg://trader:s3cret-pw@db.example:5432/ledger", migrate=False)
    assert "s3cret" not in led.url and "***" in led.url
    assert led.url == "postgresql+psycopg://trader:***@db.example:5432/ledger"
    assert "s3cret" not in repr(led)
    led.close()


def test_connection_errors_do_not_leak_password() -> None:
    with pytest.raises(OperationalError) as info:
        Ledger("postgresql+psycopg://trader:s3cret-pw@127.0.0.1:1/ledger?connect_timeout=2")
    assert "s3cret" not in str(info.value)


def test_sqlite_url_unchanged(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with Ledger(url) as led:
        assert led.url == url
