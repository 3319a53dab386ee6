"""Post-trade analytics: read the ledger and publish fills, fees, PnL and drawdown per
symbol and strategy, as a markdown and a table artifact."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from tradpal.analytics import breakdown, report_markdown
from tradpal.config import load_settings
from tradpal.errors import InputError
from tradpal.ledger import Ledger


@flow(name="post-trade-analytics", persist_result=False)
async def post_trade_analytics(run_id: str | None = None, database_url: str | None = None) -> dict:
    ledger = Ledger(database_url or load_settings().ledger_url())
    runs = ledger.frame("runs")
    if run_id is None and len(runs):
        run_id = str(runs.sort_values("started_at")["id"].iloc[-1])
    run = ledger.get_run(run_id) if run_id else None
    if run_id and run is None:
        raise InputError(f"--run: no run {run_id!r} in ledger {ledger.url}")
    signals = ledger.frame("signals", run_id=run_id)[["id", "strategy"]].rename(columns={"id": "signal_pk"})
    orders = ledger.frame("orders", run_id=run_id).merge(signals, on="signal_pk", how="left")
    fills = ledger.frame("fills", run_id=run_id).merge(
        orders[["id", "strategy"]].rename(columns={"id": "order_pk"}), on="order_pk", how="left")
    rejections = ledger.frame("rejections", run_id=run_id)
    table = breakdown(fills, orders, rejections)
    markdown = report_markdown(run, table, rejections)
    create_markdown_artifact(key="post-trade-analytics", markdown=markdown)
    if len(table):
        create_table_artifact(key="post-trade-breakdown", table=table.to_dict("records"))
    return {"run_id": run_id, "markdown": markdown, "table": table.to_dict("records")}
