"""The connectivity breaker: consecutive broker errors halt the broker (step 4 then
refuses every order, naming the breaker) or fail over to a backup route; state in the
ledger (survives a restart), trips audited and alerted, reset audited."""

from __future__ import annotations

import asyncio

import pytest

from brokers.base import BrokerConnectionError, InsufficientFundsError, RateLimitError, Side
from risk.alerts import Alerter
from risk.connectivity import ConnectivityGuard
from tasks.context import PipelineConfig
from tasks.orders import client_order_id
from tests.tasks.conftest import SYM, FlakyBroker, ledger_context, raw_signals, run, run_through
from tradpal.ledger import Provenance

DOWN = BrokerConnectionError("connection reset by peer")


def live_ctx(ledger):
    ctx = ledger_context(ledger, kind="live", live=True, prices={SYM: 100.0},
                         config=PipelineConfig(order_timeout_s=1.0, poll_interval_s=0.01))
    return ctx, ctx.broker


def guard(primary, ledger, backup=None, receiver=None, n=3):
    alerter = Alerter([receiver[0]], throttle_s=0) if receiver else None
    return ConnectivityGuard(primary, backup, max_errors=n, ledger=ledger, namespace="test", alerter=alerter,
                             run_id=None)


def fail(g, method: str, times: int) -> None:
    for _ in range(times):
        with pytest.raises((BrokerConnectionError, RateLimitError)):
            run(getattr(g, method)())


def test_consecutive_errors_halt_the_broker_and_step_4_refuses_naming_the_breaker(ledger, receiver) -> None:
    ctx, paper = live_ctx(ledger)
    flaky = FlakyBroker(paper, {"get_account_info": 3}, DOWN)
    g = guard(flaky, ledger, receiver=receiver)
    fail(g, "get_account_info", 2)
    assert not g.halted and not ledger.active_breakers()
    fail(g, "get_account_info", 1)  # the third in a row
    assert g.halted
    [b] = ledger.active_breakers()
    assert (b["name"], b["scope"], b["value"], b["threshold"], b["until"]) == (
        "connectivity", "test|broker:paper", 3.0, 3.0, None)
    assert "3 consecutive broker errors on the primary route, the last: BrokerConnectionError" in b["reason"]
    ctx.broker = g
    assert run_through(raw_signals({"side": "buy"}, {"side": "sell"}), ctx, "pre_checks").empty
    rej = ledger.frame("rejections")
    assert len(rej) == 2 and all(r.startswith("breaker connectivity (broker:paper): 3 consecutive") for r in rej["reason"])
    audit = ledger.frame("audit_log")
    assert "breaker.tripped" in set(audit["event"])
    [alert] = [m["json"] for m in receiver[1] if "connectivity" in m["json"]["title"]]
    assert alert["title"] == "TradPal breaker tripped: connectivity" and "no route left" in alert["message"]
    # reset (audited), and a new guard (a restart) is not halted
    assert ledger.reset_breakers("network fixed", name="connectivity", prov=Provenance()) == ["connectivity:test|broker:paper"]
    assert not guard(paper, ledger).halted


def test_a_success_resets_the_count_and_refusals_do_not_count(ledger) -> None:
    _, paper = live_ctx(ledger)
    flaky = FlakyBroker(paper, {"get_account_info": {1, 2, 4, 5}}, RateLimitError("429"))
    g = guard(flaky, ledger)
    fail(g, "get_account_info", 2)
    run(g.get_account_info())  # the third call succeeds: the count starts again
    fail(g, "get_account_info", 2)
    assert g.errors == 2 and not g.halted
    refusing = FlakyBroker(paper, {"get_account_info": 5}, InsufficientFundsError("no"))
    g2 = guard(refusing, ledger)
    for _ in range(5):
        with pytest.raises(InsufficientFundsError):
            run(g2.get_account_info())
    assert g2.errors == 0 and not ledger.active_breakers()


