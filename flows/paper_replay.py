"""Paper replay: historical OHLCV + a signals table through the eight tasks, with the
paper broker on a simulated clock. Batches of signals, not bars, are the unit of work,
so Prefect's per-task cost is paid per batch (see README, "Prefect overhead").

Every task is ``async``, though its work is not: an async task runs on the flow's API
client, where a sync task in an async flow makes a sync client of its own, and each new
client builds an SSL context from certifi's bundle (~35 ms here, even for an
``http://127.0.0.1`` API)."""

from __future__ import annotations

from typing import Literal

import pandas as pd
from prefect import flow, task
from prefect.artifacts import acreate_markdown_artifact, acreate_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from tasks.prefect_tasks import task_caller
from tradpal import progress
from tradpal.config import load_settings
from tradpal.ledger import Ledger
from tradpal.replay import (
    ReplayInputs,
    ReplayParams,
    gate_market_data,
    load_inputs,
    run_replay,
    write_outputs,
)
from tradpal.reporting import summary_markdown


@task(name="load-inputs", task_run_name="load-inputs", cache_policy=NO_CACHE, persist_result=False)
async def load_inputs_task(params: ReplayParams) -> ReplayInputs:
    return load_inputs(params)


@task(name="market-data-gate", task_run_name="market-data-gate", cache_policy=NO_CACHE, persist_result=False)
async def market_data_gate_task(inputs: ReplayInputs, out: str | None, max_gap_multiple: float,
                          data_docs: str = "on-failure") -> None:
    """Great Expectations' market-data suite on every market before anything trades; a
    failure stops the replay with GX's result summary (also a markdown artifact)."""
    for name, result in gate_market_data(inputs, out, max_gap_multiple, data_docs):
        await acreate_markdown_artifact(key="market-data-quality", markdown=result.to_markdown(),
                                        description=f"market data {name}")
        result.raise_for_failure()


@task(name="publish-results", task_run_name="publish-results", cache_policy=NO_CACHE, persist_result=False)
async def publish_task(summary: dict, reports: pd.DataFrame, out_dir: str | None, equity: pd.DataFrame, ledger: Ledger,
                 equity_file: str | None = None) -> dict:
    if out_dir:
        paths = write_outputs(out_dir, reports, summary, equity, equity_file)
        summary = {**summary, "outputs": [str(p) for p in paths]}
    await acreate_markdown_artifact(key="replay-summary", markdown=summary_markdown(summary),
                                    description="Paper replay summary")
    fills = reports[reports["quantity"] > 0].head(500)
    await acreate_table_artifact(key="replay-fills", description="Fills (first 500)", table=[
        {"timestamp": str(r.timestamp), "signal_id": r.signal_id, "side": r.side,
         "quantity": r.quantity, "price": r.price, "fee": r.fee} for r in fills.itertuples()])
    ledger.finish_run(summary["run_id"], "completed", summary)
    return summary


@flow(name="paper-replay", persist_result=False)
async def paper_replay(ohlcv: str, signals: str, symbol: str, cash: float = 10_000.0, fee_rate: float | None = None,
                       slippage_bps: float = 0.0, out: str | None = None, database_url: str | None = None,
                       chunk_signals: int | None = None, risk_config: str | None = None,
                       fill_model: str = "next-open", slippage_model: str = "fixed", impact_k: float | None = None,
                       participation: float | None = None, latency_ms: float = 0.0, venue: str | None = None,
                       seed: int | None = None, markets: dict[str, str] | None = None,
                       quality_gate: bool = True, max_gap_multiple: float = 10.0,
                       data_docs: Literal["on-failure", "always"] = "on-failure") -> dict:
    """Replay ``signals`` against the bars in ``ohlcv``; returns the summary. Several
    symbols: ``markets`` {symbol: file} (``ohlcv`` and ``symbol`` then ""). ``fee_rate``
    None: the ``venue``'s maker/taker fees, or 0.001 without a venue. The simulator's
    options: see `tradpal.replay`. ``quality_gate``: run the GX market-data suite first
    (a gap larger than ``max_gap_multiple`` bars stops the replay); its Data Docs go to
    ``OUT/data_docs/market_data`` when it fails, or always with ``data_docs="always"``."""
    params = ReplayParams(ohlcv, signals, symbol, cash, fee_rate, slippage_bps, out, chunk_signals, risk_config,
                          fill_model=fill_model, slippage_model=slippage_model, impact_k=impact_k,
                          participation=participation, latency_ms=latency_ms, venue=venue, seed=seed,
                          markets=tuple((markets or {}).items()))
    inputs = await load_inputs_task(params)
    if quality_gate:
        await market_data_gate_task(inputs, out, max_gap_multiple, data_docs)
    ledger = Ledger(database_url or load_settings().ledger_url())
    result = await run_replay(params, inputs, ledger, caller=task_caller,
                              flow_run_id=str(flow_run.id) if flow_run.id else None, on_batch=progress.report,
                              equity_to=out)
    equity_file = str(result.equity_file) if result.equity_file else None
    return await publish_task(result.summary, result.reports, out, result.equity, ledger, equity_file)
