"""Post-trade analytics: read the ledger (one run, runs since a date, or a replay's output
folder), compute the metrics, gate the executions with Great Expectations, and publish
`metrics.json`, `report.html`, Data Docs and Prefect artifacts (the UI is the dashboard)."""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from tradpal.analytics import (
    AnalyticsInputs,
    alert_quality_failure,
    breakdown,
    chart_tables,
    inputs_from_ledger,
    inputs_from_replay,
    report_markdown,
    summary_markdown,
)
from tradpal.config import load_settings
from tradpal.ledger import Ledger
from tradpal.metrics import compute_metrics, write_metrics
from tradpal.quality import QualityGateError, check_executions
from tradpal.report import render_report, write_report


@task(name="load-analytics-inputs", task_run_name="load-analytics-inputs", cache_policy=NO_CACHE,
      persist_result=False)
def load_task(run_id: str | None, since: str | None, from_replay: str | None, database_url: str | None):
    if from_replay:
        return inputs_from_replay(from_replay)
    return inputs_from_ledger(Ledger(database_url or load_settings().ledger_url()), run_id=run_id, since=since)


@task(name="compute-metrics", task_run_name="compute-metrics", cache_policy=NO_CACHE, persist_result=False)
def metrics_task(data: AnalyticsInputs) -> dict:
    return compute_metrics(data.equity, data.fills, orders=data.orders, signals=data.signals,
                           rejections=data.rejections, bars=data.bars, marks=data.marks)


@task(name="executions-quality-gate", task_run_name="executions-quality-gate", cache_policy=NO_CACHE,
      persist_result=False)
def quality_task(data: AnalyticsInputs, out: str | None):
    if data.orders is None or data.fills is None:
        return None
    docs = f"{out}/data_docs/executions" if out else None
    return check_executions(data.fills, data.orders, bars=data.fill_bars, price_tolerance_bps=data.slippage_bps,
                            data_docs_dir=docs)


@flow(name="post-trade-analytics", persist_result=False)
async def post_trade_analytics(run_id: str | None = None, since: str | None = None, from_replay: str | None = None,
                               out: str | None = None, database_url: str | None = None) -> dict:
    """Metrics, report and quality gate for one run (default: the latest), runs since a
    date, or a replay's output folder. Fails (after publishing) if the executions gate fails."""
    data = load_task(run_id, since, from_replay, database_url)
    metrics = metrics_task(data)
    quality = quality_task(data, out)
    outputs = []
    if out:
        outputs.append(str(write_metrics(metrics, out)))
        outputs.append(str(write_report(render_report(metrics, data.equity_or_empty(), data.report_fills(),
                                                      title=f"TradPal post-trade report: {data.label}"), out)))
    table = breakdown(data.named_fills(), data.orders_or_empty(), data.rejections_or_empty())
    markdown = report_markdown(data.run, table, data.rejections_or_empty()) + "\n\n" + summary_markdown(
        metrics, quality, outputs)
    await create_markdown_artifact(key="post-trade-analytics", markdown=markdown, description=data.label)
    for key, rows in chart_tables(metrics, table, data.equity, data.report_fills()).items():
        await create_table_artifact(key=key, table=rows)
    if quality is not None and not quality.success:
        alert_quality_failure(quality, data.label, str(flow_run.id) if flow_run.id else None)
        raise QualityGateError(quality)
    return {"run_id": data.run_id, "flow_run_id": str(flow_run.id) if flow_run.id else None, "markdown": markdown, "table": table.to_dict("records"), "metrics": metrics,
            "outputs": outputs, "quality": None if quality is None else quality.success}
