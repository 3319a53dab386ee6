"""Live execution: a batch of signals (one event, or a file) through the eight tasks
against the configured broker (the paper broker on the wall clock by default)."""

from __future__ import annotations

import pandas as pd
from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from brokers.factory import paper_broker
from risk.approval import ApprovalForm, ApprovalPolicy, ApprovalRequest, Decision, policy_from, review
from tasks.context import ExecutionContext
from tasks.pipeline import run_batch
from tasks.prefect_tasks import task_caller
from tradpal.io import load_signals
from tradpal.live import last_prices, open_context, opening_book, reference_prices, start_session

__all__ = ["live_execution", "live_execution_from_file", "paper_broker",
           "last_prices", "opening_book", "reference_prices"]  # the last three: re-exported from tradpal.live


def live_summary(reports: pd.DataFrame, ctx: ExecutionContext) -> dict:
    fills = reports[reports["quantity"] > 0]
    rejected = int(sum(v for k, v in ctx.counts.items() if k.endswith(".rejected")))
    lines = ["# Live execution", "", f"- signals in: {ctx.counts.get('intake.out', 0) + ctx.counts.get('intake.rejected', 0)}",
             f"- fills: {len(fills)}", f"- rejected: {rejected}", f"- fees: {fills['fee'].sum():.8f}",
             f"- cash after: {ctx.book.cash:.8f} {ctx.book.quote_currency}",
             f"- run `{ctx.run_id}`"]
    return {"run_id": ctx.run_id, "n_fills": len(fills), "rejected": rejected, "ok": True,
            "final_cash": ctx.book.cash, "markdown": "\n".join(lines)}


async def ask_in_prefect_ui(request: ApprovalRequest, policy: ApprovalPolicy) -> Decision:
    """Pause this flow run with an approval form (the order, the checks it passed) until a
    person answers in the Prefect UI, or ``policy.timeout_s`` passes (then the run is set
    back to Running, and the order is cancelled by the caller)."""
    import math
    from datetime import UTC, datetime

    from prefect import get_client
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import apause_flow_run
    from prefect.input import RunInput
    from prefect.states import Running

    form = RunInput.subclass_from_base_model_type(ApprovalForm).with_initial_data(description=request.description())
    try:
        answer = await apause_flow_run(wait_for_input=form, timeout=math.ceil(policy.timeout_s),
                                       poll_interval=policy.poll_s, key=f"approval-{request.client_order_id}")
    except FlowPauseTimeout:
        async with get_client() as client:  # still Paused (or Failed by the server's expiry): carry on
            await client.set_flow_run_state(flow_run.id, Running(message="approval timed out"), force=True)
        return Decision.timed_out()
    if answer is None:  # resumed without the form's input (Prefect then normally fails the run): no answer
        return Decision.timed_out()
    async with get_client() as client:  # when: the moment the run was resumed, as the server saw it
        state = (await client.read_flow_run(flow_run.id)).state
    return Decision.from_form(answer, state.timestamp if state else datetime.now(UTC))


def approval_caller(call, policy: ApprovalPolicy):
    """Wrap a `run_batch` ``call``: before placement, orders above the approval threshold
    wait for a person (`risk.approval.review`); only approved ones are placed."""

    async def approving_call(step, frame: pd.DataFrame, ctx: ExecutionContext) -> pd.DataFrame:
        if step.name == "placement":
            frame = await review(frame, ctx, policy, lambda r: ask_in_prefect_ui(r, policy), ui_url=flow_run.ui_url)
        return await call(step, frame, ctx)

    return approving_call


def signals_label(signals: list[dict]) -> str:
    """What a run or task run is about: ``<signal id> <strategy> <symbol>`` for one
    signal (an event-triggered run), else ``<n> signals <symbols>``."""
    if len(signals) == 1:
        s = signals[0]
        return f"{s.get('signal_id', '?')} {s.get('strategy') or 'live'} {str(s.get('symbol', '?')).upper()}"
    symbols = sorted({str(s.get("symbol", "?")).upper() for s in signals})
    return f"{len(signals)} signals {','.join(symbols[:3])}{'…' if len(symbols) > 3 else ''}"


def _run_name() -> str:
    return f"live {signals_label(flow_run.parameters.get('signals') or [])}"


@flow(name="live-execution", flow_run_name=_run_name, persist_result=False)
async def live_execution(signals: list[dict], prices: dict[str, float] | None = None, cash: float = 10_000.0,
                         quote: str = "USDT", database_url: str | None = None) -> dict:
    """Run ``signals`` (records with timestamp, symbol, side, quantity, ...) through the
    eight steps against the configured broker (``TRADPAL_BROKER``; the paper broker on
    the wall clock by default). The run first reconciles the ledger with the broker.
    ``prices`` and ``cash`` only matter for the paper broker; a venue's reference
    prices come from its tickers and its cash from its account."""
    prices = {k.upper(): float(v) for k, v in (prices or {}).items()}
    for s in signals:  # a signal's own reference price prices its symbol when none is given (an event)
        if s.get("reference_price") and str(s.get("symbol", "")).upper() not in prices:
            prices[str(s["symbol"]).upper()] = float(s["reference_price"])
    session = start_session(cash=cash, quote=quote, prices=prices, database_url=database_url,
                            params={"signals": len(signals), "prices": prices},
                            flow_run_id=str(flow_run.id) if flow_run.id else None)
    try:
        ctx = await open_context(session, prices, [str(s.get("symbol", "")) for s in signals])
        call, approval = task_caller(signals_label(signals)), policy_from(session.settings, ctx.config.risk)
        if approval.enabled:
            call = approval_caller(call, approval)
        reports = await run_batch(pd.DataFrame(signals), ctx, call=call)
        while ctx.pending_signals:  # raised by the pipeline itself (a loss-limit flatten): through the steps
            pending, ctx.pending_signals = pd.DataFrame(ctx.pending_signals), []
            reports = pd.concat([reports, await run_batch(pending, ctx, call=call)], ignore_index=True)
    except BaseException as exc:
        session.fail(exc)
        raise
    finally:
        session.stopped()
        await session.broker.close()
    summary = live_summary(reports, ctx)
    await create_markdown_artifact(key="live-summary", markdown=summary["markdown"])
    await create_table_artifact(key="live-executions", table=[
        {"signal_id": r.signal_id, "symbol": r.symbol, "side": r.side, "type": r.exec_type,
         "quantity": r.quantity, "price": r.price, "fee": r.fee, "slippage_bps": r.slippage_bps}
        for r in reports.itertuples()])
    session.ledger.finish_run(session.run_id, "completed", {k: v for k, v in summary.items() if k != "markdown"})
    return summary


async def live_execution_from_file(signals: str, prices: dict[str, float], cash: float, quote: str,
                                   database_url: str | None) -> dict:
    frame = load_signals(signals)
    records = frame.assign(timestamp=frame["timestamp"].astype(str)).to_dict("records")
    records = [{k: v for k, v in r.items() if v == v} for r in records]  # drop NaN
    return await live_execution(records, prices=prices, cash=cash, quote=quote, database_url=database_url)
