"""Streaming live mode: one long-lived flow run serves the HTTP intake and runs the eight
steps as task runs on each batch of signals as they arrive (`tradpal.streaming`), so every
signal is visible step by step in the Prefect UI without paying a flow run's start-up.

    tradpal live run --port 8787 --symbol BTC/USDT [--price BTC/USDT=50000]

It stops on SIGINT/SIGTERM (or after ``duration_s``): the intake stops taking signals, the
queue drains, and the run is finished in the ledger and as a Completed flow run.

With an approval threshold (`risk.approval`), an order above it is held without holding the
stream (`tradpal.streaming.ApprovalHolds`): its sender is answered ``HELD``, and a subflow
run ``stream-approval [signal id]`` pauses with the approval form of `live-execution` while
the other signals go on. Approved: the order goes back into the stream (steps 4-8, task
runs of the stream); refused or unanswered: rejected at step ``approval``. Orders still
held when the stream stops are rejected ("the stream stopped while the order awaited
approval") and their approval runs end Cancelled. ``approval_hold=False``: refused at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import signal
import threading
from pathlib import Path

import pandas as pd
from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from prefect.states import Cancelled

from flows.live_execution import ask_in_prefect_ui
from risk.approval import policy_from
from tasks.prefect_tasks import task_caller
from tradpal.intake_server import start_intake
from tradpal.live import open_context, start_session
from tradpal.streaming import ApprovalHolds, Held, SignalQueue, run_stream

ARTIFACT_ROWS = 1000  # a long stream's tables show their last rows; the ledger has all


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event):
    """SIGINT/SIGTERM set ``stop`` (a graceful drain) while the stream runs."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


_ASKING: dict[str, tuple[ApprovalHolds, Held, asyncio.AbstractEventLoop]] = {}  # by client order id


async def on_stream(loop: asyncio.AbstractEventLoop, fn, *args):
    """``fn(*args)`` on the stream's event loop (the holds, the ledger and the queue live
    there), from an approval run's thread."""
    async def call():
        return fn(*args)

    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(call(), loop))


