"""Human approval in the streaming session (`tradpal live run`) on a real Prefect API: an
order above the threshold is held (its sender answered HELD at once) while the stream goes
on; its own subflow run `stream-approval [signal id]` pauses with the approval form, and a
person answers through the API exactly as the UI does (`resume_flow_run(..., run_input=...)`),
or does not. SIGTERM while an order is held rejects it."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from uuid import UUID

import httpx
import pandas as pd

from tests.conftest import start_live_stream
from tradpal.ledger import Ledger

BIG = 0.1  # 5,000 at 50,000: above the 1,000 threshold
SMALL = 0.01  # 500: placed at once


def sig(sid: str, qty: float) -> dict:
    return {"timestamp": pd.Timestamp.now(tz="UTC").isoformat(), "symbol": "BTC/USDT", "side": "buy",
            "quantity": qty, "signal_id": sid, "strategy": "mom"}


def audit(db: str, event: str) -> pd.DataFrame:
    frame = Ledger(db, migrate=False).frame("audit_log")
    return frame[frame["event"] == event]


def order_of(db: str, sid: str) -> pd.Series:
    ledger = Ledger(db, migrate=False)
    orders, signals = ledger.frame("orders"), ledger.frame("signals")
    mine = orders[orders["signal_pk"].isin(signals.loc[signals["signal_id"] == sid, "id"])]
    assert len(mine) == 1, mine  # one order per signal, however it ends
    return mine.iloc[0]


async def until(fn, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value is not None and value is not False:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def approval_run(db: str, sid: str):
    """The held order's approval flow run, once Paused in Prefect with its form (found
    through the ledger)."""
    from prefect import get_client

    opened = await until(lambda: (lambda r: r["flow_run_id"].iloc[0] if len(r) else None)(
        audit(db, "order.approval_opened").pipe(lambda a: a[a["payload"].map(lambda p: p["signal_id"]) == sid])),
        f"the approval run of {sid}")
    async with get_client() as client:
        for _ in range(600):
            run = await client.read_flow_run(UUID(opened))
            if run.state.is_paused():  # and the form saved (just after the pause): what the UI shows
                keys = run.state.state_details.run_input_keyset
                try:
                    await client.read_flow_run_input(run.id, keys["schema"])
                    return run
                except Exception:  # noqa: BLE001 - not saved yet
                    pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"the approval run of {sid} never paused with its form: {run.state}")


async def answer(flow_run_id, run_input: dict) -> None:
    from prefect.flow_runs import aresume_flow_run

    await aresume_flow_run(flow_run_id, run_input=run_input)


async def read_run(flow_run_id):
    from prefect import get_client

    async with get_client() as client:
        return await client.read_flow_run(flow_run_id)


async def stop(run) -> dict:
    os.kill(os.getpid(), signal.SIGTERM)  # the stream's handler: drain, settle what is held, complete
    return await run


def test_held_order_is_answered_at_once_then_approved_and_placed(prefect_api, tmp_path, approval_env):
    received = approval_env
    db = f"sqlite:///{tmp_path / 'ledger.db'}"

    async def go():
        from prefect import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        run, url = await start_live_stream(tmp_path, db)
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            held = (await client.post("/signals", json=sig("big", BIG))).json()["results"][0]
            placed_before_answer = order_of(db, "big")["status"]
            paused = await approval_run(db, "big")
            async with get_client() as c:
                keys = paused.state.state_details.run_input_keyset
                description = (await c.read_flow_run_input(paused.id, keys["description"]))
            await answer(paused.id, {"approve": True, "approver": "alice", "comment": "desk ok"})
            await until(lambda: order_of(db, "big")["status"] == "FILLED", "the approved order filled")
        summary = await stop(run)
        async with get_client() as c:
            parent = await c.read_task_run(paused.parent_task_run_id)  # a subflow: its parent is the stream
            stream_run = await c.read_flow_run(parent.flow_run_id)
            for _ in range(150):  # task runs reach the API as events, recorded a moment after the run ends
                tasks = await c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[stream_run.id])))
                names = [t.name for t in tasks]
                if sum(n.startswith("4-pre-checks [big") for n in names) >= 2 and any(
                        n.startswith("8-analysis [big") for n in names):
                    break
                await asyncio.sleep(0.2)
        return held, placed_before_answer, paused, description, summary, stream_run, tasks, await read_run(paused.id)

    held, before, paused, description, summary, stream_run, tasks, after = asyncio.run(go())
    assert held["accepted"] and held["status"] == "HELD" and held["step"] == "approval"
    assert "stream-approval [big]" in held["detail"] and held["client_order_id"]
    assert before == "CREATED"  # answered while the order waits, not placed
    assert paused.name == "stream-approval [big]"
    for part in ("big", "buy 0.1 BTC/USDT", "5,000.00", "threshold of 1,000.00", "Risk checks passed"):
        assert part in description, part
    assert after.state.is_completed()
    assert stream_run.name.startswith("live-stream") and stream_run.state.is_completed()
    names = [t.name for t in tasks]
    # held before placement (nothing left to place: step 5 ran in line, no task run), then placed
    assert sum(n.startswith("5-placement [big mom BTC/USDT]") for n in names) == 1, names
    assert sum(n.startswith("4-pre-checks [big mom BTC/USDT]") for n in names) == 2, names  # checked again
    assert summary["held"] == 1 and summary["approved"] == 1 and summary["n_fills"] == 1

    big = order_of(db, "big")
    assert big["status"] == "FILLED" and big["broker_order_id"].startswith("paper")
    approved = audit(db, "order.approved")
    assert len(approved) == 1
    row = approved.iloc[0]
    assert row["payload"]["decided_by"] == "alice" and row["payload"]["comment"] == "desk ok"
    assert row["flow_run_id"] == str(paused.id)  # the approval run wrote the decision
    assert audit(db, "order.approval_requested")["flow_run_id"].iloc[0] == str(stream_run.id)
    assert Ledger(db, migrate=False).frame("rejections").empty
    titles = [r["json"]["title"] for r in received]
    assert titles == ["TradPal approval needed: buy 0.1 BTC/USDT (market, notional 5,000.00)",
                      "TradPal order approved: buy 0.1 BTC/USDT (market, notional 5,000.00)"]
    assert str(paused.id) in received[0]["json"]["message"]  # where to answer


def test_refused_order_is_rejected_and_never_placed(prefect_api, tmp_path, approval_env):
    received = approval_env
    db = f"sqlite:///{tmp_path / 'ledger.db'}"

    async def go():
        run, url = await start_live_stream(tmp_path, db)
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            held = (await client.post("/signals", json=sig("big", BIG))).json()["results"][0]
            paused = await approval_run(db, "big")
            await answer(paused.id, {"approve": False, "approver": "bob", "comment": "too large today"})
            await until(lambda: order_of(db, "big")["status"] == "REJECTED", "the refused order rejected")
            later = (await client.post("/signals", json=sig("small", SMALL))).json()["results"][0]
        return held, later, await stop(run), await read_run(paused.id)

    held, later, summary, after = asyncio.run(go())
    assert held["status"] == "HELD" and later["status"] == "FILLED"
    assert summary["held"] == 1 and summary["approved"] == 0 and summary["n_fills"] == 1
    big = order_of(db, "big")
    assert big["broker_order_id"] is None and big["reason"].startswith("approval refused by bob at ")
    rej = Ledger(db, migrate=False).frame("rejections")
    assert rej[["signal_id", "step"]].to_numpy().tolist() == [["big", "approval"]]
    assert rej["reason"].iloc[0].endswith(": too large today")
    row = audit(db, "order.refused").iloc[0]
    assert row["payload"]["decided_by"] == "bob" and row["flow_run_id"] == str(after.id)
    assert after.state.is_completed()
    assert [r["json"]["title"].split(":")[0] for r in received] == ["TradPal approval needed", "TradPal order refused"]


def test_unanswered_order_is_cancelled_after_the_timeout(prefect_api, tmp_path, approval_env, monkeypatch):
    received = approval_env
    monkeypatch.setenv("TRADPAL_APPROVAL_TIMEOUT_S", "2")
    db = f"sqlite:///{tmp_path / 'ledger.db'}"

    async def go():
        run, url = await start_live_stream(tmp_path, db)
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            t0 = time.monotonic()
            held = (await client.post("/signals", json=sig("big", BIG))).json()["results"][0]
            paused = await approval_run(db, "big")
            await until(lambda: order_of(db, "big")["status"] == "REJECTED", "the unanswered order cancelled")
            waited = time.monotonic() - t0
        return held, waited, await stop(run), await read_run(paused.id)

    held, waited, summary, after = asyncio.run(go())
    assert held["status"] == "HELD" and waited >= 2
    assert summary["held"] == 1 and summary["approved"] == 0 and summary["n_fills"] == 0
    rej = Ledger(db, migrate=False).frame("rejections")
    assert rej[["signal_id", "step"]].to_numpy().tolist() == [["big", "approval"]]
    assert rej["reason"].iloc[0].startswith("approval timed out: no answer within 2 s")
    row = audit(db, "order.approval_timeout").iloc[0]
    assert row["payload"]["decided_by"] is None and row["flow_run_id"] == str(after.id)
    assert after.state.is_completed()
    assert received[-1]["json"]["title"].startswith("TradPal order timed out")


def test_other_signals_flow_while_one_waits_and_a_stop_rejects_what_is_held(prefect_api, tmp_path, approval_env):
    from prefect.utilities.engine import is_prefect_sigterm_handler_installed

    received = approval_env
    db = f"sqlite:///{tmp_path / 'ledger.db'}"

    async def go():
        run, url = await start_live_stream(tmp_path, db)
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            held = (await client.post("/signals", json=sig("big", BIG))).json()["results"][0]
            paused = await approval_run(db, "big")
            bridge = is_prefect_sigterm_handler_installed()
            flowing = [(await client.post("/signals", json=sig(f"s{i}", SMALL))).json()["results"][0]
                       for i in range(3)]
            again = (await client.post("/signals", json=sig("big", BIG))).json()["results"][0]
            still = (await read_run(paused.id)).state, order_of(db, "big")["status"]
        summary = await stop(run)
        return held, bridge, flowing, again, still, summary, await read_run(paused.id)

    held, bridge, flowing, again, (state, status), summary, after = asyncio.run(go())
    assert held["status"] == "HELD"
    assert not bridge  # the approval run left the stream's SIGTERM handler alone: a SIGTERM drains the stream
    assert [a["status"] for a in flowing] == ["FILLED"] * 3  # placed while "big" waits
    assert state.is_paused() and status == "CREATED"  # ... and it did wait meanwhile
    assert again["status"] == "REJECTED" and "already received" in again["reason"]  # one order per signal id
    assert summary["ok"] and summary["held"] == 1 and summary["approved"] == 0 and summary["n_fills"] == 3

    big = order_of(db, "big")
    assert big["status"] == "REJECTED" and big["broker_order_id"] is None
    assert "the stream stopped while the order awaited approval" in big["reason"]
    rej = Ledger(db, migrate=False).frame("rejections")
    assert rej.loc[rej["step"] == "approval", "signal_id"].tolist() == ["big"]
    assert len(audit(db, "order.approval_cancelled")) == 1
    assert after.state.is_cancelled() and after.state.message.startswith("approval cancelled")
    assert received[-1]["json"]["title"].startswith("TradPal order cancelled")


def test_refuse_above_approval_refuses_at_once(prefect_api, tmp_path, approval_env):
    """`tradpal live run --refuse-above-approval`: no person asked, no approval run."""
    received = approval_env
    db = f"sqlite:///{tmp_path / 'ledger.db'}"

    async def go():
        run, url = await start_live_stream(tmp_path, db, approval_hold=False)
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            big = (await client.post("/signals", json=sig("big", BIG))).json()["results"][0]
        return big, await stop(run)

    big, summary = asyncio.run(go())
    assert (big["accepted"], big["status"], big["step"]) == (False, "REJECTED", "approval")
    assert "by tradpal live run" in big["reason"]
    assert summary["held"] == 0 and summary["rejected"] == 1
    assert order_of(db, "big")["status"] == "REJECTED" and audit(db, "order.approval_opened").empty
    assert [r["json"]["title"].split(":")[0] for r in received] == ["TradPal approval needed", "TradPal order refused"]
