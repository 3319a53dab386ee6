"""Streaming live mode: one long-lived flow run serves the HTTP intake and runs the eight
steps as task runs on each batch of signals as they arrive (`tradpal.streaming`), so every
signal is visible step by step in the Prefect UI without paying a flow run's start-up.

    tradpal live run --port 8787 --symbol BTC/USDT [--price BTC/USDT=50000]

It stops on SIGINT/SIGTERM (or after ``duration_s``): the intake stops taking signals, the
queue drains, and the run is finished in the ledger and as a Completed flow run.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import pandas as pd
from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from risk.approval import policy_from
from tasks.prefect_tasks import task_caller
from tradpal.intake_server import start_intake
from tradpal.live import open_context, start_session
from tradpal.streaming import SignalQueue, run_stream

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


@flow(name="live-stream", persist_result=False, flow_run_name="live-stream {host}:{port}")
async def live_stream(symbols: list[str], host: str = "127.0.0.1", port: int = 8787,
                      prices: dict[str, float] | None = None, cash: float = 10_000.0, quote: str = "USDT",
                      database_url: str | None = None, max_batch: int = 256, batch_interval_s: float = 0.1,
                      idle_poll_s: float = 1.0,
                      duration_s: float | None = None, ready_file: str | None = None,
                      shared_account: bool = False) -> dict:
    """Serve the intake on ``host:port`` (0: a free port) and execute what arrives against
    the configured broker (``TRADPAL_BROKER``; the paper broker on the wall clock by
    default, at ``prices``). ``ready_file`` gets the port once the intake listens.
    ``shared_account``: other workers trade the same account (high availability: the same
    signals sent to each; the ledger's claim lets one of them order), so step 7 does not
    hold this worker's book against the account's balances."""
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
            approval = policy_from(session.settings, ctx.config.risk)  # above its threshold: refused
            consumer = asyncio.ensure_future(run_stream(queue, ctx, stop, make_call=task_caller,
                                                        idle_poll_s=idle_poll_s, on_batch=on_batch,
                                                        approval=approval))
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
