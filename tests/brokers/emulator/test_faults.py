"""The emulator's faults over HTTP without ccxt: bans, dropped connections, the request
log, and which request a counted fault hits."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from brokers.emulator import EmulatorHandle, MarketSpec, serve
from brokers.emulator.faults import decide
from tests.brokers.emulator.test_app import KEY, SECRET, SYM, signed
from tests.conftest import make_bars

ORDER_HEADERS = {"X-MBX-APIKEY": KEY, "Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def emu() -> Iterator[EmulatorHandle]:
    spec = MarketSpec(SYM, tick_size="0.01", step_size="0.001", min_qty="0.001", min_notional="10")
    with serve(api_key=KEY, secret=SECRET, bars={SYM: make_bars([(99, 101, 98, 100, 10)])},
               balances={"USDT": "1000"}, specs=[spec]) as handle:
        yield handle


@pytest.fixture
def client(emu: EmulatorHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.base_url) as c:
        yield c


def buy(client: httpx.Client, coid: str) -> httpx.Response:
    body = signed({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "1", "newClientOrderId": coid})
    return client.post("/api/v3/order", content=body, headers=ORDER_HEADERS)


def test_a_ban_refuses_everything_until_it_ends(client: httpx.Client, emu: EmulatorHandle) -> None:
    assert client.post("/admin/faults", json={"ban_s": 1.2}).status_code == 200
    banned = buy(client, "ban-1")
    assert banned.status_code == 418 and banned.json()["code"] == -1003
    until = emu.engine.faults["banned_until_ms"]
    assert f"IP banned until {until}" in banned.json()["msg"]
    assert banned.headers["Retry-After"] in ("1", "2")
    assert client.get("/api/v3/ping").status_code == 418
    assert client.get("/admin/state").status_code == 200  # admin is never banned
    assert emu.engine.orders == {}
    time.sleep(max(0.0, until / 1000 - time.time()) + 0.05)
    assert buy(client, "ban-1").status_code == 200
    assert len(emu.engine.orders) == 1


def test_ignoring_retry_after_gets_the_client_banned(client: httpx.Client, emu: EmulatorHandle) -> None:
    emu.engine.faults.update(rate_limit_next=1, retry_after_s=5, ban_on_abuse_s=30)
    assert client.get("/api/v3/ping").status_code == 429
    assert client.get("/api/v3/ping").status_code == 418  # sent before Retry-After ran out
    assert client.get("/api/v3/time").status_code == 418


@pytest.mark.parametrize(("fault", "error"), [("drop_next", "without sending a response"),
                                               ("drop_mid_response_next", "complete message body")])
def test_a_dropped_connection_loses_the_answer_not_the_order(
    client: httpx.Client, emu: EmulatorHandle, fault: str, error: str
) -> None:
    emu.engine.faults[fault] = 1
    with pytest.raises(httpx.RemoteProtocolError, match=error):
        buy(client, "drop-1")
    [order] = emu.engine.orders.values()  # accepted and filled before the connection went
    assert (order.client_order_id, order.status) == ("drop-1", "FILLED")
    found = client.get(f"/api/v3/order?{signed({'symbol': 'BTCUSDT', 'origClientOrderId': 'drop-1'})}",
                       headers=ORDER_HEADERS)
    assert found.json()["orderId"] == order.order_id


def test_fault_on_picks_the_request_and_every_request_is_logged(client: httpx.Client, emu: EmulatorHandle) -> None:
    emu.engine.faults.update(fail_next=1, fault_on="POST /api/v3/order")
    assert client.get("/api/v3/ping").status_code == 200  # not the targeted request: passes
    assert buy(client, "f-1").status_code == 503
    assert buy(client, "f-1").status_code == 200
    assert [(m, p) for _, m, p in emu.engine.requests] == [
        ("GET", "/api/v3/ping"), ("POST", "/api/v3/order"), ("POST", "/api/v3/order")]
    assert client.get("/admin/state").json()["requests"] == 3


def test_decide_consumes_counted_faults_in_order() -> None:
    faults: dict = {"fail_next": 1, "rate_limit_next": 1, "drop_next": 1, "retry_after_s": 2}
    picked = [decide(faults, "GET", "/x", 1_000).fault for _ in range(4)]
    assert picked == ["fail_next", "rate_limit_next", "drop_next", None]
    assert faults["retry_until_ms"] == 3_000
    ban = {"ban_s": 2.5}
    first = decide(ban, "GET", "/x", 10_000)
    assert (first.fault, first.banned_until_ms, first.retry_after_s) == ("banned", 12_500, 3)
    assert decide(ban, "GET", "/x", 12_500).fault is None and "ban_s" not in ban
