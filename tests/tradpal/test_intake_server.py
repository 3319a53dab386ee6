from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tradpal.errors import InputError
from tradpal.intake_server import start_intake

SIGNAL = {"symbol": "ETH/BTC", "side": "buy", "quantity": 0.5, "signal_id": "abc"}


async def _with_server(handler, fn, **kw):
    server = await start_intake("127.0.0.1", 0, handler, **kw)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            return await fn(client)
    finally:
        await server.stop()


def run(handler, fn, **kw):
    return asyncio.run(_with_server(handler, fn, **kw))


def test_signals_go_to_the_handler_and_answer_202():
    got: list[dict] = []

    async def handler(signals):
        got.extend(signals)
        return [{"signal_id": s["signal_id"], "accepted": True} for s in signals]

    async def post(client):
        one = await client.post("/signals", json=SIGNAL)
        many = await client.post("/signals", json=[{**SIGNAL, "signal_id": "b"}, {**SIGNAL, "signal_id": "c"}])
        return one, many, await client.get("/health")

    one, many, health = run(handler, post)
    assert one.status_code == 202 and one.json() == {"results": [{"signal_id": "abc", "accepted": True}]}
    assert many.status_code == 202 and [r["signal_id"] for r in many.json()["results"]] == ["b", "c"]
    assert [s["signal_id"] for s in got] == ["abc", "b", "c"] and got[0]["symbol"] == "ETH/BTC"
    assert health.status_code == 200 and health.json() == {"status": "ok"}


def test_bad_input_is_refused_whole_with_the_reason():
    got: list[dict] = []

    async def handler(signals):
        got.extend(signals)
        return [{"signal_id": s["signal_id"], "accepted": True} for s in signals]

    async def post(client):
        return (await client.post("/signals", json=[SIGNAL, {**SIGNAL, "signal_id": "x", "side": "hold"}]),
                await client.post("/signals", content=b"{not json"),
                await client.post("/signals", content=json.dumps([{**SIGNAL, "pad": "x" * 600}]).encode()),
                await client.get("/signals"))

    bad, not_json, too_big, wrong_method = run(handler, post, max_body=500)
    assert bad.status_code == 400 and bad.json()["error"].startswith("signals[1], field 'side': unknown side 'hold'")
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]
    assert too_big.status_code == 413
    assert wrong_method.status_code == 405
    assert got == []  # nothing half-accepted


def test_a_failing_handler_answers_500_in_one_line():
    async def handler(signals):
        raise RuntimeError("queue full")

    async def post(client):
        return await client.post("/signals", json=SIGNAL)

    r = run(handler, post)
    assert r.status_code == 500 and r.json() == {"error": "RuntimeError: queue full"}


def test_a_busy_port_is_one_line():
    async def handler(signals):
        return []

    async def both():
        first = await start_intake("127.0.0.1", 0, handler)
        try:
            with pytest.raises(InputError, match=f"cannot listen on 127.0.0.1:{first.port}"):
                await start_intake("127.0.0.1", first.port, handler)
        finally:
            await first.stop()

    asyncio.run(both())


def test_with_a_token_a_signal_without_it_is_refused_401():
    async def handler(signals):
        return [{"signal_id": s["signal_id"], "accepted": True} for s in signals]

    async def post(client):
        bare = await client.post("/signals", json=SIGNAL)
        wrong = await client.post("/signals", json=SIGNAL, headers={"Authorization": "Bearer nope"})
        right = await client.post("/signals", json=SIGNAL, headers={"Authorization": "Bearer s3cret-token"})
        return bare, wrong, right

    bare, wrong, right = run(handler, post, token="s3cret-token")
    assert (bare.status_code, wrong.status_code, right.status_code) == (401, 401, 202)
    assert "s3cret" not in bare.text and "token" in bare.json()["error"]


def test_beyond_loopback_the_intake_needs_a_token(monkeypatch):
    from tradpal.intake_server import require_token

    monkeypatch.delenv("TRADPAL_INTAKE_TOKEN", raising=False)
    with pytest.raises(InputError, match="0.0.0.0 .*needs a token"):
        asyncio.run(start_intake("0.0.0.0", 0, None))  # refused before anything binds
    assert require_token("127.0.0.1", None) is None and require_token("::1", None) is None
    monkeypatch.setenv("TRADPAL_INTAKE_TOKEN", "t0k")
    assert require_token("0.0.0.0", None) == "t0k"


def test_a_busy_handler_answers_503_with_retry_after():
    from tradpal.streaming import QueueFull

    async def handler(signals):
        raise QueueFull("10000 signals already waiting (limit 10000)")

    resp = run(handler, lambda client: client.post("/signals", json=SIGNAL))
    assert resp.status_code == 503 and resp.headers["retry-after"] == "1" and "already waiting" in resp.json()["error"]


def test_answers_go_out_at_once_on_a_kept_alive_connection():
    """The accepted connections have TCP_NODELAY (asyncio sets it only on sockets that say
    they are TCP): without it an answer's last segment waits for the sender's delayed ACK
    whenever the next signal follows soon on the same connection."""
    import socket

    async def handler(signals):
        return [{"signal_id": s["signal_id"], "accepted": True} for s in signals]

    async def go():
        server = await start_intake("127.0.0.1", 0, handler)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
                assert (await client.post("/signals", json=SIGNAL)).status_code == 202
                socks = [p.transport.get_extra_info("socket") for p in server.server_state.connections]
                return [s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in socks]
        finally:
            await server.stop()

    flags = asyncio.run(go())
    assert flags and all(flags), flags
