from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from risk.alerts import Alerter
from tests.ledger.helpers import orders_frame, signals_frame
from tradpal.ledger import Ledger, Provenance
from tradpal.risk_monitor import report_markdown, risk_report, send_alerts

NOW = datetime(2024, 3, 1, 13, 0, tzinfo=UTC)


def seed(ledger: Ledger) -> None:
    """A live run with three orders (one open for 58 min, one open for 5 min, one filled), a
    replay run with an old open order, a live breaker and a replay breaker, positions."""
    live = ledger.start_run("live", {})
    replay = ledger.start_run("replay", {})
    sig = signals_frame(3)
    orders = orders_frame(sig)
    orders["created_at"] = [NOW - timedelta(minutes=58), NOW - timedelta(minutes=5), NOW - timedelta(minutes=50)]
    with ledger.transaction() as s:
        ledger.record_signals(s, sig, namespace="live", prov=Provenance(run_id=live))
        ledger.record_orders(s, orders, namespace="live", venue="paper", prov=Provenance(run_id=live))
        ledger.update_orders(s, pd.DataFrame({"client_order_id": ["c-s2"], "status": ["FILLED"],
                                              "updated_at": [NOW]}), venue="paper", prov=Provenance(run_id=live))
        rsig = signals_frame(1, prefix="r")
        ledger.record_signals(s, rsig, namespace=f"replay:{replay}", prov=Provenance(run_id=replay))
        ledger.record_orders(s, orders_frame(rsig, prefix="rc"), namespace=f"replay:{replay}", venue="paper",
                             prov=Provenance(run_id=replay))
        ledger.trip_breaker(s, "loss_limit", "live|portfolio", "equity 8% below start", at=NOW - timedelta(hours=1),
                            prov=Provenance(run_id=live))
        ledger.trip_breaker(s, "loss_limit", f"replay:{replay}|portfolio", "replay", prov=Provenance(run_id=replay))
        ledger.record_positions(s, pd.DataFrame({"symbol": ["ETH/BTC", "ETH/BTC", "LTC/BTC"], "quantity": [1.0, 2.5, 0.0],
                                                 "average_price": [0.05, 0.051, None], "market_price": [0.05, 0.052, None],
                                                 "as_of": [NOW - timedelta(minutes=9), NOW - timedelta(minutes=1), NOW]}),
                                prov=Provenance(run_id=live))


def test_report_lists_live_breakers_stale_orders_and_latest_positions(ledger: Ledger) -> None:
    seed(ledger)
    report = risk_report(ledger, now=NOW, stale_after=timedelta(minutes=15))
    assert [b["scope"] for b in report["breakers"]] == ["live|portfolio"]  # not the replay's
    assert [s["client_order_id"] for s in report["stale_orders"]] == ["c-s0"]  # c-s1 too young, c-s2 filled
    assert report["stale_orders"][0]["age_s"] == 58 * 60
    assert [(p["symbol"], p["quantity"]) for p in report["positions"]] == [("ETH/BTC", 2.5)]  # latest, flat dropped
    assert report["ok"] is False
    md = report_markdown(report)
    assert "| c-s0 | ETH/BTC | buy | 1.5 | 0 | CREATED | 3480 |" in md and "`loss_limit` [live|portfolio]" in md
    assert "| ETH/BTC | 2.5 |" in md
    younger = risk_report(ledger, now=NOW, stale_after=timedelta(hours=2))
    assert younger["stale_orders"] == []


def test_an_empty_ledger_is_all_clear(ledger: Ledger) -> None:
    report = risk_report(ledger, now=NOW)
    assert report["ok"] and "**all clear**" in report_markdown(report) and "flat" in report_markdown(report)


def test_alerts_go_out_once_per_throttle_across_runs(ledger: Ledger, receiver) -> None:
    url, received = receiver
    seed(ledger)
    report = risk_report(ledger, now=NOW, stale_after=timedelta(minutes=15))
    first = send_alerts(report, Alerter([url]), ledger, Provenance(flow_run_id="fr-1"))
    assert sorted(a.key for a in first) == ["breaker:loss_limit:live|portfolio", "stale-orders:live"]
    assert all(a.delivered for a in first) and len(received) == 2
    assert any("c-s0" in r["json"]["message"] for r in received)
    # the next scheduled run is a new process (a new Alerter): the audit log throttles
    again = send_alerts(risk_report(ledger, stale_after=timedelta(minutes=15)), Alerter([url]), ledger,
                        Provenance(flow_run_id="fr-2"))
    assert again == [] and len(received) == 2
    audit = ledger.frame("audit_log")
    sent = audit[audit["event"] == "alert.sent"]
    assert sorted(sent["entity_id"]) == sorted(a.key for a in first) and set(sent["flow_run_id"]) == {"fr-1"}
