"""`live_execution` with the paper broker on the wall clock, on a real Prefect API."""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest

from flows.live_execution import live_execution
from tradpal.ledger import Ledger


def test_live_batch_fills_rejects_and_records(prefect_api, tmp_path):
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    now = pd.Timestamp.now(tz="UTC").isoformat()
    signals = [
        {"timestamp": now, "symbol": "BTC/USDT", "side": "buy", "quantity": 0.1, "signal_id": "live-1"},
        {"timestamp": now, "symbol": "BTC/USDT", "side": "buy", "quantity": 50, "signal_id": "too-big"},
        {"timestamp": now, "symbol": "BTC/USDT", "side": "hold", "quantity": 1, "signal_id": "bad-side"},
        {"timestamp": now, "symbol": "DOGE/USDT", "side": "buy", "quantity": 1, "signal_id": "unknown"},
    ]
    summary = asyncio.run(live_execution(signals, prices={"BTC/USDT": 50_000.0}, cash=10_000.0, database_url=db))
    assert summary["n_fills"] == 1 and summary["rejected"] == 3
    assert summary["final_cash"] == pytest.approx(10_000.0 - 0.1 * 50_000.0 * 1.001, rel=1e-12)
    ledger = Ledger(db)
    rej = ledger.frame("rejections", run_id=summary["run_id"]).set_index("signal_id")
    assert rej.loc["too-big", "step"] == "pre_checks" and "insufficient funds" in rej.loc["too-big", "reason"]
    assert rej.loc["bad-side", "step"] == "intake" and "side" in rej.loc["bad-side", "reason"]
    assert rej.loc["unknown", "step"] == "pre_checks" and "unknown symbol" in rej.loc["unknown", "reason"]
    fills = ledger.frame("fills", run_id=summary["run_id"])
    assert fills["price"].tolist() == [50_000.0] and fills["quantity"].tolist() == [0.1]


def test_redelivered_signal_yields_one_order(prefect_api, tmp_path):
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    signal = {"timestamp": pd.Timestamp.now(tz="UTC").isoformat(), "symbol": "BTC/USDT", "side": "buy",
              "quantity": 0.1, "signal_id": "once"}
    first = asyncio.run(live_execution([signal], prices={"BTC/USDT": 100.0}, database_url=db))
    second = asyncio.run(live_execution([signal], prices={"BTC/USDT": 100.0}, database_url=db))
    assert first["n_fills"] == 1 and second["n_fills"] == 0 and second["rejected"] == 1
    ledger = Ledger(db)
    assert len(ledger.frame("orders")) == 1
    rej = ledger.frame("rejections")
    assert rej["reason"].str.contains("already received").all()


def test_risk_breach_alerts_through_apprise(prefect_api, tmp_path, receiver, monkeypatch):
    url, received = receiver
    monkeypatch.setenv("TRADPAL_ALERT_URLS", url)
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    signal = {"timestamp": pd.Timestamp.now(tz="UTC").isoformat(), "symbol": "BTC/USDT", "side": "buy",
              "quantity": 1.0, "signal_id": "whale", "strategy": "momentum"}
    summary = asyncio.run(live_execution([signal], prices={"BTC/USDT": 50_000.0}, cash=1_000.0, database_url=db))
    assert summary["rejected"] == 1
    assert len(received) == 1
    alert = received[0]["json"]
    assert alert["title"] == "TradPal risk breach at pre_checks: insufficient funds"
    for part in ("whale", "needs ~50050", "cash 1000", "BTC/USDT", "momentum"):
        assert part in alert["message"], part
    ledger = Ledger(db)
    audit = ledger.frame("audit_log", run_id=summary["run_id"])
    sent = audit[audit["event"] == "alert.sent"]
    assert len(sent) == 1 and sent["flow_run_id"].iloc[0] in alert["message"]
