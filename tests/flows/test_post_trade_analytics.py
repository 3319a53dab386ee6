"""`post_trade_analytics` over a ledger written by a replay."""

from __future__ import annotations

import asyncio

import pytest

from flows.post_trade_analytics import post_trade_analytics
from tests.conftest import SAMPLE
from tradpal.errors import InputError
from tradpal.ledger import Ledger
from tradpal.replay import ReplayParams, load_inputs, run_replay


def test_analytics_matches_the_replay(prefect_api, tmp_path):
    sig = tmp_path / "s.csv"
    sig.write_text("timestamp,symbol,side,quantity,signal_id,strategy\n"
                   "2018-01-10T05:00:00Z,ETH/BTC,buy,2,a,alpha\n"
                   "2018-01-10T06:00:00Z,ETH/BTC,sell,1,b,alpha\n"
                   "2018-01-10T06:00:00Z,ETH/BTC,buy,50,c,alpha\n")
    db = f"sqlite:///{tmp_path / 'l.db'}"
    params = ReplayParams(str(SAMPLE / "BITTREX_ETH-BTC_5m.csv"), str(sig), "ETH/BTC", 1.0, 0.001, 0.0, None, 500)
    result = asyncio.run(run_replay(params, load_inputs(params), Ledger(db)))
    report = asyncio.run(post_trade_analytics(run_id=result.summary["run_id"], database_url=db))
    row = report["table"][0]
    assert (row["strategy"], row["symbol"], row["fills"], row["orders"]) == ("alpha", "ETH/BTC", 2, 3)
    # buy 2 @ open(05:05)=0.09969, sell 1 @ open(06:05)=0.09424279 -> realised (0.09424279-0.09969)*1
    assert row["realized_pnl"] == pytest.approx(0.09424279 - 0.09969, rel=1e-9)
    assert row["fees"] == pytest.approx(result.summary["total_fees"], rel=1e-12)
    assert row["position"] == pytest.approx(1.0)
    assert "pre_checks" not in report["markdown"] and "monitoring: 1" in report["markdown"]

    async def artifact_keys():
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        async with get_client() as client:
            found = await client.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[report["flow_run_id"]])))
        return {a.key for a in found}

    keys = asyncio.run(artifact_keys())  # published, not left as un-awaited coroutines
    assert "post-trade-analytics" in keys and len(keys) >= 3, keys


def test_unknown_run_is_a_clear_error(prefect_api, tmp_path):
    with pytest.raises(InputError, match="no run 'nope'"):
        asyncio.run(post_trade_analytics(run_id="nope", database_url=f"sqlite:///{tmp_path / 'l.db'}"))


def _replay(tmp_path, slippage_bps=5.0):
    from tradpal.io import load_ohlcv
    from tradpal.replay import write_outputs
    from tradpal.strategies import sma_crossover, write_signals_csv

    sig = tmp_path / "signals.csv"
    write_signals_csv(sma_crossover(load_ohlcv(SAMPLE / "BITTREX_ETH-BTC_5m.csv"), symbol="ETH/BTC", quantity=1.0), sig)
    db = f"sqlite:///{tmp_path / 'l.db'}"
    out = tmp_path / "replay"
    params = ReplayParams(str(SAMPLE / "BITTREX_ETH-BTC_5m.csv"), str(sig), "ETH/BTC", 1.0, 0.001, slippage_bps,
                          str(out), 200)
    ledger = Ledger(db)
    result = asyncio.run(run_replay(params, load_inputs(params), ledger))
    paths = write_outputs(out, result.reports, result.summary, result.equity)
    ledger.finish_run(result.summary["run_id"], "completed", {**result.summary, "outputs": [str(p) for p in paths]})
    return result, db, out


def test_metrics_report_and_gate_for_a_ledger_run(prefect_api, tmp_path):
    import json

    result, db, _ = _replay(tmp_path)
    out = tmp_path / "analytics"
    report = asyncio.run(post_trade_analytics(run_id=result.summary["run_id"], out=str(out), database_url=db))
    assert report["quality"] is True
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("sharpe", "sortino", "calmar", "max_drawdown", "max_drawdown_days", "var_95", "cvar_95", "var_99",
                "cvar_99", "fill_rate"):
        assert key in metrics
    assert metrics["max_drawdown"] == pytest.approx(result.summary["max_drawdown"], rel=1e-9)
    assert metrics["fill_rate"] == 1.0 and metrics["n_fills"] == result.summary["n_fills"]
    assert metrics["slippage_ref_bps_mean"] is not None
    html = (out / "report.html").read_text()
    assert 'data-chart="equity"' in html and "http://" not in html
    assert (out / "data_docs" / "executions").exists()


def test_from_replay_folder(prefect_api, tmp_path):
    import json

    result, _, replay_out = _replay(tmp_path)
    out = tmp_path / "a2"
    asyncio.run(post_trade_analytics(from_replay=str(replay_out), out=str(out)))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_fills"] == result.summary["n_fills"]
    assert metrics["total_fees"] == pytest.approx(result.summary["total_fees"], rel=1e-9)


def test_a_bad_execution_fails_the_gate_and_alerts(prefect_api, tmp_path, receiver, monkeypatch):
    from sqlalchemy import text

    from tradpal.quality import QualityGateError

    url, received = receiver
    monkeypatch.setenv("TRADPAL_ALERT_URLS", url)
    result, db, _ = _replay(tmp_path, slippage_bps=0.0)
    ledger = Ledger(db)
    with ledger.engine.begin() as conn:  # a fill priced far outside its bar
        conn.execute(text("UPDATE fills SET price = price * 2 WHERE id = (SELECT MIN(id) FROM fills)"))
    with pytest.raises(QualityGateError, match="executions"):
        asyncio.run(post_trade_analytics(run_id=result.summary["run_id"], out=str(tmp_path / "a3"), database_url=db))
    assert [r["json"]["title"] for r in received] == ["TradPal data-quality gate failed: executions"]
    assert (tmp_path / "a3" / "report.html").exists()  # published before failing
