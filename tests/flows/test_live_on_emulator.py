"""`live_execution` with TRADPAL_BROKER=ccxt: the real ccxt client against the emulator
(Binance; the first test also Bybit) over HTTP, on a real Prefect API. The ledger must
agree with the venue."""

from __future__ import annotations

import asyncio
import bisect
import io
import logging

import pandas as pd
import pytest
from prefect import flow

from brokers.base import BrokerError
from brokers.ccxt import CcxtBroker
from brokers.factory import make_broker
from flows.live_execution import live_execution
from tests.emulated_venue import SYMBOL, canary, start_emulator, use_emulator
from tradpal.config import load_settings
from tradpal.ledger import TABLES, Ledger


@pytest.fixture
def venue(monkeypatch):
    secret = canary()
    handle = start_emulator(secret)
    use_emulator(monkeypatch, handle, secret)
    yield handle, secret
    handle.stop()


def signal(signal_id: str, quantity: float = 0.1) -> dict:
    return {"timestamp": pd.Timestamp.now(tz="UTC").isoformat(), "symbol": SYMBOL, "side": "buy",
            "quantity": quantity, "signal_id": signal_id}


def run(signals: list[dict], db: str) -> dict:
    return asyncio.run(live_execution(signals, quote="BTC", database_url=db))


def assert_ledger_matches_venue(ledger: Ledger, engine) -> None:
    orders = ledger.frame("orders").set_index("client_order_id")
    venue_orders = {o.client_order_id: o for o in engine.orders.values()}
    assert set(venue_orders) == set(orders.index)
    for coid, em in venue_orders.items():
        row = orders.loc[coid]
        assert row["status"] == em.status and row["broker_order_id"] == str(em.order_id)
        assert row["filled_quantity"] == pytest.approx(float(em.executed), rel=1e-12)
    fills = ledger.frame("fills")
    assert sorted(fills["trade_id"]) == sorted(str(t.trade_id) for t in engine.trades)
    assert fills["price"].tolist() == pytest.approx([float(t.price) for t in engine.trades], rel=1e-12)


@pytest.fixture
def each_venue(request, monkeypatch):
    secret = canary()
    handle = start_emulator(secret, request.param)
    use_emulator(monkeypatch, handle, secret)
    yield handle, request.param
    handle.stop()


@pytest.mark.parametrize(("each_venue", "side"), [
    ("binance", "buy"), ("bybit", "sell"),  # a Bybit sell pays its fee in BTC, the quote
    pytest.param("bybit", "buy"),
], indirect=["each_venue"])
def test_live_run_fills_on_the_emulator_and_the_ledger_agrees(prefect_api, each_venue, side, tmp_path):
    handle, dialect = each_venue
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    summary = run([{**signal("emu-1"), "side": side}], db)
    assert summary["n_fills"] == 1 and summary["rejected"] == 0
    ledger = Ledger(db)
    assert len(handle.engine.orders) == 1
    assert_ledger_matches_venue(ledger, handle.engine)
    assert ledger.frame("orders")["venue"].iloc[0] == f"{dialect}@127.0.0.1:{handle.port}"
    audit = ledger.frame("audit_log", run_id=summary["run_id"])
    assert "reconcile.completed" in set(audit["event"])


@pytest.mark.parametrize(("faults", "sends"), [
    ({"fail_next": 1}, 2),  # 503 -1001: not executed, sent again
    ({"lose_next": 1}, 1),  # 503 -1007: executed, answer lost
    ({"drop_next": 1}, 1),  # executed, connection closed before the answer
    ({"drop_mid_response_next": 1}, 1),  # executed, connection closed mid-answer
    ({"ban_s": 1.0}, 2),  # 418 IP ban: refused (lookups too) until it ends, then sent again
], ids=["503", "lost-answer", "dropped", "dropped-mid-answer", "ip-ban"])
def test_placement_fault_is_retried_into_exactly_one_order(prefect_api, venue, tmp_path, monkeypatch, faults, sends):
    """A fault on the first placement: the task retries, looks the client id up before
    sending again, and exactly one order exists, filled, in the ledger as at the venue."""
    handle, _ = venue
    original, calls = CcxtBroker.place_order, []

    async def faulty_place(self, order):
        if not calls:
            handle.engine.faults.update(faults)
        calls.append(order.client_order_id)
        return await original(self, order)

    monkeypatch.setattr(CcxtBroker, "place_order", faulty_place)
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    summary = run([signal(f"emu-{'-'.join(faults)}")], db)
    assert summary["n_fills"] == 1
    assert len(handle.engine.orders) == 1
    assert len(calls) == sends  # an executed order is found by client id, never re-sent
    assert_ledger_matches_venue(Ledger(db), handle.engine)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.stream = io.StringIO()

    def emit(self, record: logging.LogRecord) -> None:
        self.stream.write(f"{record.name} {record.getMessage()} {record.exc_text or ''}\n")


