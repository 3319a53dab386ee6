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


def test_unknown_run_is_a_clear_error(prefect_api, tmp_path):
    with pytest.raises(InputError, match="no run 'nope'"):
        asyncio.run(post_trade_analytics(run_id="nope", database_url=f"sqlite:///{tmp_path / 'l.db'}"))
