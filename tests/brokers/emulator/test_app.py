"""The emulator over HTTP without ccxt: request signing, Binance's error shapes, faults."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from urllib.parse import urlencode

import httpx
import pytest

from brokers.emulator import EmulatorHandle, MarketSpec, serve
from tests.conftest import make_bars

KEY, SECRET = "app-test-key", "app-test-secret"
SYM = "BTC/USDT"


@pytest.fixture
def emu() -> Iterator[EmulatorHandle]:
    spec = MarketSpec(SYM, tick_size="0.01", step_size="0.001", min_qty="0.001", min_notional="10")
    rows = [(99, 101, 98, 100, 10), (101, 103, 98, 102, 10)]
    with serve(api_key=KEY, secret=SECRET, bars={SYM: make_bars(rows)}, balances={"USDT": "1000"},
               specs=[spec]) as handle:
        yield handle


@pytest.fixture
def client(emu: EmulatorHandle) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.base_url) as c:
        yield c


def signed(params: dict, *, secret: str = SECRET, stamp: int | None = None) -> str:
    query = urlencode({**params, "timestamp": stamp if stamp is not None else int(time.time() * 1000)})
    signature = hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
    return f"{query}&signature={signature}"


def test_public_endpoints(client: httpx.Client) -> None:
    assert client.get("/api/v3/ping").json() == {}
    assert abs(client.get("/api/v3/time").json()["serverTime"] - time.time() * 1000) < 5000
    info = client.get("/api/v3/exchangeInfo").json()
    filters = {f["filterType"]: f for f in info["symbols"][0]["filters"]}
    assert info["symbols"][0]["symbol"] == "BTCUSDT"
    assert (filters["LOT_SIZE"]["stepSize"], filters["NOTIONAL"]["minNotional"]) == ("0.00100000", "10.00000000")
    assert client.get("/api/v3/ticker/price", params={"symbol": "BTCUSDT"}).json()["price"] == "100.00000000"
    assert len(client.get("/api/v3/klines", params={"symbol": "BTCUSDT"}).json()) == 1
    assert client.get("/api/v3/ticker/24hr", params={"symbol": "NOPE"}).json()["code"] == -1121


def test_signed_requests_are_checked_like_binance(client: httpx.Client) -> None:
    ok = client.get(f"/api/v3/account?{signed({})}", headers={"X-MBX-APIKEY": KEY})
    assert ok.status_code == 200 and ok.json()["balances"] == [
        {"asset": "USDT", "free": "1000.00000000", "locked": "0.00000000"}]

    cases = [
        ({}, signed({}), 401, -2014),
        ({"X-MBX-APIKEY": "other"}, signed({}), 401, -2015),
        ({"X-MBX-APIKEY": KEY}, signed({}, secret="wrong"), 400, -1022),
        ({"X-MBX-APIKEY": KEY}, signed({}, stamp=int(time.time() * 1000) - 60_000), 400, -1021),
        ({"X-MBX-APIKEY": KEY}, urlencode({"timestamp": int(time.time() * 1000)}), 400, -1102),
    ]
    for headers, query, status, code in cases:
        answer = client.get(f"/api/v3/account?{query}", headers=headers)
        assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text


def test_orders_in_the_body_and_answer_types(client: httpx.Client, emu: EmulatorHandle) -> None:
    headers = {"X-MBX-APIKEY": KEY, "Content-Type": "application/x-www-form-urlencoded"}
    body = signed({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quoteOrderQty": "150",
                   "newClientOrderId": "q1", "newOrderRespType": "ACK"})
    ack = client.post("/api/v3/order", content=body, headers=headers).json()
    assert set(ack) == {"symbol", "orderId", "orderListId", "clientOrderId", "transactTime"}
    assert emu.engine.orders[ack["orderId"]].executed == 1.5  # 150 USDT at 100

    body = signed({"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "quantity": "1", "price": "99",
                   "newClientOrderId": "q2"})
    answer = client.post("/api/v3/order", content=body, headers=headers)
    assert (answer.status_code, answer.json()["code"]) == (400, -1102)  # no timeInForce

    query = signed({"symbol": "BTCUSDT", "origClientOrderId": "q1"})
    got = client.get(f"/api/v3/order?{query}", headers=headers).json()
    assert (got["status"], got["executedQty"], got["cummulativeQuoteQty"]) == ("FILLED", "1.50000000", "150.00000000")
    missing = client.get(f"/api/v3/order?{signed({'symbol': 'BTCUSDT', 'orderId': 7})}", headers=headers)
    assert (missing.status_code, missing.json()) == (400, {"code": -2013, "msg": "Order does not exist."})


def test_faults(client: httpx.Client, emu: EmulatorHandle) -> None:
    assert client.post("/admin/faults", json={"fail_next": 1, "rate_limit_next": 1, "retry_after_s": 3}).json()
    failed = client.get("/api/v3/ping")
    assert (failed.status_code, failed.json()["code"]) == (503, -1001)
    limited = client.get("/api/v3/ping")
    assert (limited.status_code, limited.json()["code"], limited.headers["Retry-After"]) == (429, -1003, "3")
    assert client.get("/api/v3/ping").status_code == 200

    emu.engine.faults["latency_ms"] = 150
    started = time.perf_counter()
    client.get("/api/v3/ping")
    assert time.perf_counter() - started >= 0.15
    assert client.get("/admin/state").json()["faults"]["latency_ms"] == 150  # admin: never delayed


def test_admin_moves_the_market(client: httpx.Client) -> None:
    assert client.post("/admin/advance", json={}).json()["prices"] == {SYM: "102.00000000"}
    assert client.post("/admin/price", json={"symbol": "BTCUSDT", "price": 101.5}).json()["prices"][SYM] == "101.50000000"
    state = client.get("/admin/state").json()
    assert (state["index"], state["bars"], state["orders"]) == (1, 2, 0)
    assert client.get("/api/v3/nothing").status_code == 404