def _artifacts_text(flow_run_ids: list[str]) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def read() -> str:
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=flow_run_ids)))
            return "\n".join(f"{a.key} {a.data} {a.description}" for a in found)

    return asyncio.run(read())


def test_the_secret_appears_nowhere(prefect_api, venue, tmp_path, monkeypatch, capfd):
    handle, secret = venue
    capture = _Capture()
    root = logging.getLogger()
    root.addHandler(capture)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    try:
        summary = run([signal("canary-ok")], db)
        # a failing run too: the venue refuses our signature (wrong secret, also a canary)
        wrong = canary()
        monkeypatch.setenv("TRADPAL_API_SECRET", wrong)
        with pytest.raises(BrokerError) as failed:
            run([signal("canary-bad")], db)
    finally:
        root.removeHandler(capture)
        root.setLevel(old_level)
    assert summary["n_fills"] == 1
    ledger = Ledger(db)
    dump = "\n".join(ledger.frame(t).to_csv() for t in TABLES)
    flow_runs = [r for r in ledger.frame("runs")["flow_run_id"].dropna()]
    artifacts = _artifacts_text(flow_runs)
    assert "live-summary" in artifacts
    out, err = capfd.readouterr()
    chain = []
    exc: BaseException | None = failed.value
    while exc is not None:
        chain.append(f"{type(exc).__name__}: {exc!s} {exc!r} {getattr(exc, 'broker_message', '')}")
        exc = exc.__cause__ or exc.__context__
    texts = {"ledger": dump, "artifacts": artifacts, "stdout": out, "stderr": err,
             "logs": capture.stream.getvalue(), "exception": "\n".join(chain)}
    assert "AuthenticationError" in texts["exception"] or "Authentication" in texts["exception"]
    for where, text in texts.items():
        for s in (secret, wrong):
            assert s not in text, f"secret leaked into {where}"


@flow(name="venue-reader", persist_result=False)
async def venue_reader(lookups: int) -> int:
    """A run that only reads from the venue account: the broker from configuration (as
    live_execution builds it), ``lookups`` look-ups by client id."""
    broker = make_broker(load_settings(), quote="BTC")
    async with broker:
        for i in range(lookups):
            await broker.get_order_by_client_id(f"tp-reader-{i}", SYMBOL)
    return lookups


def test_two_concurrent_runs_together_keep_the_venue_account_rate(prefect_api, venue, monkeypatch):
    """Two flow runs at once on one venue account: the Prefect rate limit (5 requests/s,
    bursts of 3) spaces their requests together, as counted at the emulator. (Without it
    two live runs sent their 22 requests in 1.5 s, 16 of them within one second.)

    The runs only read: two live runs that trade at once on one account fail step 7,
    whose book check compares each run's own book with the whole account."""
    handle, _ = venue
    rate, burst = 5.0, 3
    monkeypatch.setenv("TRADPAL_VENUE_RATE_LIMIT", str(rate))
    monkeypatch.setenv("TRADPAL_VENUE_RATE_BURST", str(burst))

    async def both() -> list[int]:
        return await asyncio.gather(venue_reader(8), venue_reader(8))

    assert asyncio.run(both()) == [8, 8]
    times = sorted(t for t, _, _ in handle.engine.requests)
    assert len(times) == 18  # two exchangeInfo + sixteen look-ups
    busiest = max(bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times))
    assert busiest <= burst + rate + 1  # any one second: the burst plus what frees in it (+1: edges)
    assert times[-1] - times[0] >= (len(times) - burst) / rate * 0.8  # and it did hold them back

    from prefect.client.orchestration import get_client

    async def limits() -> list[str]:
        async with get_client() as client:
            return [lim.name for lim in await client.read_global_concurrency_limits(limit=200)]

    assert sum(name.startswith(f"tradpal-venue-binance-127.0.0.1-{handle.port}-") for name in asyncio.run(limits())) == 1


@pytest.mark.parametrize(("quantity", "reason"), [
    (0.005, "notional 0.000497383 below the venue's minimum notional 0.001 for ETH/BTC"),
    (0.0004, "quantity 0.0004 rounds to 0 at the venue's amount step 0.001 for ETH/BTC"),
], ids=["min-notional", "amount-step"])
def test_step_4_refuses_what_the_venue_would_refuse_before_sending_it(prefect_api, venue, tmp_path, quantity, reason):
    handle, _ = venue
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    summary = run([signal("tiny", quantity)], db)
    assert summary["rejected"] == 1 and summary["n_fills"] == 0
    assert handle.engine.orders == {}
    assert not [p for _, m, p in handle.engine.requests if m == "POST"]  # nothing was sent
    [rejection] = Ledger(db).frame("rejections").to_dict("records")
    assert rejection["reason"] == reason
    assert rejection["step"] == "pre_checks"
