"""The streaming consumer without Prefect: batching, answers per signal (acked, rejected
with the step and reason, failed), monitoring passes between signals, draining on stop."""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest

from brokers.base import BrokerConnectionError
from brokers.base.clock import WallClock
from brokers.paper import PaperBroker
from tasks.context import Book, ExecutionContext, PipelineConfig
from tasks.recorder import LedgerRecorder
from tradpal.ledger import Ledger
from tradpal.live import last_prices
from tradpal.streaming import SignalQueue, batch_label, run_stream

SYM = "BTC/USDT"


def context(db: str, cash: float = 10_000.0, price: float = 100.0) -> ExecutionContext:
    clock = WallClock()
    broker = PaperBroker(cash=cash, quote_currency="USDT", clock=clock, name="paper-stream")
    broker.set_price(SYM, price)
    ledger = Ledger(db)
    ledger.start_run("live", {}, run_id="stream-test")
    ctx = ExecutionContext(broker=broker, clock=clock, config=PipelineConfig(), market=last_prices({SYM: price}, clock.now()),
                           book=Book(cash=cash, quote_currency="USDT"), recorder=None, run_id="stream-test",
                           namespace="live", strategy="live")
    ctx.recorder = LedgerRecorder(ledger, run_id="stream-test", namespace="live", venue=broker.name)
    ctx.config = PipelineConfig(rules={SYM: ctx.config.default_rules})
    return ctx


def signal(sid: str, side: str = "buy", qty: float = 1.0, **extra) -> dict:
    return {"signal_id": sid, "timestamp": pd.Timestamp.now(tz="UTC").isoformat(), "symbol": SYM, "side": side,
            "quantity": qty, **extra}


async def serve(ctx: ExecutionContext, senders, **kwargs):
    """Run the consumer while ``senders(queue)`` submits; stop once they are done."""
    queue, stop = SignalQueue(**kwargs), asyncio.Event()
    consumer = asyncio.ensure_future(run_stream(queue, ctx, stop, idle_poll_s=0.05))
    try:
        answers = await senders(queue)
    finally:
        stop.set()
    return answers, await consumer


def test_each_sender_hears_its_own_outcome(tmp_path):
    ctx = context(f"sqlite:///{tmp_path / 'l.db'}")

    async def senders(queue):
        return await asyncio.gather(queue.submit([signal("a")]), queue.submit([signal("b", qty=1e6)]),
                                    queue.submit([signal("c", side="hold")]))

    (a, b, c), stats = asyncio.run(serve(ctx, senders))
    assert a[0]["accepted"] and a[0]["status"] == "FILLED" and a[0]["order_id"].startswith("paper-")
    assert b[0] == {"signal_id": "b", "accepted": False, "status": "REJECTED", "step": "pre_checks",
                    "reason": b[0]["reason"]} and "insufficient funds" in b[0]["reason"]
    assert not c[0]["accepted"] and c[0]["step"] == "intake" and "side" in c[0]["reason"]
    assert stats.signals == 3 and stats.acked == 1 and stats.rejected == 2
    orders = Ledger(f"sqlite:///{tmp_path / 'l.db'}").frame("orders")
    assert orders.loc[orders["status"] == "FILLED", "client_order_id"].tolist() == [a[0]["client_order_id"]]


def test_signals_waiting_together_run_as_one_batch(tmp_path):
    ctx = context(f"sqlite:///{tmp_path / 'l.db'}")

    async def senders(queue):
        return await queue.submit([signal(f"s{i}", qty=0.5) for i in range(20)])

    answers, stats = asyncio.run(serve(ctx, senders))
    assert [a["signal_id"] for a in answers] == [f"s{i}" for i in range(20)]
    assert all(a["status"] == "FILLED" for a in answers)
    assert stats.batches == 1 and stats.largest_batch == 20
    assert ctx.book.positions[SYM] == pytest.approx(10.0)


def test_max_batch_splits_and_the_same_id_twice_is_one_order(tmp_path):
    ctx = context(f"sqlite:///{tmp_path / 'l.db'}")

    async def senders(queue):
        first = queue.submit([signal(f"s{i}", qty=0.1) for i in range(5)])
        again = queue.submit([signal("s0", qty=0.1)])
        return await asyncio.gather(first, again)

    (first, again), stats = asyncio.run(serve(ctx, senders, max_batch=2))
    assert stats.batches == 3 and stats.largest_batch == 2
    assert again[0] == first[0]  # in flight together: one order, the same answer
    later, _ = asyncio.run(serve(ctx, lambda q: q.submit([signal("s0", qty=0.1)])))
    assert later[0]["status"] == "REJECTED" and "already received" in later[0]["reason"]
    assert len(Ledger(f"sqlite:///{tmp_path / 'l.db'}").frame("orders")) == 5


