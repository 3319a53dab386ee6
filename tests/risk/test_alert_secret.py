"""Alert URLs from a Prefect Secret block (real Prefect API): the alerts reach the URL
held by the block, and a canary planted in that URL appears nowhere else — not in the
logs, the flow run's logs, its artifacts, the ledger or the output files."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from risk.alerts import Alerter, alerter_from_env, redact, scrub
from risk.config import parse_risk_config
from tests.risk.test_replay_scenarios import PORTFOLIO, write_bars, write_signals
from tradpal.errors import ConfigError
from tradpal.ledger import Ledger
from tradpal.ledger.ledger import TABLES

CANARY = "CANARY0a1b2c3d4e5f"


def test_redaction_keeps_tokens_out() -> None:
    assert redact("slack://T000/B000/SECRETTOKEN") == "slack://…"  # a token where the host goes
    assert redact("json://user:SECRET@host.example:8080/path") == "json://host.example:8080/…"
    assert redact(f"json://127.0.0.1:9/alerts/{CANARY}") == "json://127.0.0.1:9/…"
    url = f"json://127.0.0.1:9/hook/{CANARY}"
    assert CANARY not in scrub(f"ConnectError: cannot reach {url} ({CANARY})", url)


def test_urls_from_a_secret_block_and_clear_errors(prefect_api, receiver) -> None:
    from prefect.blocks.system import Secret

    url, received = receiver
    Secret(value=f"{url}/{CANARY}").save("tp-alert-urls", overwrite=True)
    alerter = alerter_from_env(None, env={"TRADPAL_ALERT_URLS_BLOCK": "tp-alert-urls"})
    assert isinstance(alerter, Alerter)
    alert = alerter.notify("k", "title", "body")
    assert alert.delivered and CANARY not in repr(alert)
    assert received[-1]["path"] == f"/alerts/{CANARY}"
    Secret(value=[url, f"{url}/second"]).save("tp-alert-list", overwrite=True)
    risk = parse_risk_config(PORTFOLIO + "alerts: {secret_block: tp-alert-list}")
    assert len(alerter_from_env(risk, env={}).urls) == 2
    with pytest.raises(ConfigError, match=r"^TRADPAL_ALERT_URLS_BLOCK: cannot load the Prefect Secret block 'nope'"):
        alerter_from_env(None, env={"TRADPAL_ALERT_URLS_BLOCK": "nope"})
    Secret(value=" , ").save("tp-alert-empty", overwrite=True)
    with pytest.raises(ConfigError, match="alerts.secret_block: the Prefect Secret block 'tp-alert-empty' holds no"):
        alerter_from_env(parse_risk_config(PORTFOLIO + "alerts: {secret_block: tp-alert-empty}"), env={})


def test_a_canary_url_from_a_block_appears_nowhere_but_at_the_receiver(prefect_api, receiver, tmp_path, caplog,
                                                                       prefect_client) -> None:
    from prefect.blocks.system import Secret
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

    from flows.paper_replay import paper_replay

    url, received = receiver
    Secret(value=f"{url}/{CANARY}").save("tp-alert-canary", overwrite=True)
    closes = [100.0 * (1.001 if i % 2 else 1.0) for i in range(19)] + [110.0] * 3
    bars = write_bars(tmp_path / "b.csv", closes, spread=0.0)
    sigs = write_signals(tmp_path / "s.csv", ["2024-01-01T00:05:00Z,BTC/USDT,buy,1,a",
                                              "2024-01-01T00:21:00Z,BTC/USDT,buy,1,b"])
    risk = tmp_path / "risk.yaml"
    risk.write_text(PORTFOLIO + "breakers:\n  volatility: {lookback: 10, z_threshold: 5, cooldown_minutes: 10}\n"
                    "alerts: {secret_block: tp-alert-canary, throttle_s: 0}\n")
    db = tmp_path / "ledger.db"
    for name in (None, "apprise", "urllib3", "prefect"):  # everything, at its most talkative
        caplog.set_level(logging.DEBUG, logger=name)
    summary = asyncio.run(paper_replay(ohlcv=str(bars), signals=str(sigs), symbol="BTC/USDT", cash=10_000.0,
                                       fee_rate=0.0, out=str(tmp_path / "out"), database_url=f"sqlite:///{db}",
                                       risk_config=str(risk), quality_gate=False))
    assert summary["rejected"] == 1 and received and all(m["path"] == f"/alerts/{CANARY}" for m in received)
    assert CANARY not in caplog.text
    ledger = Ledger(f"sqlite:///{db}")
    try:
        for table in TABLES:
            assert CANARY not in ledger.frame(table).to_csv(), table
        assert CANARY not in db.read_bytes().decode("latin-1")
    finally:
        ledger.close()
    for path in (tmp_path / "out").iterdir():
        assert CANARY not in path.read_text(), path
    run = FlowRunFilter(id=FlowRunFilterId(any_=[summary["flow_run_id"]]))
    arts = prefect_client(lambda c: c.read_artifacts(flow_run_filter=run))
    assert arts and not any(CANARY in str(a.data) or CANARY in str(a.description) for a in arts)
    logs: list = []
    deadline = time.monotonic() + 60
    while not any("Finished in state" in e.message for e in logs) and time.monotonic() < deadline:
        time.sleep(0.5)  # logs reach the API in batches, after the run
        logs = prefect_client(lambda c: c.read_logs(log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[summary["flow_run_id"]]))))
    assert logs and not any(CANARY in entry.message for entry in logs)


def test_apprise_debug_logs_never_show_the_url(receiver, caplog) -> None:
    url, received = receiver
    for name in (None, "apprise", "urllib3"):
        caplog.set_level(logging.DEBUG, logger=name)
    secret_url = f"{url}/{CANARY}"
    assert Alerter([secret_url]).notify("k", "t", "b").delivered
    assert received[-1]["path"] == f"/alerts/{CANARY}"
    assert any(r.name == "apprise" for r in caplog.records)  # Apprise did log the post
    assert CANARY not in caplog.text
