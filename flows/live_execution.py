"""Live execution: a batch of signals (one event, or a file) through the eight tasks
against the configured broker (the paper broker on the wall clock by default)."""

from __future__ import annotations

import uuid

import pandas as pd
from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from brokers.base.clock import WallClock
from brokers.paper import PaperBroker
from risk.alerts import alerter_from_env
from tasks.context import Book, ExecutionContext, MarketData, PipelineConfig
from tasks.pipeline import run_batch
from tasks.prefect_tasks import task_caller
from tasks.recorder import LedgerRecorder
from tradpal.config import load_settings
from tradpal.io import load_signals
from tradpal.ledger import Ledger


def paper_broker(cash: float, quote: str, prices: dict[str, float], clock: WallClock) -> PaperBroker:
    broker = PaperBroker(cash=cash, quote_currency=quote, clock=clock, name="paper")
    for symbol, price in prices.items():
        broker.set_price(symbol, price)
    return broker


def live_summary(reports: pd.DataFrame, ctx: ExecutionContext) -> dict:
    fills = reports[reports["quantity"] > 0]
    rejected = int(sum(v for k, v in ctx.counts.items() if k.endswith(".rejected")))
    lines = ["# Live execution", "", f"- signals in: {ctx.counts.get('intake.out', 0) + ctx.counts.get('intake.rejected', 0)}",
             f"- fills: {len(fills)}", f"- rejected: {rejected}", f"- fees: {fills['fee'].sum():.8f}",
             f"- cash after: {ctx.book.cash:.8f} {ctx.book.quote_currency}",
             f"- run `{ctx.run_id}`"]
    return {"run_id": ctx.run_id, "n_fills": len(fills), "rejected": rejected, "ok": True,
            "final_cash": ctx.book.cash, "markdown": "\n".join(lines)}


def last_prices(prices: dict[str, float], now: pd.Timestamp) -> MarketData:
    """Market data of one flat bar per symbol at its last price (reference prices, marks)."""
    return MarketData({s: pd.DataFrame({"timestamp": [now - pd.Timedelta(days=1)], "open": [p], "high": [p],
                                        "low": [p], "close": [p], "volume": [0.0]}) for s, p in prices.items()})


@flow(name="live-execution", persist_result=False)
async def live_execution(signals: list[dict], prices: dict[str, float] | None = None, cash: float = 10_000.0,
                         quote: str = "USDT", database_url: str | None = None) -> dict:
    """Run ``signals`` (records with timestamp, symbol, side, quantity, ...) through the
    eight steps against the paper broker on the wall clock."""
    prices = {k.upper(): float(v) for k, v in (prices or {}).items()}
    ledger = Ledger(database_url or load_settings().ledger_url())
    run_id = uuid.uuid4().hex
    ledger.start_run("live", {"signals": len(signals), "prices": prices}, run_id=run_id,
                     flow_run_id=str(flow_run.id) if flow_run.id else None)
    clock = WallClock()
    broker = paper_broker(cash, quote, prices, clock)
    ctx = ExecutionContext(broker=broker, clock=clock, config=PipelineConfig(), market=last_prices(prices, clock.now()),
                           book=Book(cash=cash, quote_currency=quote), recorder=None, run_id=run_id,
                           namespace="live", strategy="live")
    ctx.recorder = LedgerRecorder(ledger, run_id=run_id, namespace="live", venue=broker.name)
    ctx.alerter = alerter_from_env()
    ctx.config = PipelineConfig(rules={s: ctx.config.default_rules for s in prices})
    try:
        reports = await run_batch(pd.DataFrame(signals), ctx, call=task_caller("live"))
    except BaseException as exc:
        ledger.finish_run(run_id, "failed", {"error": f"{type(exc).__name__}: {exc}"})
        raise
    summary = live_summary(reports, ctx)
    create_markdown_artifact(key="live-summary", markdown=summary["markdown"])
    create_table_artifact(key="live-executions", table=[
        {"signal_id": r.signal_id, "symbol": r.symbol, "side": r.side, "type": r.exec_type,
         "quantity": r.quantity, "price": r.price, "fee": r.fee, "slippage_bps": r.slippage_bps}
        for r in reports.itertuples()])
    ledger.finish_run(run_id, "completed", {k: v for k, v in summary.items() if k != "markdown"})
    return summary


async def live_execution_from_file(signals: str, prices: dict[str, float], cash: float, quote: str,
                                   database_url: str | None) -> dict:
    frame = load_signals(signals)
    records = frame.assign(timestamp=frame["timestamp"].astype(str)).to_dict("records")
    records = [{k: v for k, v in r.items() if v == v} for r in records]  # drop NaN
    return await live_execution(records, prices=prices, cash=cash, quote=quote, database_url=database_url)