@flow(name="stream-approval", persist_result=False, flow_run_name="stream-approval [{signal_id}]")
async def stream_approval(signal_id: str, client_order_id: str, order: str):
    """One held order of the stream waiting for a person: pauses with the approval form
    (`flows.live_execution.ask_in_prefect_ui`) and settles the order with the answer, or
    ends Cancelled if the stream stops first. A subflow of `live_stream`, started by
    `ask_in_approval_run` (``order``: its headline, for the UI)."""
    asking_for = _ASKING.get(client_order_id)
    if asking_for is None:  # the stream has ended meanwhile: it rejected the order as it stopped
        return Cancelled(message="approval cancelled: the stream has ended")
    holds, held, loop = asking_for
    if held.settled:
        return Cancelled(message=f"approval cancelled: {held.stop_reason or 'no longer held'}")
    await on_stream(loop, holds.opened, held, str(flow_run.id), flow_run.ui_url)

    async def stopped() -> None:  # held.stop belongs to the stream's loop: look at it from here
        while not held.stop.is_set():
            await asyncio.sleep(0.1)

    asking = asyncio.ensure_future(ask_in_prefect_ui(held.request, holds.policy))
    stopping = asyncio.ensure_future(stopped())
    try:
        await asyncio.wait({asking, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if asking.done():
        decision = asking.result()
        if await on_stream(loop, holds.settle, held, decision):
            return {"decision": decision.outcome, "by": decision.by, "at": decision.at.isoformat()}
    else:  # the stream stops: the run leaves its pause and ends Cancelled
        asking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asking
        from prefect import get_client
        from prefect.states import Running

        async with get_client() as client:
            await client.set_flow_run_state(flow_run.id, Running(message="the stream stops"), force=True)
    return Cancelled(message=f"approval cancelled: {held.stop_reason}")


async def ask_in_approval_run(holds: ApprovalHolds, held: Held) -> None:
    """`tradpal.streaming.Ask`: the held order's own approval run (`stream_approval`), a
    subflow of the stream run in a thread of its own. Not on the stream's loop: Prefect's
    engine puts its own SIGTERM handler in place for a flow run in the main thread (it
    raises `TerminationSignal` wherever the loop is: a SIGTERM then crashes the stream
    instead of draining it); in another thread it cannot."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()
    context = contextvars.copy_context()  # the stream's flow run: the approval run is its subflow

    def deliver(state, exc) -> None:
        if not done.done():
            done.set_exception(exc) if exc is not None else done.set_result(state)

    def run() -> None:
        state, error = None, None
        try:
            state = context.run(lambda: asyncio.run(stream_approval(
                held.request.signal_id, held.client_order_id, held.request.headline(), return_state=True)))
        except BaseException as exc:  # noqa: BLE001 - handed to the stream
            error = exc
        with contextlib.suppress(RuntimeError):  # the stream's loop is closed: nobody waits
            loop.call_soon_threadsafe(deliver, state, error)

    _ASKING[held.client_order_id] = (holds, held, loop)
    try:
        threading.Thread(target=run, name=f"approval {held.client_order_id}", daemon=True).start()
        state = await done
    finally:
        _ASKING.pop(held.client_order_id, None)
    if not held.settled:
        raise RuntimeError(f"the approval run ended {state.type.value}: {state.message}")


@flow(name="live-stream", persist_result=False, flow_run_name="live-stream {host}:{port}")
async def live_stream(symbols: list[str], host: str = "127.0.0.1", port: int = 8787,
                      prices: dict[str, float] | None = None, cash: float = 10_000.0, quote: str = "USDT",
                      database_url: str | None = None, max_batch: int = 256, batch_interval_s: float = 0.1,
                      idle_poll_s: float = 1.0,
                      duration_s: float | None = None, ready_file: str | None = None,
                      shared_account: bool = False, approval_hold: bool = True) -> dict:
    """Serve the intake on ``host:port`` (0: a free port) and execute what arrives against
    the configured broker (``TRADPAL_BROKER``; the paper broker on the wall clock by
    default, at ``prices``). ``ready_file`` gets the port once the intake listens.
    ``shared_account``: other workers trade the same account (high availability: the same
    signals sent to each; the ledger's claim lets one of them order), so step 7 does not
    hold this worker's book against the account's balances. ``approval_hold``: orders above
    the approval threshold wait for a person in their own approval run (False: refused at
    once)."""
    symbols = [s.strip().upper() for s in symbols]
    prices = {k.upper(): float(v) for k, v in (prices or {}).items()}
    session = start_session(cash=cash, quote=quote, prices=prices, database_url=database_url,
                            params={"mode": "stream", "symbols": symbols},
                            flow_run_id=str(flow_run.id) if flow_run.id else None)
    ledger, run_id = session.ledger, session.run_id
    queue, stop = SignalQueue(max_batch=max_batch, batch_interval_s=batch_interval_s), asyncio.Event()
    server = None
    try:
        ctx = await open_context(session, prices, symbols, verify_book=not shared_account)
        fills: list[pd.DataFrame] = []

        def on_batch(reports: pd.DataFrame) -> None:
            fills.append(reports)
            if ctx.pending_signals:  # a loss-limit flatten: queued now, like any signal, even while stopping
                pending, ctx.pending_signals = ctx.pending_signals, []
                queue.enqueue([{**p, "timestamp": p["timestamp"].isoformat(),
                                "received_at": p["received_at"].isoformat()} for p in pending], internal=True)
        with stop_on_signals(stop):
            server = await start_intake(host, port, queue.submit)
            if ready_file:
                Path(ready_file).write_text(str(server.port))
            print(f"live-stream: intake on http://{host}:{server.port}/signals (run {run_id}); Ctrl-C stops",
                  flush=True)
            if duration_s is not None:
                asyncio.get_running_loop().call_later(duration_s, stop.set)
            approval = policy_from(session.settings, ctx.config.risk)  # above its threshold: held (or refused)
            consumer = asyncio.ensure_future(run_stream(queue, ctx, stop, make_call=task_caller,
                                                        idle_poll_s=idle_poll_s, on_batch=on_batch,
                                                        approval=approval,
                                                        ask=ask_in_approval_run if approval_hold else None))
            await asyncio.wait([consumer, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
            queue.closed = True  # stopping (or the consumer failed): no new signals; the queue drains
            stats = await consumer
    except BaseException as exc:
        session.fail(exc)
        raise
    finally:
        session.stopped()
        if server is not None:
            await server.stop()
        await session.broker.close()
    reports = pd.concat(fills, ignore_index=True) if fills else pd.DataFrame(columns=["quantity", "fee"])
    filled = reports[reports["quantity"] > 0]
    summary = {"run_id": run_id, **stats.as_dict(), "n_fills": len(filled), "fees": float(filled["fee"].sum()),
               "final_cash": ctx.book.cash, "ok": True}
    await create_markdown_artifact(key="live-stream-summary", markdown="\n".join(
        ["# Live stream", "", *(f"- {k}: {v}" for k, v in summary.items() if k != "ok")]))
    if len(reports):
        shown = reports.tail(ARTIFACT_ROWS)
        await create_table_artifact(key="live-stream-executions", description=(
            f"the last {len(shown)} of {len(reports)} execution reports"), table=[
            {"signal_id": r.signal_id, "symbol": r.symbol, "side": r.side, "type": r.exec_type, "quantity": r.quantity,
             "price": r.price, "fee": r.fee, "slippage_bps": r.slippage_bps} for r in shown.itertuples()])
    refused = ledger.frame("rejections", run_id=run_id)
    if len(refused):
        counts = refused.groupby(["step", "reason"]).size().reset_index(name="signals")
        await create_table_artifact(key="live-stream-risk-checks", description="signals refused, by step and reason",
                                    table=counts.sort_values("signals", ascending=False).head(ARTIFACT_ROWS)
                                    .to_dict("records"))
    ledger.finish_run(run_id, "completed", summary)
    return summary
