"""Writers and readers round-trip on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from enum import Enum

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from tradpal.ledger import Ledger, Provenance

from .helpers import T0, fills_frame, orders_frame, signals_frame

NS = "replay:test"
VENUE = "paper"


def _counts(ledger: Ledger) -> dict[str, int]:
    return {t: len(ledger.frame(t)) for t in ("signals", "orders", "fills", "rejections", "audit_log")}


def _aware_utc(value: datetime) -> bool:
    return value.tzinfo is not None and value.utcoffset() == timedelta(0)


# -- runs ---------------------------------------------------------------------------------


def test_runs(ledger: Ledger) -> None:
    run_id = ledger.start_run("replay", {"symbols": ["ETH/BTC"], "since": T0}, flow_run_id="f-1")
    assert len(run_id) == 32
    run = ledger.get_run(run_id)
    assert run is not None
    assert run["kind"] == "replay" and run["status"] == "running" and run["flow_run_id"] == "f-1"
    assert run["params"] == {"symbols": ["ETH/BTC"], "since": T0.isoformat()}
    assert _aware_utc(run["started_at"]) and run["finished_at"] is None and run["summary"] is None

    ledger.finish_run(run_id, "completed", {"orders": 3, "pnl": float("nan")})
    run = ledger.get_run(run_id)
    assert run["status"] == "completed" and run["summary"] == {"orders": 3, "pnl": None}
    assert _aware_utc(run["finished_at"]) and run["finished_at"] >= run["started_at"]

    assert ledger.start_run("live", {}, run_id="my-run") == "my-run"
    assert ledger.get_run("nope") is None
    assert list(ledger.frame("runs")["id"]) == [run_id, "my-run"]
    assert list(ledger.frame("runs", run_id="my-run")["id"]) == ["my-run"]


def test_run_validation(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="kind"):
        ledger.start_run("backtest", {})
    with pytest.raises(ValueError, match="no run"):
        ledger.finish_run("missing", "failed", {})
    run_id = ledger.start_run("live", {})
    with pytest.raises(ValueError, match="status"):
        ledger.finish_run(run_id, "running", {})
    with pytest.raises(IntegrityError):
        ledger.start_run("live", {}, run_id=run_id)


# -- signals ------------------------------------------------------------------------------


class Side(str, Enum):
    BUY = "buy"
    SELL = "sell"


def test_signals_round_trip(ledger: Ledger, prov: Provenance) -> None:
    frame = signals_frame(3)
    frame["side"] = [Side.BUY, Side.SELL, Side.BUY]  # enums are stored by value
    frame.loc[1, "quantity"] = np.nan  # -> NULL
    frame["strategy"] = ["a", None, "c"]
    frame["extra"] = "ignored"
    # +02:00 and naive (taken as UTC) inputs; stored and returned as UTC
    frame["timestamp"] = [
        datetime(2024, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
        datetime(2024, 3, 1, 12, 5),
        T0 + timedelta(minutes=10),
    ]
    with ledger.transaction() as s:
        ids = ledger.record_signals(s, frame, namespace=NS, prov=prov)
    assert set(ids) == {"s0", "s1", "s2"}

    df = ledger.frame("signals")
    assert list(df.columns) == [
        "id", "run_id", "namespace", "signal_id", "timestamp", "symbol", "side", "quantity", "strategy",
        "order_type", "limit_price", "stop_price", "reference_price", "received_at", "flow_run_id",
        "task_run_id",
    ]  # fmt: skip
    assert dict(zip(df.signal_id, df.id, strict=True)) == ids
    assert list(df.side) == ["buy", "sell", "buy"]
    assert df.quantity.iloc[0] == 1.5 and math.isnan(df.quantity.iloc[1]) and df.quantity.iloc[2] == 3.5
    assert list(df.strategy) == ["a", None, "c"]
    assert df.stop_price.isna().all()
    assert list(df.limit_price) == list(frame.limit_price)  # exact
    assert str(df.timestamp.dtype) == "datetime64[ns, UTC]"
    assert list(df.timestamp) == [T0, T0 + timedelta(minutes=5), T0 + timedelta(minutes=10)]
    assert set(df.namespace) == {NS} and set(df.run_id) == {prov.run_id}
    assert set(df.flow_run_id) == {"flow-1"} and set(df.task_run_id) == {"task-1"}

    row = ledger.lineage(NS, "s1")["signal"]
    assert row["quantity"] is None and row["strategy"] is None
    assert _aware_utc(row["timestamp"]) and row["timestamp"] == T0 + timedelta(minutes=5)
    assert _aware_utc(row["received_at"])


def test_signals_received_at_defaults_to_now(ledger: Ledger, prov: Provenance) -> None:
    frame = signals_frame(1).drop(columns=["received_at", "quantity", "strategy", "limit_price"])
    before = datetime.now(UTC)
    with ledger.transaction() as s:
        ledger.record_signals(s, frame, namespace=NS, prov=prov)
    row = ledger.lineage(NS, "s0")["signal"]
    assert before - timedelta(seconds=1) <= row["received_at"] <= datetime.now(UTC) + timedelta(seconds=1)
    assert row["quantity"] is None and row["limit_price"] is None


def test_signal_missing_required_values(ledger: Ledger, prov: Provenance) -> None:
    frame = signals_frame(3)
    frame.loc[2, "symbol"] = None
    with pytest.raises(ValueError, match=r"'symbol' is null for signal_id 's2'"), ledger.transaction() as s:
        ledger.record_signals(s, frame, namespace=NS, prov=prov)
    with pytest.raises(ValueError, match="missing required column"), ledger.transaction() as s:
        ledger.record_signals(s, frame.drop(columns=["side"]), namespace=NS, prov=prov)
    assert len(ledger.frame("signals")) == 0


def test_empty_frames(ledger: Ledger, prov: Provenance) -> None:
    with ledger.transaction() as s:
        assert ledger.record_signals(s, signals_frame(0), namespace=NS, prov=prov) == {}
        assert ledger.record_signals(s, pd.DataFrame(), namespace=NS, prov=prov) == {}
        assert ledger.record_orders(s, pd.DataFrame(), namespace=NS, venue=VENUE, prov=prov) == {}
        assert ledger.update_orders(s, pd.DataFrame({"client_order_id": []}), venue=VENUE, prov=prov) is None
        assert ledger.record_fills(s, pd.DataFrame(), venue=VENUE, prov=prov) == 0
        assert ledger.record_positions(s, pd.DataFrame(), prov=prov) is None
        assert ledger.record_rejections(s, pd.DataFrame(), namespace=NS, prov=prov) == 0
        ledger.audit_many(s, [], prov=prov)
    assert _counts(ledger) == dict.fromkeys(_counts(ledger), 0)
    empty = ledger.frame("orders")
    assert empty.empty and "client_order_id" in empty.columns
    assert str(empty.created_at.dtype) == "datetime64[ns, UTC]"


def test_duplicate_signal_rolls_back_whole_transaction(ledger: Ledger, prov: Provenance) -> None:
    with ledger.transaction() as s:
        ledger.record_signals(s, signals_frame(2), namespace=NS, prov=prov)

    with pytest.raises(IntegrityError), ledger.transaction() as s:
        ledger.record_signals(s, signals_frame(1, prefix="new"), namespace=NS, prov=prov)
        ledger.audit(s, "signal_received", "signal", entity_id="new0", prov=prov)
        ledger.record_signals(s, signals_frame(3), namespace=NS, prov=prov)  # s0, s1 exist
    assert list(ledger.frame("signals").signal_id) == ["s0", "s1"]
    assert len(ledger.frame("audit_log")) == 0

    with ledger.transaction() as s:  # the same ids in another namespace are fine
        assert len(ledger.record_signals(s, signals_frame(2), namespace="live", prov=prov)) == 2


def test_rollback_on_any_error(ledger: Ledger, prov: Provenance) -> None:
    with pytest.raises(RuntimeError), ledger.transaction() as s:
        ledger.record_signals(s, signals_frame(2), namespace=NS, prov=prov)
        raise RuntimeError("task crashed")
    assert len(ledger.frame("signals")) == 0


# -- orders -------------------------------------------------------------------------------


def test_orders_round_trip(ledger: Ledger, prov: Provenance) -> None:
    signals = signals_frame(2)
    orders = orders_frame(signals)
    orders.loc[1, "price"] = np.nan
    orders = orders.drop(columns=["time_in_force"])
    with ledger.transaction() as s:
        sig_ids = ledger.record_signals(s, signals, namespace=NS, prov=prov)
        ids = ledger.record_orders(s, orders, namespace=NS, venue=VENUE, prov=prov)
    assert set(ids) == {"c-s0", "c-s1"}

    o = ledger.find_order(VENUE, "c-s1")
    assert o is not None and o["id"] == ids["c-s1"] and o["signal_pk"] == sig_ids["s1"]
    assert o["status"] == "CREATED" and o["time_in_force"] == "GTC"
    assert o["filled_quantity"] == 0.0 and o["fees"] == 0.0 and isinstance(o["fees"], float)
    assert o["price"] is None and o["stop_price"] is None and o["broker_order_id"] is None
    assert o["quantity"] == 2.5 and o["venue"] == VENUE and o["run_id"] == prov.run_id
    assert o["created_at"] == T0 + timedelta(minutes=5, seconds=2) and _aware_utc(o["created_at"])
    assert o["updated_at"] == o["created_at"] and o["placed_at"] is None
    assert (o["flow_run_id"], o["task_run_id"]) == ("flow-1", "task-1")
    assert ledger.find_order(VENUE, "nope") is None
    assert ledger.find_order("other-venue", "c-s1") is None

    df = ledger.frame("orders", run_id=prov.run_id)
    assert list(df.client_order_id) == ["c-s0", "c-s1"]
    assert df.price.iloc[0] == pytest.approx(0.05) and math.isnan(df.price.iloc[1])


def test_order_status_given(ledger: Ledger, prov: Provenance) -> None:
    signals = signals_frame(1)
    orders = orders_frame(signals).assign(status="REJECTED", reason="below min notional")
    with ledger.transaction() as s:
        ledger.record_signals(s, signals, namespace=NS, prov=prov)
        ledger.record_orders(s, orders, namespace=NS, venue=VENUE, prov=prov)
    o = ledger.find_order(VENUE, "c-s0")
    assert o["status"] == "REJECTED" and o["reason"] == "below min notional"


def test_order_for_unknown_signal_writes_nothing(ledger: Ledger, prov: Provenance) -> None:
    signals = signals_frame(2)
    orders = orders_frame(signals_frame(3))  # s2 was never recorded
    match = r"no such signal in namespace 'replay:test': signal 's2'"
    with pytest.raises(ValueError, match=match), ledger.transaction() as s:
        ledger.record_signals(s, signals, namespace=NS, prov=prov)
        ledger.record_orders(s, orders, namespace=NS, venue=VENUE, prov=prov)
    assert _counts(ledger) == dict.fromkeys(_counts(ledger), 0)  # the signals rolled back too

    with ledger.transaction() as s:
        ledger.record_signals(s, signals, namespace=NS, prov=prov)
    with pytest.raises(ValueError, match="signal 's0'"), ledger.transaction() as s:  # wrong namespace
        ledger.record_orders(s, orders_frame(signals), namespace="live", venue=VENUE, prov=prov)
    assert len(ledger.frame("orders")) == 0


def test_duplicate_client_order_id_per_venue(ledger: Ledger, prov: Provenance) -> None:
    signals = signals_frame(2)
    with ledger.transaction() as s:
        ledger.record_signals(s, signals, namespace=NS, prov=prov)
        ledger.record_orders(s, orders_frame(signals.iloc[:1]), namespace=NS, venue=VENUE, prov=prov)

    both = orders_frame(signals)  # c-s1 is new, c-s0 already exists at the venue
    with pytest.raises(IntegrityError), ledger.transaction() as s:
        ledger.record_orders(s, both, namespace=NS, venue=VENUE, prov=prov)
    assert list(ledger.frame("orders").client_order_id) == ["c-s0"]

    with ledger.transaction() as s:  # another venue may reuse the id
        assert set(ledger.record_orders(s, both, namespace=NS, venue="binance", prov=prov)) == {
            "c-s0",
            "c-s1",
        }


def test_update_orders_only_given_columns(ledger: Ledger, prov: Provenance) -> None:
    signals = signals_frame(3)
    with ledger.transaction() as s:
        ledger.record_signals(s, signals, namespace=NS, prov=prov)
        ledger.record_orders(s, orders_frame(signals), namespace=NS, venue=VENUE, prov=prov)
    before = {c: ledger.find_order(VENUE, c) for c in ("c-s0", "c-s1", "c-s2")}

    placed = T0 + timedelta(hours=1)
    update = pd.DataFrame(
        {
            "client_order_id": ["c-s0", "c-s1"],
            "broker_order_id": ["B0", None],
            "status": ["NEW", "PARTIALLY_FILLED"],
            "placed_at": [placed, placed],
            "extra": [1, 2],
        }
    )
    placer = Provenance(run_id=prov.run_id, flow_run_id="flow-1", task_run_id="task-place")
    with ledger.transaction() as s:
        ledger.update_orders(s, update, venue=VENUE, prov=placer)

    o0, o1, o2 = (ledger.find_order(VENUE, c) for c in ("c-s0", "c-s1", "c-s2"))
    assert (o0["broker_order_id"], o0["status"], o0["placed_at"]) == ("B0", "NEW", placed)
    assert (o1["broker_order_id"], o1["status"]) == (None, "PARTIALLY_FILLED")
    assert o0["task_run_id"] == "task-place"  # provenance = last writer
    untouched = (
        "quantity",
        "price",
        "filled_quantity",
        "fees",
        "avg_price",
        "reason",
        "updated_at",
        "created_at",
    )
    for col in untouched:
        assert o0[col] == before["c-s0"][col], col
    assert o2 == before["c-s2"]

    fill_update = pd.DataFrame(
        {
            "client_order_id": ["c-s1"],
            "filled_quantity": [2.5],
            "avg_price": [0.0512345678901234],
            "fees": [0.000128],
            "fee_currency": ["BTC"],
            "updated_at": [placed + timedelta(minutes=1)],
        }
    )
    with ledger.transaction() as s:
        ledger.update_orders(s, fill_update, venue=VENUE, prov=Provenance())
    o1b = ledger.find_order(VENUE, "c-s1")
    assert o1b["filled_quantity"] == 2.5 and o1b["avg_price"] == 0.0512345678901234
    assert o1b["fees"] == 0.000128 and o1b["fee_currency"] == "BTC"
    assert o1b["updated_at"] == placed + timedelta(minutes=1)
    assert o1b["status"] == "PARTIALLY_FILLED" and o1b["placed_at"] == placed
    assert o1b["task_run_id"] == "task-place"  # an empty Provenance leaves it alone


def test_update_orders_errors(ledger: Ledger, prov: Provenance) -> None:
    signals = signals_frame(1)
    with ledger.transaction() as s:
        ledger.record_signals(s, signals, namespace=NS, prov=prov)
        ledger.record_orders(s, orders_frame(signals), namespace=NS, venue=VENUE, prov=prov)

    with pytest.raises(ValueError, match=r"no order\(s\) 'ghost'"), ledger.transaction() as s:
        ledger.update_orders(
            s, pd.DataFrame({"client_order_id": ["c-s0", "ghost"], "status": "NEW"}), venue=VENUE, prov=prov
        )
    assert ledger.find_order(VENUE, "c-s0")["status"] == "CREATED"  # rolled back

    with pytest.raises(ValueError, match="'status' is null"), ledger.transaction() as s:
        ledger.update_orders(
            s, pd.DataFrame({"client_order_id": ["c-s0"], "status": [None]}), venue=VENUE, prov=prov
        )
    with pytest.raises(ValueError, match="client_order_id"), ledger.transaction() as s:
        ledger.update_orders(s, pd.DataFrame({"status": ["NEW"]}), venue=VENUE, prov=prov)
    with ledger.transaction() as s:  # nothing to update
        ledger.update_orders(s, pd.DataFrame({"client_order_id": ["c-s0"]}), venue=VENUE, prov=prov)


# -- fills --------------------------------------------------------------------------------


def _with_orders(ledger: Ledger, prov: Provenance, n: int = 2) -> pd.DataFrame:
    signals = signals_frame(n)
    orders = orders_frame(signals)
    with ledger.transaction() as s:
        ledger.record_signals(s, signals, namespace=NS, prov=prov)
        ledger.record_orders(s, orders, namespace=NS, venue=VENUE, prov=prov)
    return orders


def test_fills_round_trip_and_idempotent(ledger: Ledger, prov: Provenance) -> None:
    orders = _with_orders(ledger, prov)
    fills = fills_frame(orders)
    fills.loc[1, "reference_price"] = np.nan
    fills["is_maker"] = [True, False]
    with ledger.transaction() as s:
        assert ledger.record_fills(s, fills, venue=VENUE, prov=prov) == 2

    df = ledger.frame("fills")
    assert list(df.trade_id) == ["t-c-s0", "t-c-s1"]
    order_ids = {c: ledger.find_order(VENUE, c)["id"] for c in ("c-s0", "c-s1")}
    assert list(df.order_pk) == [order_ids["c-s0"], order_ids["c-s1"]]
    assert list(df.is_maker) == [True, False]
    assert df.fee.iloc[0] == pytest.approx(1.5 * 0.05 * 0.001, rel=1e-12)
    assert math.isnan(df.reference_price.iloc[1])
    assert list(df.timestamp) == list(pd.to_datetime(fills.timestamp, utc=True))

    more = pd.concat([fills, fills_frame(orders, prefix="u").iloc[:1]], ignore_index=True)
    with ledger.transaction() as s:
        assert ledger.record_fills(s, fills, venue=VENUE, prov=prov) == 0  # re-recorded: skipped
        assert ledger.record_fills(s, more, venue=VENUE, prov=prov) == 1  # only the new trade
        dup = fills_frame(orders, prefix="v").iloc[[0, 0]]  # repeated within one frame
        assert ledger.record_fills(s, dup, venue=VENUE, prov=prov) == 1
    assert len(ledger.frame("fills")) == 4


def test_fill_for_unknown_order_writes_nothing(ledger: Ledger, prov: Provenance) -> None:
    orders = _with_orders(ledger, prov)
    fills = fills_frame(orders)
    fills.loc[1, "client_order_id"] = "ghost"
    with (
        pytest.raises(ValueError, match=r"no order\(s\) 'ghost' at venue 'paper'"),
        ledger.transaction() as s,
    ):
        ledger.record_fills(s, fills, venue=VENUE, prov=prov)
    with pytest.raises(ValueError, match=r"no order\(s\) 'c-s0'"), ledger.transaction() as s:
        ledger.record_fills(s, fills_frame(orders), venue="binance", prov=prov)
    assert len(ledger.frame("fills")) == 0


def test_fill_fee_defaults_to_zero(ledger: Ledger, prov: Provenance) -> None:
    orders = _with_orders(ledger, prov, 1)
    fills = fills_frame(orders).drop(columns=["fee", "fee_currency", "is_maker", "reference_price"])
    with ledger.transaction() as s:
        ledger.record_fills(s, fills, venue=VENUE, prov=prov)
    row = ledger.lineage(NS, "s0")["fills"][0]
    assert row["fee"] == 0.0 and row["fee_currency"] is None and row["is_maker"] is None


def test_foreign_keys_are_enforced(ledger: Ledger, prov: Provenance) -> None:
    _with_orders(ledger, prov, 1)
    with pytest.raises(IntegrityError), ledger.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO fills (order_pk, venue, trade_id, timestamp, symbol, side, quantity, price, fee)"
                " VALUES (999999, 'paper', 'x', :ts, 'ETH/BTC', 'buy', 1, 1, 0)"
            ),
            {"ts": T0},
        )
    with pytest.raises(IntegrityError), ledger.transaction() as s:
        ledger.record_signals(s, signals_frame(1, prefix="z"), namespace=NS, prov=Provenance(run_id="no-run"))


# -- positions, rejections, audit ---------------------------------------------------------


def test_positions(ledger: Ledger, prov: Provenance) -> None:
    frame = pd.DataFrame(
        {
            "symbol": ["ETH/BTC", "LTC/BTC"],
            "quantity": [1.5, 0.0],
            "average_price": [0.05, np.nan],
            "market_price": [0.051, 0.002],
            "realized_pnl": [0.0, 0.0001],
            "unrealized_pnl": [0.0015, 0.0],
            "as_of": [T0, T0],
        }
    )
    with ledger.transaction() as s:
        ledger.record_positions(s, frame, prov=prov)
        ledger.record_positions(s, frame.assign(as_of=T0 + timedelta(hours=1)), prov=prov)  # append-only
    df = ledger.frame("positions", run_id=prov.run_id)
    assert len(df) == 4 and list(df.symbol[:2]) == ["ETH/BTC", "LTC/BTC"]
    assert df.quantity.iloc[1] == 0.0 and math.isnan(df.average_price.iloc[1])
    assert list(df.as_of) == [T0, T0, T0 + timedelta(hours=1), T0 + timedelta(hours=1)]


def test_rejections(ledger: Ledger, prov: Provenance) -> None:
    frame = pd.DataFrame(
        {
            "signal_id": ["s0", "s1", None, "s3"],
            "step": ["intake", "sizing", "intake", "placement"],
            "reason": ["missing symbol", "below min notional", "unparseable row", "insufficient funds"],
            "payload": [{"row": 3, "ts": T0}, '{"notional": 0.5}', "plain text", None],
        }
    )
    frame["client_order_id"] = [None, None, None, "c-s3"]
    with ledger.transaction() as s:
        assert ledger.record_rejections(s, frame, namespace=NS, prov=prov) == 4
    df = ledger.frame("rejections")
    assert list(df.signal_id) == ["s0", "s1", None, "s3"]
    assert list(df.client_order_id) == [None, None, None, "c-s3"]
    assert list(df.payload) == [{"row": 3, "ts": T0.isoformat()}, {"notional": 0.5}, "plain text", None]
    assert df.created_at.notna().all() and set(df.namespace) == {NS}

    with pytest.raises(ValueError, match="'reason' is null"), ledger.transaction() as s:
        ledger.record_rejections(s, frame.assign(reason=None), namespace=NS, prov=prov)


def test_audit(ledger: Ledger, prov: Provenance) -> None:
    with ledger.transaction() as s:
        ledger.audit(
            s, "order_created", "order", entity_id="c-s0", payload={"qty": np.float64(1.5)}, prov=prov
        )
        ledger.audit(s, "flow_started", "flow", prov=prov)
        ledger.audit_many(
            s,
            [
                {"event": "order_placed", "entity": "order", "entity_id": "c-s0", "payload": {"at": T0}},
                {"event": "fill", "entity": "fill", "entity_id": 42, "payload": {"x": float("nan")}},
                {"event": "old", "entity": "order", "time": datetime(2020, 1, 1)},
            ],
            prov=prov,
        )
    df = ledger.frame("audit_log")
    assert list(df.event) == ["order_created", "flow_started", "order_placed", "fill", "old"]
    assert list(df.entity_id) == ["c-s0", None, "c-s0", "42", None]
    assert list(df.payload) == [{"qty": 1.5}, None, {"at": T0.isoformat()}, {"x": None}, None]
    assert df.time.iloc[4] == pd.Timestamp("2020-01-01", tz="UTC")
    assert set(df.run_id) == {prov.run_id} and set(df.task_run_id) == {"task-1"}
    with pytest.raises(ValueError, match="needs 'event' and 'entity'"), ledger.transaction() as s:
        ledger.audit_many(s, [{"event": "x"}], prov=prov)


def test_writers_accept_a_connection(ledger: Ledger, prov: Provenance) -> None:
    with ledger.engine.begin() as conn:
        assert len(ledger.record_signals(conn, signals_frame(2), namespace=NS, prov=prov)) == 2
    assert len(ledger.frame("signals")) == 2


# -- readers ------------------------------------------------------------------------------


def test_frame_unknown_table(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="unknown table"):
        ledger.frame("alembic_version")


def test_frame_filters_by_run(ledger: Ledger, prov: Provenance) -> None:
    other = Provenance(run_id=ledger.start_run("live", {}))
    with ledger.transaction() as s:
        ledger.record_signals(s, signals_frame(2), namespace=NS, prov=prov)
        ledger.record_signals(s, signals_frame(3), namespace="live", prov=other)
    assert len(ledger.frame("signals", run_id=prov.run_id)) == 2
    assert len(ledger.frame("signals", run_id=other.run_id)) == 3
    assert list(ledger.frame("signals").id) == sorted(ledger.frame("signals").id)


def test_lineage(ledger: Ledger, prov: Provenance) -> None:
    orders = _with_orders(ledger, prov, 2)
    other_run = ledger.start_run("replay", {})
    with ledger.transaction() as s:
        ledger.record_fills(s, fills_frame(orders), venue=VENUE, prov=prov)
        ledger.record_rejections(
            s,
            pd.DataFrame({"signal_id": ["s0"], "step": ["monitoring"], "reason": ["expired"]}),
            namespace=NS,
            prov=prov,
        )
        ledger.audit_many(
            s,
            [
                {"event": "signal_received", "entity": "signal", "entity_id": "s0"},
                {"event": "order_created", "entity": "order", "entity_id": "c-s0"},
                {"event": "fill_recorded", "entity": "fill", "entity_id": "t-c-s0"},
                {"event": "order_created", "entity": "order", "entity_id": "c-s1"},  # another signal
            ],
            prov=prov,
        )
        # the same signal id in another namespace / run must not leak in
        ledger.record_signals(s, signals_frame(1), namespace="replay:other", prov=Provenance(other_run))
        ledger.audit(s, "signal_received", "signal", entity_id="s0", prov=Provenance(other_run))

    lin = ledger.lineage(NS, "s0")
    assert lin["signal"]["signal_id"] == "s0" and lin["signal"]["namespace"] == NS
    assert [o["client_order_id"] for o in lin["orders"]] == ["c-s0"]
    assert [f["trade_id"] for f in lin["fills"]] == ["t-c-s0"]
    assert [r["reason"] for r in lin["rejections"]] == ["expired"]
    assert [(a["event"], a["entity_id"]) for a in lin["audit"]] == [
        ("signal_received", "s0"),
        ("order_created", "c-s0"),
        ("fill_recorded", "t-c-s0"),
    ]

    # a signal rejected at intake (never recorded) still has its rejections and audit rows
    with ledger.transaction() as s:
        ledger.record_rejections(
            s,
            pd.DataFrame({"signal_id": ["bad"], "step": ["intake"], "reason": ["no side"]}),
            namespace=NS,
            prov=prov,
        )
        ledger.audit(s, "signal_rejected", "signal", entity_id="bad", prov=prov)
    lin = ledger.lineage(NS, "bad")
    assert lin["signal"] is None and lin["orders"] == [] and lin["fills"] == []
    assert [r["step"] for r in lin["rejections"]] == ["intake"]
    assert [a["event"] for a in lin["audit"]] == ["signal_rejected"]


# -- numbers ------------------------------------------------------------------------------


def test_numeric_precision(ledger: Ledger, prov: Provenance) -> None:
    values = [0.1 + 0.2, 12345.123456789012, 1e-18, 2.0, 123456789.12345679, 0.0]
    frame = signals_frame(len(values)).assign(quantity=values)
    with ledger.transaction() as s:
        ledger.record_signals(s, frame, namespace=NS, prov=prov)
    got = list(ledger.frame("signals").quantity)
    assert got == values  # exact: 17 significant digits survive (within 18 decimals)
    row = ledger.lineage(NS, "s3")["signal"]
    assert type(row["quantity"]) is float and row["quantity"] == 2.0


def test_times_are_stored_as_utc(ledger_url: str) -> None:
    """Whatever the input offset or the PostgreSQL session time zone, the stored instant is
    the same and comes back as UTC."""
    if ledger_url.startswith("postgresql"):
        from sqlalchemy.engine import make_url

        url = make_url(ledger_url)
        options = f"{url.query['options']} -ctimezone=America/New_York"
        ledger_url = url.update_query_dict({"options": options}).render_as_string(hide_password=False)
    with Ledger(ledger_url) as ledger:
        prov = Provenance(ledger.start_run("live", {}))
        frame = signals_frame(1)
        frame["timestamp"] = [datetime(2024, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))]
        with ledger.transaction() as s:
            ledger.record_signals(s, frame, namespace=NS, prov=prov)
        row = ledger.lineage(NS, "s0")["signal"]
        assert row["timestamp"] == T0 and row["timestamp"].tzinfo == UTC
        with ledger.engine.connect() as conn:
            raw = conn.exec_driver_sql("SELECT timestamp FROM signals").scalar_one()
        if ledger.engine.dialect.name == "sqlite":
            assert raw == "2024-03-01 12:00:00.000000"  # the UTC wall time
        else:
            assert raw == T0 and str(raw.tzinfo) == "America/New_York"
