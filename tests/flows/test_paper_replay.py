"""A full `paper_replay` flow run on a real (ephemeral) Prefect API."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pandas as pd
import pytest

from flows.paper_replay import paper_replay
from tests.conftest import SAMPLE, poll
from tests.reference import reference_next_open
from tradpal.io import load_ohlcv, load_signals
from tradpal.ledger import Ledger
from tradpal.strategies import sma_crossover, write_signals_csv


@pytest.fixture
def replayed(prefect_api, tmp_path):
    ohlcv = SAMPLE / "BITTREX_ETH-BTC_5m.csv"
    bars = load_ohlcv(ohlcv)
    signals_path = tmp_path / "signals.csv"
    write_signals_csv(sma_crossover(bars, symbol="ETH/BTC", quantity=1.0), signals_path)
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    summary = asyncio.run(paper_replay(ohlcv=str(ohlcv), signals=str(signals_path), symbol="ETH/BTC", cash=1.0,
                                       fee_rate=0.001, slippage_bps=5.0, out=str(tmp_path / "out"),
                                       database_url=db, chunk_signals=40))
    return summary, bars, load_signals(signals_path), Ledger(db), tmp_path


def test_outputs_match_reference(replayed):
    summary, bars, signals, _, tmp_path = replayed
    ref = reference_next_open(bars, signals, cash=1.0, fee_rate=0.001, slippage_bps=5.0)
    fills = pd.read_csv(tmp_path / "out" / "fills.csv")
    assert list(fills.columns) == ["timestamp", "signal_id", "side", "quantity", "price", "fee"]
    assert fills["signal_id"].tolist() == ref["fills"]["signal_id"].tolist()
    np.testing.assert_allclose(fills["price"], ref["fills"]["price"], rtol=1e-9)
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk["final_equity"] == pytest.approx(ref["final_equity"], rel=1e-9)
    assert on_disk["n_fills"] == len(ref["fills"]) and on_disk["rejected"] == 0
    equity = pd.read_csv(tmp_path / "out" / "equity.csv")
    assert len(equity) == len(bars)
    assert equity["equity"].iloc[-1] == pytest.approx(ref["final_equity"], rel=1e-9)
    assert equity["timestamp"].tolist() == [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in bars["timestamp"]]
    # equity.csv was written while the batches ran, then moved into place: nothing else is left
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["equity.csv", "fills.csv", "summary.json"]


def test_ledger_rows_carry_prefect_run_ids(replayed, prefect_client):
    summary, *_ , ledger, _ = replayed
    run = summary["run_id"]
    for table in ("signals", "orders", "fills", "positions"):
        rows = ledger.frame(table, run_id=run)
        assert len(rows) > 0
        assert (rows["flow_run_id"] == summary["flow_run_id"]).all(), table
        assert rows["task_run_id"].notna().all(), table
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    fills = ledger.frame("fills", run_id=run)

    def task_runs() -> dict[str, str]:
        runs = prefect_client(lambda c: c.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[summary["flow_run_id"]]))))
        return {str(t.id): t.name for t in runs}

    # task runs reach the API as events, recorded asynchronously: poll, don't sleep blindly
    expected = ["1-intake", "2-sizing", "3-order-creation", "4-pre-checks", "5-placement", "6-monitoring",
                "7-positions", "8-analysis", "load-inputs", "market-data-gate", "publish-results"]

    def names(runs: dict[str, str]) -> list[str]:
        return sorted({n.split(" [")[0] for n in runs.values()})

    # names and states arrive as events, recorded asynchronously: poll until they are all in
    ours = poll(task_runs, lambda runs: set(fills["task_run_id"]) <= set(runs) and names(runs) == expected)
    assert {ours[t] for t in fills["task_run_id"]} <= {n for n in ours.values() if n.startswith("6-monitoring")}
    assert names(ours) == expected
    # batches, not bars: 158 signals in batches of 40 -> 4 runs of each step
    assert sum(n.startswith("5-placement") for n in ours.values()) == 4
    assert ledger.get_run(run)["status"] == "completed"


def test_run_publishes_artifacts(replayed, prefect_client):
    summary = replayed[0]
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    arts = prefect_client(lambda c: c.read_artifacts(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[summary["flow_run_id"]]))))
    by_key = {a.key: a for a in arts}
    assert by_key["replay-summary"].type == "markdown" and "Final equity" in by_key["replay-summary"].data
    assert by_key["replay-fills"].type == "table"


def test_market_data_gate_stops_a_replay_over_a_large_gap(prefect_api, tmp_path):
    from tradpal.quality import QualityGateError

    bars = load_ohlcv(SAMPLE / "BITTREX_ETH-BTC_5m.csv").head(300)
    gapped = pd.concat([bars.iloc[:100], bars.iloc[160:]])  # 60 missing 5-minute bars
    path = tmp_path / "gapped.csv"
    gapped.assign(timestamp=gapped["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(path, index=False)
    signals_path = tmp_path / "signals.csv"
    signals_path.write_text("timestamp,symbol,side,quantity\n2018-01-10T06:00:00Z,ETH/BTC,buy,1\n")
    db = tmp_path / "ledger.db"
    with pytest.raises(QualityGateError, match="market_data"):
        asyncio.run(paper_replay(ohlcv=str(path), signals=str(signals_path), symbol="ETH/BTC", cash=1.0,
                                 database_url=f"sqlite:///{db}", max_gap_multiple=10, out=str(tmp_path / "bad")))
    assert not db.exists()  # stopped before the ledger was touched
    assert (tmp_path / "bad" / "data_docs" / "market_data" / "bars" / "index.html").is_file()  # what failed, shown
    summary = asyncio.run(paper_replay(ohlcv=str(path), signals=str(signals_path), symbol="ETH/BTC", cash=1.0,
                                       database_url=f"sqlite:///{db}", max_gap_multiple=100, out=str(tmp_path / "ok")))
    assert summary["n_fills"] == 1
    assert not (tmp_path / "ok" / "data_docs").exists()  # a gate that passed: its artifact, no site
    asyncio.run(paper_replay(ohlcv=str(path), signals=str(signals_path), symbol="ETH/BTC", cash=1.0,
                             database_url=f"sqlite:///{db}", max_gap_multiple=100, out=str(tmp_path / "all"),
                             data_docs="always"))
    assert (tmp_path / "all" / "data_docs" / "market_data" / "bars" / "index.html").is_file()


def test_an_unknown_data_docs_choice_is_refused_before_the_run(prefect_api, tmp_path):
    from prefect.exceptions import ParameterTypeError

    db = tmp_path / "ledger.db"
    with pytest.raises(ParameterTypeError, match="data_docs"):
        asyncio.run(paper_replay(ohlcv=str(SAMPLE / "BITTREX_ETH-BTC_5m.csv"), signals="unused.csv",
                                 symbol="ETH/BTC", database_url=f"sqlite:///{db}", data_docs="sometimes"))
    assert not db.exists()


def test_the_replay_tasks_make_no_api_client_of_their_own(prefect_api, tmp_path, monkeypatch):
    """Load, gate and publish are async tasks, on the flow's API client: a sync task in an
    async flow builds a sync client of its own, with an SSL context from certifi's bundle
    (~35 ms each). Prefect itself makes one per flow run (its result-storage look-up)."""
    from prefect.client.orchestration import SyncPrefectClient

    made: list[int] = []
    real_init = SyncPrefectClient.__init__

    def counted(self, *args, **kwargs):
        made.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(SyncPrefectClient, "__init__", counted)
    bars = load_ohlcv(SAMPLE / "BITTREX_ETH-BTC_5m.csv").head(2000)
    bars.to_csv(tmp_path / "bars.csv", index=False)
    write_signals_csv(sma_crossover(bars, symbol="ETH/BTC", quantity=1.0), tmp_path / "signals.csv")
    summary = asyncio.run(paper_replay(ohlcv=str(tmp_path / "bars.csv"), signals=str(tmp_path / "signals.csv"),
                                       symbol="ETH/BTC", cash=1.0, out=str(tmp_path / "out"),
                                       database_url=f"sqlite:///{tmp_path / 'ledger.db'}"))
    assert summary["n_fills"] > 0
    assert len(made) <= 1  # three more when load, gate and publish were sync tasks
