"""`live_execution` with a risk configuration (TRADPAL_RISK_CONFIG) on a real Prefect API
and the paper broker: a bracket is attached to a live entry and its legs recorded; a
connectivity halt in the ledger refuses every signal, naming the breaker."""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest

from flows.live_execution import live_execution
from tasks.orders import client_order_id
from tradpal.ledger import Ledger, Provenance

RISK = """portfolio: {max_drawdown: 0.5, max_daily_loss: 0.5, max_gross_exposure: 2}
breakers: {connectivity: {max_errors: 3}}
brackets: {default: {stop_loss: {percent: 0.05}, take_profit: {percent: 0.10}}}
"""


def signal(sid: str, side: str = "buy") -> dict:
    return {"timestamp": pd.Timestamp.now(tz="UTC").isoformat(), "symbol": "BTC/USDT", "side": side,
            "quantity": 0.1, "signal_id": sid}


def test_live_entry_gets_its_bracket_and_a_halted_broker_refuses(prefect_api, tmp_path, monkeypatch) -> None:
    (tmp_path / "risk.yaml").write_text(RISK)
    monkeypatch.setenv("TRADPAL_RISK_CONFIG", str(tmp_path / "risk.yaml"))
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    summary = asyncio.run(live_execution([signal("e1")], prices={"BTC/USDT": 50_000.0}, database_url=db))
    assert summary["n_fills"] == 1 and summary["rejected"] == 0
    ledger = Ledger(db)
    try:
        orders = ledger.frame("orders").set_index("client_order_id")
        stop, target = orders.loc[client_order_id("e1", 1)], orders.loc[client_order_id("e1", 2)]
        assert (stop["order_type"], stop["stop_price"], stop["status"]) == ("stop", 47_500.0, "NEW")
        assert (target["order_type"], target["price"], target["status"]) == ("limit", pytest.approx(55_000.0), "NEW")
        assert "bracket.opened" in set(ledger.frame("audit_log")["event"])

        with ledger.transaction() as s:  # an earlier run tripped the connectivity breaker (no backup route)
            ledger.trip_breaker(s, "connectivity", "live|broker:paper", "3 consecutive broker errors", value=3,
                                threshold=3, prov=Provenance())
        second = asyncio.run(live_execution([signal("b2"), signal("s2", "sell")], prices={"BTC/USDT": 50_000.0},
                                            database_url=db))
        assert second["n_fills"] == 0 and second["rejected"] == 2
        rej = ledger.frame("rejections", run_id=second["run_id"])
        assert rej["reason"].str.startswith("breaker connectivity (broker:paper): 3 consecutive").all()
        assert set(rej["step"]) == {"pre_checks"}
    finally:
        ledger.close()


def test_a_bad_risk_config_fails_before_the_run(prefect_api, tmp_path, monkeypatch) -> None:
    from tradpal.errors import ConfigError

    (tmp_path / "risk.yaml").write_text(RISK.replace("max_errors: 3", "max_errors: 0"))
    monkeypatch.setenv("TRADPAL_RISK_CONFIG", str(tmp_path / "risk.yaml"))
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    with pytest.raises(ConfigError, match="breakers.connectivity.max_errors: Input should be greater than or equal"):
        asyncio.run(live_execution([signal("x")], prices={"BTC/USDT": 1.0}, database_url=db))
    ledger = Ledger(db)
    try:
        assert ledger.frame("runs").empty
    finally:
        ledger.close()


def test_the_streaming_session_takes_the_risk_configuration(prefect_api, tmp_path, monkeypatch) -> None:
    import os
    import signal as signals

    import httpx

    from tests.conftest import start_live_stream

    (tmp_path / "risk.yaml").write_text(RISK)
    monkeypatch.setenv("TRADPAL_RISK_CONFIG", str(tmp_path / "risk.yaml"))
    db = f"sqlite:///{tmp_path / 'ledger.db'}"

    async def go():
        run, url = await start_live_stream(tmp_path, db)
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            answer = await client.post("/signals", json=signal("st-e"))
            await asyncio.sleep(0.5)  # an idle monitoring pass or two over the open legs
        os.kill(os.getpid(), signals.SIGTERM)
        return answer, await run

    answer, summary = asyncio.run(go())
    assert answer.json()["results"][0]["status"] == "FILLED" and summary["ok"]
    ledger = Ledger(db)
    try:
        orders = ledger.frame("orders").set_index("client_order_id")
        legs = orders.loc[[client_order_id("st-e", 1), client_order_id("st-e", 2)]]
        assert legs["order_type"].tolist() == ["stop", "limit"] and legs["status"].tolist() == ["NEW", "NEW"]
        assert legs["stop_price"].iloc[0] == pytest.approx(47_500.0)
    finally:
        ledger.close()