def test_a_resting_order_is_filled_by_a_monitoring_pass_between_signals(tmp_path):
    ctx = context(f"sqlite:///{tmp_path / 'l.db'}")

    async def senders(queue):
        answer = await queue.submit([signal("lim", order_type="limit", limit_price=95.0)])
        assert answer[0]["status"] == "NEW"  # answered at the acknowledgement, before steps 6-8
        for _ in range(200):  # until this batch's monitoring step has taken the order in
            if ctx.open_orders:
                break
            await asyncio.sleep(0.01)
        assert ctx.open_orders
        ctx.broker.set_price(SYM, 94.0)  # the market comes down to the limit
        for _ in range(100):
            if not ctx.open_orders:
                break
            await asyncio.sleep(0.02)
        return answer

    _, stats = asyncio.run(serve(ctx, senders))
    assert not ctx.open_orders and stats.idle_passes >= 1
    fills = Ledger(f"sqlite:///{tmp_path / 'l.db'}").frame("fills")
    assert len(fills) == 1 and fills["price"].iat[0] <= 95.0  # the limit or better


def test_a_failing_batch_answers_its_senders_and_stops_the_stream(tmp_path):
    ctx = context(f"sqlite:///{tmp_path / 'l.db'}")

    async def refuse(*args, **kwargs):
        raise BrokerConnectionError("venue down")

    ctx.broker.place_order = refuse
    ctx.broker.get_order_by_client_id = refuse
    queue, stop = SignalQueue(), asyncio.Event()

    async def go():
        consumer = asyncio.ensure_future(run_stream(queue, ctx, stop, idle_poll_s=0.05))
        answer = await queue.submit([signal("x")])
        with pytest.raises(BrokerConnectionError):
            await consumer
        return answer

    answer = asyncio.run(go())
    assert answer[0]["accepted"] is False and answer[0]["status"] == "FAILED"
    assert "venue down" in answer[0]["reason"]


def test_stopping_drains_what_is_queued_and_refuses_what_comes_after(tmp_path):
    ctx = context(f"sqlite:///{tmp_path / 'l.db'}")

    async def go():
        queue, stop = SignalQueue(), asyncio.Event()
        sent = asyncio.ensure_future(queue.submit([signal("late", qty=0.1)]))
        await asyncio.sleep(0)
        stop.set()
        queue.closed = True
        stats = await run_stream(queue, ctx, stop, idle_poll_s=0.05)
        with pytest.raises(Exception, match="stopping"):
            await queue.submit([signal("after")])
        return await sent, stats

    answer, stats = asyncio.run(go())
    assert answer[0]["status"] == "FILLED" and stats.signals == 1


def test_the_label_names_signal_strategy_and_symbol():
    assert batch_label([signal("a", strategy="mom")]) == "a mom BTC/USDT"
    assert batch_label([signal(str(i)) for i in range(5)]) == "0 live BTC/USDT; 1 live BTC/USDT; 2 live BTC/USDT +2 more"


def test_orders_above_the_approval_threshold_are_refused_at_once_and_the_rest_go_on(tmp_path):
    from risk.approval import STREAM_REFUSAL, ApprovalPolicy

    db = f"sqlite:///{tmp_path / 'l.db'}"
    ctx = context(db)  # price 100: 1 unit is 100 of notional
    queue, stop = SignalQueue(), asyncio.Event()

    async def go():
        consumer = asyncio.ensure_future(run_stream(queue, ctx, stop, idle_poll_s=0.05,
                                                    approval=ApprovalPolicy(notional_above=500.0)))
        try:
            return await queue.submit([signal("small", qty=1.0), signal("large", qty=10.0)])
        finally:
            stop.set()
            await consumer

    small, large = asyncio.run(go())
    assert small["accepted"] and small["status"] == "FILLED"
    assert (large["accepted"], large["status"], large["step"]) == (False, "REJECTED", "approval")
    assert "by tradpal live run" in large["reason"] and STREAM_REFUSAL in large["reason"]
    ledger = Ledger(db)
    refused = ledger.frame("rejections")
    assert refused[["signal_id", "step"]].to_numpy().tolist() == [["large", "approval"]]
    orders = ledger.frame("orders").set_index("client_order_id")
    assert sorted(orders["status"]) == ["FILLED", "REJECTED"]  # the large order never reached the broker
    events = ledger.frame("audit_log")["event"].tolist()
    assert "order.approval_requested" in events and "order.refused" in events
    assert ctx.book.positions[SYM] == pytest.approx(1.0)


def test_under_load_batches_start_at_most_every_interval_and_gather_what_arrives():
    import time

    async def go():
        queue = SignalQueue(batch_interval_s=0.2)
        queue.enqueue([signal("a"), signal("b")])
        t0 = time.perf_counter()
        first = await queue.next_batch(1.0)  # nothing before it: at once
        queue.enqueue([signal("c")])
        asyncio.get_running_loop().call_later(0.1, queue.enqueue, [signal("d")])
        second = await queue.next_batch(1.0)  # the last batch held two: wait for the interval, gather d too
        t2 = time.perf_counter()
        alone = SignalQueue(batch_interval_s=0.2)
        alone.enqueue([signal("x")])
        await alone.next_batch(1.0)
        alone.enqueue([signal("y")])
        t3 = time.perf_counter()
        third = await alone.next_batch(1.0)  # one at a time: never waits
        return first, second, t2 - t0, third, time.perf_counter() - t3

    first, second, waited, third, alone_wait = asyncio.run(go())
    assert [p.signal_id for p in first] == ["a", "b"]
    assert [p.signal_id for p in second] == ["c", "d"] and waited >= 0.19
    assert [p.signal_id for p in third] == ["y"] and alone_wait < 0.1