def test_fail_over_to_the_backup_route_then_trade_through_it(ledger, receiver) -> None:
    ctx, paper = live_ctx(ledger)
    primary = FlakyBroker(paper, {"get_order_by_client_id": 99, "place_order": 99}, DOWN)  # this route is down
    g = guard(primary, ledger, backup=paper, receiver=receiver)
    ctx.broker = g
    for attempt in range(3):  # the placement task's tries: the third trips and fails over
        with pytest.raises(BrokerConnectionError):
            run_through(raw_signals({"signal_id": f"try{attempt}"}), ctx, "placement")
    assert g.route == "backup" and not g.halted
    [b] = ledger.active_breakers()
    assert (b["name"], b["scope"]) == ("connectivity", "test|route:paper")
    assert "failed over to the backup route" in b["reason"]
    out = run_through(raw_signals({"signal_id": "after"}), ctx, "positions")  # not blocked by a route trip
    assert out["client_order_id"].tolist() == [client_order_id("after")] and out["exec_type"].tolist() == ["FILL"]
    assert paper.position(SYM) == 1.0 and ctx.book.positions[SYM] == 1.0
    assert any("failed over" in m["json"]["message"] for m in receiver[1])
    # a restart while the route is still tripped starts on the backup
    assert guard(primary, ledger, backup=paper).route == "backup"
    ledger.reset_breakers("primary back", name="connectivity", prov=Provenance())
    assert guard(primary, ledger, backup=paper).route == "primary"


def test_the_backup_failing_in_turn_halts_the_broker(ledger) -> None:
    _, paper = live_ctx(ledger)
    g = guard(FlakyBroker(paper, {"get_positions": 9}, DOWN), ledger, backup=FlakyBroker(paper, {"get_positions": 9}, DOWN),
              n=2)
    fail(g, "get_positions", 2)
    assert g.route == "backup" and not g.halted
    fail(g, "get_positions", 2)
    assert g.halted
    assert {b["scope"] for b in ledger.active_breakers()} == {"test|route:paper", "test|broker:paper"}


def test_orders_are_asked_of_the_route_that_placed_them() -> None:
    from brokers.paper import PaperBroker
    from tests.brokers.helpers import market

    a, b = PaperBroker(cash=1000.0, name="v"), PaperBroker(cash=1000.0, name="v")
    for p in (a, b):
        p.set_price(SYM, 100.0)
    g = ConnectivityGuard(a, b, max_errors=1)

    async def go():
        first = await g.place_order(market(Side.BUY, 1.0, "x", at=None))
        g.active = b
        return await g.get_order_status(first.order_id, SYM)

    assert asyncio.run(go()).client_order_id == "x"


def test_the_factory_guards_the_broker_only_when_configured(monkeypatch, ledger) -> None:
    from brokers.factory import backup_broker, guarded, make_broker
    from risk.config import parse_risk_config
    from tradpal.config import load_settings

    base = "portfolio: {max_drawdown: 1, max_daily_loss: 1, max_gross_exposure: 1}\n"
    settings = load_settings()
    paper = make_broker(settings, prices={SYM: 100.0})
    assert guarded(paper, settings, parse_risk_config(base), ledger=ledger, namespace="live") is paper
    g = guarded(paper, settings, parse_risk_config(base + "breakers: {connectivity: {max_errors: 4}}"),
                ledger=ledger, namespace="live")
    assert isinstance(g, ConnectivityGuard) and g.max_errors == 4 and g.backup is None and g.name == "paper"
    for k, v in {"BROKER": "ccxt", "API_KEY": "k", "API_SECRET": "s", "EXCHANGE_URL": "http://127.0.0.1:9",
                 "BACKUP_EXCHANGE_URL": "http://127.0.0.1:10"}.items():
        monkeypatch.setenv(f"TRADPAL_{k}", v)
    settings = load_settings()
    backup = backup_broker(settings, "USDT")
    assert backup.name == make_broker(settings).name == "binance@127.0.0.1:9"  # one account, two routes
    assert backup.base_url == "http://127.0.0.1:10"
    monkeypatch.setenv("TRADPAL_BACKUP_EXCHANGE_URL", "ftp://x")
    from tradpal.errors import ConfigError

    with pytest.raises(ConfigError, match="TRADPAL_BACKUP_EXCHANGE_URL: .*expected an http"):
        load_settings()


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch):
    """The broker steps' Prefect tasks without their backoff delays."""
    from tasks import prefect_tasks

    for name, task in list(prefect_tasks.STEP_TASKS.items()):
        if task.retries:
            monkeypatch.setitem(prefect_tasks.STEP_TASKS, name, task.with_options(retry_delay_seconds=0))


