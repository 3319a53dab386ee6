"""Risk monitor (deployed every minute as ``risk-monitor``): breaker state, stale orders
and positions from the ledger, published as a markdown artifact, with alerts on stale
orders and tripped breakers. The logic is `tradpal.risk_monitor`; this flow is its shell."""

from __future__ import annotations

from datetime import timedelta

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from risk.alerts import alerter_from_env
from tradpal.config import load_settings
from tradpal.ledger import Ledger, Provenance
from tradpal.risk_monitor import report_markdown, risk_report, send_alerts


@flow(name="risk-monitor", persist_result=False)
async def risk_monitor(stale_after_minutes: float = 15.0, alert_throttle_minutes: float = 15.0,
                       namespace: str = "live", database_url: str | None = None) -> dict:
    """Report breakers tripped in ``namespace``, orders open longer than
    ``stale_after_minutes`` and the latest positions; alert (``TRADPAL_ALERT_URLS``) on
    stale orders and breakers, each alert at most once per ``alert_throttle_minutes``."""
    ledger = Ledger(database_url or load_settings().ledger_url())
    try:
        report = risk_report(ledger, stale_after=timedelta(minutes=stale_after_minutes), namespace=namespace)
        prov = Provenance(flow_run_id=str(flow_run.id) if flow_run.id else None)
        alerts = send_alerts(report, alerter_from_env(), ledger, prov,
                             throttle=timedelta(minutes=alert_throttle_minutes))
    finally:
        ledger.close()
    await create_markdown_artifact(key="risk-monitor", markdown=report_markdown(report),
                                   description="breakers, stale orders, positions")
    return {"ok": report["ok"], "breakers": len(report["breakers"]), "stale_orders": len(report["stale_orders"]),
            "positions": len(report["positions"]), "alerts_sent": sum(a.delivered for a in alerts)}
