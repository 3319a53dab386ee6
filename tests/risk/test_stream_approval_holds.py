"""The stream's approval holds without Prefect (`tradpal.streaming.ApprovalHolds`): the person
is a future the test answers. The real Prefect path is tests/flows/test_stream_approval.py."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from risk.approval import ApprovalPolicy, Decision
from tests.tradpal.test_streaming import SYM, context, signal
from tradpal.ledger import Ledger
from tradpal.streaming import SignalQueue, run_stream

POLICY = ApprovalPolicy(notional_above=5500.0, timeout_s=60)  # at 100: above 55 units


class Person:
    """The approval runs as futures: ``answer(sid, decision)``; a stop ends the wait."""

    def __init__(self, fail: bool = False) -> None:
        self.asked: dict[str, asyncio.Future] = {}
        self.fail = fail

    async def ask(self, holds, held) -> None:
        if self.fail:
            raise ConnectionError("no Prefect API")
        holds.opened(held, None)
        answer = self.asked[held.request.signal_id] = asyncio.get_running_loop().create_future()
        stopping = asyncio.ensure_future(held.stop.wait())
        await asyncio.wait({answer, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if answer.done():
            holds.settle(held, answer.result())

    async def answer(self, sid: str, decision: Decision) -> None:
        while sid not in self.asked:
            await asyncio.sleep(0.005)
        self.asked[sid].set_result(decision)


async def until(fn, what: str):
    for _ in range(1000):
        if fn():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def approved(by: str = "alice") -> Decision:
    return Decision("approved", datetime.now(UTC), by)


def status(db: str, sid: str) -> str | None:
    ledger = Ledger(db, migrate=False)
    orders, signals = ledger.frame("orders"), ledger.frame("signals")
    mine = orders[orders["signal_pk"].isin(signals.loc[signals["signal_id"] == sid, "id"])]
    assert len(mine) <= 1
    return mine["status"].iat[0] if len(mine) else None


def events(db: str) -> list[str]:
    return Ledger(db, migrate=False).frame("audit_log")["event"].tolist()


def stream(ctx, person: Person):
    queue, stop = SignalQueue(), asyncio.Event()
    consumer = asyncio.ensure_future(run_stream(queue, ctx, stop, idle_poll_s=0.05, approval=POLICY, ask=person.ask))
    return queue, stop, consumer


def test_a_held_order_waits_while_others_go_then_is_checked_again_and_placed(tmp_path):
    db = f"sqlite:///{tmp_path / 'l.db'}"
    ctx, person = context(db), Person()

    async def go():
        queue, stop, consumer = stream(ctx, person)
        (held,) = await queue.submit([signal("big", qty=60.0)])
        (small,) = await queue.submit([signal("small", qty=1.0)])
        waiting = status(db, "big")
        await person.answer("big", approved())
        await until(lambda: status(db, "big") == "FILLED", "the approved order filled")
        stop.set()
        return held, small, waiting, await consumer

    held, small, waiting, stats = asyncio.run(go())
    assert held["status"] == "HELD" and held["accepted"] and small["status"] == "FILLED"
    assert waiting == "CREATED"
    assert stats.held == 1 and stats.approved == 1 and stats.signals == 2 and stats.acked == 2
    assert ctx.book.positions[SYM] == pytest.approx(61.0)
    evs = events(db)
    assert evs.count("order.approval_requested") == 1 and evs.count("order.approved") == 1
    assert evs.count("order.placed") == 2


def test_an_approved_order_the_account_can_no_longer_pay_is_rejected_at_the_checks(tmp_path):
    """Held, the order reserved nothing: the checks of step 4 run again when it comes back."""
    db = f"sqlite:///{tmp_path / 'l.db'}"
    ctx, person = context(db), Person()

    async def go():
        queue, stop, consumer = stream(ctx, person)
        (held,) = await queue.submit([signal("big", qty=60.0)])  # 6,000 of 10,000
        (spent,) = await queue.submit([signal("spend", qty=50.0)])  # 5,000: placed, 5,000 left
        await person.answer("big", approved())
        await until(lambda: status(db, "big") == "REJECTED", "the approved order refused by the checks")
        stop.set()
        return held, spent, await consumer

    held, spent, stats = asyncio.run(go())
    assert held["status"] == "HELD" and spent["status"] == "FILLED"
    rej = Ledger(db, migrate=False).frame("rejections")
    assert rej[["signal_id", "step"]].to_numpy().tolist() == [["big", "pre_checks"]]
    assert "insufficient funds" in rej["reason"].iat[0]
    assert stats.approved == 1 and ctx.book.positions[SYM] == pytest.approx(50.0)


def test_a_refusal_rejects_the_order_at_step_approval(tmp_path):
    db = f"sqlite:///{tmp_path / 'l.db'}"
    ctx, person = context(db), Person()

    async def go():
        queue, stop, consumer = stream(ctx, person)
        await queue.submit([signal("big", qty=60.0)])
        await person.answer("big", Decision("refused", datetime.now(UTC), "bob", "no"))
        await until(lambda: status(db, "big") == "REJECTED", "the refused order rejected")
        stop.set()
        return await consumer

    stats = asyncio.run(go())
    rej = Ledger(db, migrate=False).frame("rejections")
    assert rej[["signal_id", "step"]].to_numpy().tolist() == [["big", "approval"]]
    assert rej["reason"].iat[0].startswith("approval refused by bob")
    assert stats.held == 1 and stats.approved == 0 and stats.rejected == 1 and not ctx.book.positions.get(SYM)


def test_stopping_rejects_what_is_held_and_a_later_answer_changes_nothing(tmp_path):
    db = f"sqlite:///{tmp_path / 'l.db'}"
    ctx, person = context(db), Person()

    async def go():
        queue, stop, consumer = stream(ctx, person)
        await queue.submit([signal("big", qty=60.0)])
        await until(lambda: "big" in person.asked, "the ask")
        stop.set()
        queue.closed = True
        stats = await consumer
        person.asked["big"].set_result(approved())  # too late: the stream has ended
        await asyncio.sleep(0.05)
        return stats

    stats = asyncio.run(go())
    assert status(db, "big") == "REJECTED"
    rej = Ledger(db, migrate=False).frame("rejections")
    assert rej["signal_id"].tolist() == ["big"] and rej["step"].iat[0] == "approval"
    assert "the stream stopped while the order awaited approval" in rej["reason"].iat[0]
    evs = events(db)
    assert evs.count("order.approval_cancelled") == 1 and "order.approved" not in evs
    assert stats.approved == 0 and stats.rejected == 1


def test_an_approval_that_cannot_be_asked_rejects_the_order(tmp_path):
    db = f"sqlite:///{tmp_path / 'l.db'}"
    ctx = context(db)

    async def go():
        queue, stop, consumer = stream(ctx, Person(fail=True))
        (held,) = await queue.submit([signal("big", qty=60.0)])
        await until(lambda: status(db, "big") == "REJECTED", "the order rejected")
        (small,) = await queue.submit([signal("small", qty=1.0)])  # the stream goes on
        stop.set()
        return held, small, await consumer

    held, small, _ = asyncio.run(go())
    assert held["status"] == "HELD" and small["status"] == "FILLED"
    reason = Ledger(db, migrate=False).frame("rejections")["reason"].iat[0]
    assert reason.startswith("approval cancelled at ") and "could not be asked: ConnectionError: no Prefect API" in reason


def test_a_stream_that_dies_while_holding_leaves_the_order_to_the_next_reconciliation(tmp_path, monkeypatch):
    """SIGKILL: `close` never runs, the order stays CREATED (never sent); the next live run's
    reconciliation rejects it as never having reached the venue: one outcome, never placed."""
    from tasks.reconcile import NEVER_REACHED, reconcile
    from tradpal.ledger import Provenance
    from tradpal.streaming import ApprovalHolds

    db = f"sqlite:///{tmp_path / 'l.db'}"
    ctx, person = context(db), Person()
    monkeypatch.setattr(ApprovalHolds, "close", lambda self, reason="": None)  # the process is gone

    async def go():
        queue, stop, consumer = stream(ctx, person)
        await queue.submit([signal("big", qty=60.0)])
        await until(lambda: "big" in person.asked, "the ask")
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
        left = status(db, "big")
        ledger = Ledger(db, migrate=False)
        ledger.start_run("live", {}, run_id="next-run")
        report = await reconcile(ledger, ctx.broker, prov=Provenance(run_id="next-run"), flow_runs=None)
        return left, report

    left, report = asyncio.run(go())
    assert left == "CREATED" and len(report.rejected) == 1
    assert status(db, "big") == "REJECTED"
    rej = Ledger(db, migrate=False).frame("rejections")
    assert rej["signal_id"].tolist() == ["big"] and NEVER_REACHED in rej["reason"].iat[0]
