"""A streaming session restarted with an entry still working at the venue (the consumer
without Prefect, `tradpal.streaming.run_stream`, paper broker on the wall clock): the
first monitoring pass takes the entry back and brackets it when it fills."""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest

from brokers.base.clock import WallClock
from brokers.paper import PaperBroker
from tasks.context import Book, ExecutionContext, PipelineConfig
from tasks.orders import client_order_id
from tasks.recorder import LedgerRecorder
from tradpal.ledger import Ledger
from tradpal.live import last_prices
from tradpal.streaming import SignalQueue, run_stream

SYM = "BTC/USDT"


def context(ledger: Ledger, broker: PaperBroker, clock: WallClock, run_id: str) -> ExecutionContext:
    ledger.start_run("live", {}, run_id=run_id)
    ctx = ExecutionContext(broker=broker, clock=clock, config=PipelineConfig(), market=last_prices({SYM: 100.0}, clock.now()),
                           book=Book(cash=broker.cash, quote_currency="USDT"), recorder=None, run_id=run_id,
                           namespace="live", strategy="live")
    ctx.recorder = LedgerRecorder(ledger, run_id=run_id, namespace="live", venue=broker.name)
    ctx.config = PipelineConfig(rules={SYM: ctx.config.default_rules}, order_timeout_s=None)
    return ctx


def signal(sid: str, **extra) -> dict:
    return {"signal_id": sid, "timestamp": pd.Timestamp.now(tz="UTC").isoformat(), "symbol": SYM, "side": "buy",
            "quantity": 1.0, **extra}


async def until(cond, timeout: float = 5.0) -> bool:
    for _ in range(int(timeout / 0.02)):
        if cond():
            return True
        await asyncio.sleep(0.02)
    return cond()


def restart_with_a_working_entry(tmp_path, *, nudge: bool):
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    clock = WallClock()
    broker = PaperBroker(cash=10_000.0, quote_currency="USDT", clock=clock, name="paper-stream")
    broker.set_price(SYM, 100.0)
    entry, stop = client_order_id("w-1"), client_order_id("w-1", 1)

    async def first() -> None:  # a limit buy at 95 with its own stop 90 rests; the session stops
        ctx = context(ledger, broker, clock, "run-1")
        queue, halt = SignalQueue(), asyncio.Event()
        consumer = asyncio.ensure_future(run_stream(queue, ctx, halt, idle_poll_s=0.05))
        answer = await queue.submit([signal("w-1", order_type="limit", limit_price=95.0, stop_loss=90.0,
                                            reference_price=100.0)])
        assert answer[0]["status"] == "NEW"
        halt.set()
        await consumer

    async def second() -> ExecutionContext:  # a new session over the same venue and ledger
        ctx = context(ledger, broker, clock, "run-2")
        queue, halt = SignalQueue(), asyncio.Event()
        consumer = asyncio.ensure_future(run_stream(queue, ctx, halt, idle_poll_s=0.05))
        if nudge:  # any signal makes the stream run a monitoring pass
            await queue.submit([signal("w-other", quantity=0.01)])
        await asyncio.sleep(0.3)
        broker.set_price(SYM, 94.0)  # the entry fills at the venue
        await until(lambda: ledger.find_order(broker.name, stop) is not None)
        halt.set()
        await consumer
        return ctx

    asyncio.run(first())
    ctx = asyncio.run(second())
    return ledger, ctx, entry, stop


def test_a_restarted_stream_brackets_a_working_entry_at_its_first_pass(tmp_path):
    ledger, ctx, entry, stop = restart_with_a_working_entry(tmp_path, nudge=True)
    orders = ledger.frame("orders").set_index("client_order_id")
    assert (orders.loc[entry, "status"], orders.loc[entry, "filled_quantity"]) == ("FILLED", 1.0)
    assert (orders.loc[stop, "order_type"], orders.loc[stop, "stop_price"], orders.loc[stop, "status"]) == (
        "stop", 90.0, "NEW")
    assert ctx.book.positions[SYM] == pytest.approx(1.01)  # the entry's fill was booked by this session


def test_a_restarted_stream_without_new_signals_brackets_a_working_entry(tmp_path):
    # the stream runs one monitoring pass as it starts, signal or not
    ledger, _, entry, stop = restart_with_a_working_entry(tmp_path, nudge=False)
    assert ledger.find_order("paper-stream", stop) is not None