@pytest.mark.usefixtures("prefect_api", "fast_retries")
def test_prefect_retries_carry_the_placement_over_to_the_backup(tmp_path) -> None:
    """The placement task's retries (real Prefect) meet the breaker: the third failure in a row
    fails over, and the task's next retry places the order through the backup route, once."""
    from prefect import flow

    from tasks.pipeline import run_batch
    from tasks.prefect_tasks import task_caller
    from tests.tasks.conftest import FLAT_100, bars, t
    from tradpal.ledger import Ledger

    led = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        ctx = ledger_context(led, market={SYM: bars([FLAT_100] * 3)}, config=PipelineConfig(order_timeout_s=None))
        paper = ctx.broker
        primary = FlakyBroker(paper, {"get_order_by_client_id": 99, "place_order": 99}, DOWN)  # the route is down
        ctx.broker = ConnectivityGuard(primary, paper, max_errors=3, ledger=led, namespace=ctx.namespace)
        ctx.monitor_until = t(3)

        @flow(name="test-failover", persist_result=False, validate_parameters=False)
        async def batch():
            return await run_batch(raw_signals({"timestamp": t(1)}), ctx, call=task_caller("test"))

        report = asyncio.run(batch())
        assert report["exec_type"].tolist() == ["FILL"] and paper.position(SYM) == 1.0
        # three failed calls on the primary (the first try sends without a look-up; a retry looks up first)
        assert primary.calls["get_order_by_client_id"] + primary.calls["place_order"] == 3
        assert ctx.broker.route == "backup"
        assert led.frame("orders")["status"].tolist() == ["FILLED"] and led.frame("rejections").empty
        [b] = led.active_breakers()
        assert b["scope"] == f"{ctx.namespace}|route:paper" and b["flow_run_id"] is not None
    finally:
        led.close()


def test_risk_status_shows_the_connectivity_breaker_and_reset_is_audited(tmp_path, capsys) -> None:
    from tradpal.cli import main
    from tradpal.ledger import Ledger

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    led = Ledger(url)
    try:
        g = ConnectivityGuard(FlakyBroker(_paper(), {"get_positions": 9}, DOWN), max_errors=1, ledger=led,
                              namespace="live")
        fail(g, "get_positions", 1)
    finally:
        led.close()
    assert main(["risk", "status", "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert "TRIPPED connectivity [live|broker:paper]" in out and "until reset" in out
    assert "1 consecutive broker errors on the primary route" in out
    assert main(["risk", "reset", "--reason", "venue back", "--name", "connectivity", "--database-url", url]) == 0
    assert "reset 1 breaker(s): connectivity:live|broker:paper" in capsys.readouterr().out
    led = Ledger(url)
    try:
        reset = led.frame("audit_log").query("event == 'breaker.reset'")
        assert reset["payload"].iloc[0]["reason"] == "venue back"
    finally:
        led.close()


def _paper():
    from brokers.paper import PaperBroker

    broker = PaperBroker(cash=1000.0)
    broker.set_price(SYM, 100.0)
    return broker
