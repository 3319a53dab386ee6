"""The risk-monitor flow on a real Prefect API: its markdown artifact and alerts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pandas as pd

from flows.risk_monitor import risk_monitor
from tradpal.ledger import Ledger, Provenance


def test_risk_monitor_publishes_its_report_and_alerts(prefect_api, prefect_client, tmp_path, receiver, monkeypatch):
    url, received = receiver
    monkeypatch.setenv("TRADPAL_ALERT_URLS", url)
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger(db)
    run = ledger.start_run("live", {})
    old = datetime.now(UTC) - timedelta(hours=1)
    with ledger.transaction() as s:
        ledger.record_signals(s, pd.DataFrame({"signal_id": ["s1"], "timestamp": [old], "symbol": "BTC/USDT",
                                               "side": "buy", "order_type": "market", "quantity": 1.0}),
                              namespace="live", prov=Provenance(run_id=run))
        ledger.record_orders(s, pd.DataFrame({"signal_id": ["s1"], "client_order_id": ["tp-stale"],
                                              "symbol": "BTC/USDT", "side": "buy", "order_type": "market",
                                              "quantity": 1.0, "created_at": [old]}),
                             namespace="live", venue="paper", prov=Provenance(run_id=run))
    summary = asyncio.run(risk_monitor(stale_after_minutes=15, database_url=db))
    assert summary == {"ok": False, "breakers": 0, "stale_orders": 1, "positions": 0, "alerts_sent": 1}
    assert "tp-stale" in received[0]["json"]["message"]
    artifact = prefect_client(lambda c: c.read_latest_artifacts())
    md = next(a for a in artifact if a.key == "risk-monitor")
    assert "tp-stale" in md.data and "Stale orders" in md.data
    sent = ledger.frame("audit_log").query("event == 'alert.sent'")
    assert sent["flow_run_id"].notna().all()
