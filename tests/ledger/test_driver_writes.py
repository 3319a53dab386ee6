"""The writers' SQLite driver path (values converted once per column, handed to sqlite3)
stores exactly what SQLAlchemy's column types bind; `Ledger.write` is one transaction;
known ids skip the look-ups; renamed columns are read from their frame names."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError, OperationalError

from tradpal.ledger import Ledger, Provenance
from tradpal.ledger import frames as fr
from tradpal.ledger import ledger as ledger_module
from tradpal.ledger.models import AuditLog, Fill, Rejection, Signal

from .helpers import T0, fills_frame, orders_frame, signals_frame

NS = "replay:driver"
VENUE = "paper"


@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> Ledger:
    with Ledger(f"sqlite:///{tmp_path / 'd.db'}") as ledger:
        yield ledger


def _raw(ledger: Ledger, table: str, where: str, skip: tuple[str, ...] = ()) -> list[tuple]:
    """Every column but the id (and ``skip``) as SQLite stores it: (storage class, SQL literal)."""
    db = sqlite3.connect(ledger.engine.url.database)
    try:
        names = [r[1] for r in db.execute(f"PRAGMA table_info({table})") if r[1] not in ("id", *skip)]
        cols = ", ".join(f"typeof({n}), quote({n})" for n in names)
        return db.execute(f"SELECT {cols} FROM {table} WHERE {where} ORDER BY id").fetchall()
    finally:
        db.close()


def _core_insert(ledger: Ledger, table, frame: pd.DataFrame, names, constants: dict) -> None:
    """The same rows through SQLAlchemy Core and its type processors (the reference)."""
    cols = fr.columns_from_frame(frame, table, names, op="reference")
    with ledger.engine.begin() as conn:
        conn.execute(insert(table), fr.rows_from_columns(cols, len(frame), constants))


def test_sqlite_driver_path_stores_what_sqlalchemy_binds(sqlite_ledger: Ledger) -> None:
    ledger = sqlite_ledger
    run_id = ledger.start_run("replay", {})
    prov = Provenance(run_id=run_id, flow_run_id="f", task_run_id="t")
    signals = signals_frame(4)
    # aware in another zone, naive (taken as UTC), sub-second, and an integral float
    signals["timestamp"] = [datetime(2024, 3, 1, 14, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2))),
                            datetime(2024, 3, 1, 12, 1), T0, T0 + timedelta(microseconds=1)]
    signals["quantity"] = [2.0, 0.1, np.nan, 1e-12]
    with ledger.write() as s:
        ledger.record_signals(s, signals, namespace=NS, prov=prov)
    _core_insert(ledger, Signal.__table__, signals, ledger_module.SIGNAL_COLUMNS,
                 {"namespace": "ref", **prov.columns()})
    ours = _raw(ledger, "signals", f"namespace = '{NS}'", skip=("namespace",))
    assert len(ours) == 4 and ours == _raw(ledger, "signals", "namespace = 'ref'", skip=("namespace",))

    orders = orders_frame(signals).assign(quantity=[2.0, 0.1, 3.0, 1e-12])
    fills = fills_frame(orders).assign(is_maker=[True, False, None, True])
    with ledger.write() as s:
        ledger.record_orders(s, orders, namespace=NS, venue=VENUE, prov=prov)
        assert ledger.record_fills(s, fills, venue=VENUE, prov=prov) == 4
    pks = dict(zip(ledger.frame("orders")["client_order_id"], ledger.frame("orders")["id"], strict=True))
    ref = fills.assign(trade_id="ref-" + fills["trade_id"], order_pk=fills["client_order_id"].map(pks))
    _core_insert(ledger, Fill.__table__, ref, (*ledger_module.FILL_COLUMNS, "order_pk"),
                 {"venue": VENUE, **prov.columns()})
    ours = _raw(ledger, "fills", "trade_id NOT LIKE 'ref-%'", skip=("trade_id",))
    assert len(ours) == 4 and ours == _raw(ledger, "fills", "trade_id LIKE 'ref-%'", skip=("trade_id",))

    rejections = pd.DataFrame({"signal_id": ["s0", "s1", "s2"], "step": "sizing", "reason": "x",
                               "payload": [{"a": [1, 2.5, None]}, '{"b": 1}', "plain words"],
                               "created_at": [T0, pd.Timestamp(T0).tz_localize(None), pd.NaT]})
    rejections["created_at"] = rejections["created_at"].fillna(T0)
    with ledger.write() as s:
        ledger.record_rejections(s, rejections, namespace=NS, prov=prov)
    _core_insert(ledger, Rejection.__table__, rejections, ledger_module.REJECTION_COLUMNS,
                 {"namespace": "ref", **prov.columns()})
    ours = _raw(ledger, "rejections", f"namespace = '{NS}'", skip=("namespace",))
    assert len(ours) == 3 and ours == _raw(ledger, "rejections", "namespace = 'ref'", skip=("namespace",))

    audit = [{"event": "e", "entity": "order", "entity_id": 7, "payload": {"x": float("nan"), "t": T0},
              "time": T0.astimezone(timezone(timedelta(hours=-5)))},
             {"event": "e", "entity": "batch", "entity_id": None, "payload": None, "time": T0}]
    with ledger.write() as s:
        ledger.audit_many(s, audit, prov=prov)
    with ledger.engine.begin() as conn:
        conn.execute(insert(AuditLog.__table__), [
            {"time": r["time"], "event": r["event"], "entity": r["entity"],
             "entity_id": None if r["entity_id"] is None else str(r["entity_id"]), "payload": r["payload"],
             **Provenance(run_id="ref", flow_run_id="f", task_run_id="t").columns()} for r in audit])
    ours = _raw(ledger, "audit_log", f"run_id = '{run_id}'", skip=("run_id",))
    assert len(ours) == 2 and ours == _raw(ledger, "audit_log", "run_id = 'ref'", skip=("run_id",))


def test_write_commits_once_and_rolls_back_whole(sqlite_ledger: Ledger) -> None:
    ledger = sqlite_ledger
    prov = Provenance(run_id=ledger.start_run("replay", {}))
    with pytest.raises(IntegrityError), ledger.write() as s:
        ledger.record_signals(s, signals_frame(2), namespace=NS, prov=prov)
        ledger.record_signals(s, signals_frame(1), namespace=NS, prov=prov)  # s0 again: the unique key
    assert ledger.frame("signals").empty
    with pytest.raises(RuntimeError), ledger.write() as s:
        ledger.record_signals(s, signals_frame(2), namespace=NS, prov=prov)
        raise RuntimeError("step failed")
    assert ledger.frame("signals").empty
    with ledger.write() as s:
        ledger.record_signals(s, signals_frame(2), namespace=NS, prov=prov)
        ledger.trip_breaker(s, "loss_limit", "portfolio", "too much", value=2.0, threshold=1.0, prov=prov)
    assert len(ledger.frame("signals")) == 2 and len(ledger.active_breakers()) == 1
    assert ledger.frame("audit_log")["event"].tolist() == ["breaker.tripped"]


def test_write_on_a_locked_database_raises_sqlalchemys_operational_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TRADPAL_SQLITE_BUSY_TIMEOUT_S", "0.05")
    path = tmp_path / "locked.db"
    with Ledger(f"sqlite:///{path}") as ledger:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(OperationalError, match="locked"), ledger.write():
                pass
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        with ledger.write() as s:  # the connection went back to the pool usable
            ledger.audit(s, "e", "x", prov=Provenance())
        assert len(ledger.frame("audit_log")) == 1


def test_known_ids_skip_the_lookups_and_unknown_ones_are_looked_up(ledger: Ledger, prov: Provenance,
                                                                   monkeypatch) -> None:
    signals = signals_frame(3)
    orders, looked = orders_frame(signals), []
    original = Ledger._lookup

    def lookup(session, table, key, keys, scope):
        keys = list(keys)
        looked.append((table.name, sorted(keys)))
        return original(session, table, key, keys, scope)

    monkeypatch.setattr(Ledger, "_lookup", staticmethod(lookup))
    with ledger.write() as s:
        spks = ledger.record_signals(s, signals, namespace=NS, prov=prov, skip_existing=True)
    looked.clear()
    with ledger.write() as s:
        opks = ledger.record_orders(s, orders, namespace=NS, venue=VENUE, prov=prov,
                                    signal_pks={k: v for k, v in spks.items() if k != "s2"})
    assert [x for x in looked if x[0] == "signals"] == [("signals", ["s2"])]
    assert ledger.frame("orders")["signal_pk"].tolist() == [spks["s0"], spks["s1"], spks["s2"]]
    looked.clear()
    fills = fills_frame(orders)
    with ledger.write() as s:
        assert ledger.record_fills(s, fills, venue=VENUE, prov=prov, order_pks=opks) == 3
        assert ledger.record_fills(s, fills, venue=VENUE, prov=prov, order_pks=opks) == 0  # recorded already
    assert not [x for x in looked if x[0] == "orders"]
    assert ledger.frame("fills")["order_pk"].tolist() == [opks[c] for c in orders["client_order_id"]]


def test_renamed_columns_are_read_from_their_frame_names_only(ledger: Ledger, prov: Provenance) -> None:
    signals = signals_frame(2)
    orders = orders_frame(signals)
    with ledger.write() as s:
        ledger.record_signals(s, signals, namespace=NS, prov=prov)
        ledger.record_orders(s, orders, namespace=NS, venue=VENUE, prov=prov)
    reports = pd.DataFrame({"client_order_id": orders["client_order_id"], "status": "FILLED", "cum_qty": [1.0, 2.0],
                            "avg_px": 0.05, "timestamp": T0, "broker_order_id": "not-this",
                            "trade_id": ["t1", "t2"], "symbol": "ETH/BTC", "side": "buy", "last_qty": [1.0, 2.0],
                            "last_px": 0.05, "quantity": 99.0, "model_price": 0.049, "reference_price": 7.0})
    with ledger.write() as s:
        ledger.update_orders(s, reports, venue=VENUE, prov=prov,
                             names={"status": "status", "filled_quantity": "cum_qty", "updated_at": "timestamp"})
        ledger.record_fills(s, reports, venue=VENUE, prov=prov,
                            names={"quantity": "last_qty", "price": "last_px", "reference_price": "model_price"})
    got = ledger.frame("orders")
    assert got["status"].tolist() == ["FILLED", "FILLED"] and got["filled_quantity"].tolist() == [1.0, 2.0]
    assert got["broker_order_id"].isna().all()  # not in names: left alone
    assert got["avg_price"].isna().all()
    fills = ledger.frame("fills")
    assert fills["quantity"].tolist() == [1.0, 2.0] and fills["reference_price"].tolist() == [0.049, 0.049]
    with pytest.raises(ValueError, match="not order columns"), ledger.write() as s:
        ledger.update_orders(s, reports, venue=VENUE, prov=prov, names={"symbol": "symbol"})
    assert fr.sqlite_datetime(datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2024-01-02 03:04:05.000000"
