from __future__ import annotations

import pytest

from tradpal.cli import main
from tradpal.errors import InputError
from tradpal.signals import parse_signal_payload, submit_signal, validate_signal


def test_a_valid_signal_is_normalised():
    s = validate_signal({"symbol": " btc/usdt", "side": "BUY", "quantity": "0.01", "strategy": "sma",
                         "reference_price": 65000, "timestamp": 1_700_000_000_000})
    assert s["symbol"] == "BTC/USDT" and s["side"] == "buy" and s["quantity"] == 0.01
    assert s["timestamp"] == "2023-11-14T22:13:20+00:00" and s["order_type"] == "market"
    assert s["signal_id"].startswith("sig-") and s["reference_price"] == 65000.0 and s["strategy"] == "sma"


@pytest.mark.parametrize(("raw", "message"), [
    ({"symbol": "BTC/USDT", "side": "hold", "quantity": 1}, "field 'side': unknown side 'hold'"),
    ({"symbol": "BTCUSDT", "side": "buy", "quantity": 1}, "field 'symbol': symbol must look like BASE/QUOTE"),
    ({"symbol": "BTC/USDT", "side": "buy", "quantity": 0}, "field 'quantity': quantity must be a number > 0"),
    ({"symbol": "BTC/USDT", "side": "buy"}, "field 'quantity': required"),
    ({"symbol": "BTC/USDT", "side": "buy", "quantity": 1, "colour": "red"}, "unknown field 'colour'"),
    ({"symbol": "BTC/USDT", "side": "buy", "quantity": 1, "order_type": "limit"}, "field 'limit_price': limit order"),
    ({"symbol": "BTC/USDT", "side": "buy", "quantity": 1, "timestamp": "yesterday"}, "field 'timestamp': cannot parse"),
    ({"symbol": "BTC/USDT", "side": "buy", "quantity": True}, "field 'quantity': must be a number"),
    ({"symbol": "BTC/USDT", "side": "buy", "quantity": 1, "signal_id": "x" * 129}, "signal_id must be 1 to 128"),
    ({"symbol": "BTC/USDT", "side": "buy", "quantity": float("inf")}, "must be a finite number"),
])
def test_an_invalid_signal_is_refused_with_one_line(raw, message):
    with pytest.raises(InputError) as err:
        validate_signal(raw)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_payload_names_the_bad_signal_and_refuses_repeated_ids():
    ok = {"symbol": "BTC/USDT", "side": "buy", "quantity": 1}
    assert len(parse_signal_payload([ok, ok])) == 2  # generated ids differ
    with pytest.raises(InputError, match=r"signals\[1\], field 'side'"):
        parse_signal_payload([ok, {**ok, "side": "hold"}])
    with pytest.raises(InputError, match=r"signals\[1\], field 'signal_id': 'a' repeated"):
        parse_signal_payload([{**ok, "signal_id": "a"}, {**ok, "signal_id": "a"}])
    with pytest.raises(InputError, match="expected a signal"):
        parse_signal_payload("buy")


def test_submit_without_a_prefect_api_says_so(monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: None}), pytest.raises(InputError, match="PREFECT_API_URL"):
        submit_signal("BTC/USDT", "buy", 0.01)


def test_cli_refuses_a_bad_signal_with_exit_2(capsys):
    assert main(["signal", "submit", "--symbol", "BTC/USDT", "--side", "hold", "--quantity", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "tradpal: error: signal, field 'side': unknown side 'hold' (expected buy or sell)"


def test_submitted_signals_reach_the_prefect_api_as_events(prefect_api):
    """From plain code and from inside a running event loop (a model process using asyncio)."""
    import asyncio
    import time

    from prefect.client.orchestration import get_client

    sync_id = submit_signal("BTC/USDT", "buy", 0.01, strategy="s", price=100.0, signal_id="ev-sync")

    async def from_a_loop() -> str:
        return submit_signal("ETH/BTC", "sell", 1, signal_id="ev-async")

    async_id = asyncio.run(from_a_loop())

    async def received() -> dict:
        async with get_client() as client:
            r = await client.request("POST", "/events/filter",
                                     json={"filter": {"event": {"name": ["tradpal.signal.received"]}}})
            return {e["resource"]["prefect.resource.id"]: e["payload"] for e in r.json()["events"]}

    deadline, got = time.monotonic() + 30, {}
    while time.monotonic() < deadline and len(got) < 2:
        got = asyncio.run(received())
        time.sleep(0.5)
    assert set(got) == {f"tradpal.signal.{sync_id}", f"tradpal.signal.{async_id}"}
    assert got["tradpal.signal.ev-sync"]["reference_price"] == 100.0 and got["tradpal.signal.ev-sync"]["strategy"] == "s"
