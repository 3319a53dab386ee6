"""Intake HTTP payloads, generated: every body gets either validated signals or one clear
line (`InputError`), never another exception; over real HTTP a bad body is a 400 with that
line and the handler never sees it (nothing half-accepted)."""

from __future__ import annotations

import asyncio
import json

import httpx
from hypothesis import given
from hypothesis import strategies as st

from tradpal.errors import InputError
from tradpal.intake_server import parse, start_intake

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False),
                    st.text(max_size=12), st.sampled_from(["buy", "sell", "BTC/USDT", "2024-01-01T00:00:00Z",
                                                          "limit", "market", "1e400", "-0", "nan"]))
KEYS = st.sampled_from(["symbol", "side", "quantity", "signal_id", "strategy", "timestamp", "order_type",
                        "limit_price", "stop_price", "reference_price", "extra", ""])
SIGNALISH = st.dictionaries(KEYS, SCALARS, max_size=8)
BODIES = st.one_of(SIGNALISH, st.lists(SIGNALISH, max_size=4), SCALARS,
                   st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner,
                                                                                                     max_size=3),
                                max_leaves=8))


@given(body=BODIES)
def test_any_json_body_gets_signals_or_one_clear_line(body):
    raw = json.dumps(body).encode()
    try:
        signals = parse(raw)
    except InputError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    assert signals and all(s["side"] in ("buy", "sell") and s["quantity"] > 0 for s in signals)


@given(raw=st.binary(max_size=64))
def test_any_bytes_get_signals_or_one_clear_line(raw):
    try:
        parse(raw)
    except InputError as exc:
        assert "\n" not in str(exc)


def test_over_http_a_bad_body_is_400_and_never_reaches_the_handler():
    seen: list = []

    async def handler(signals):
        seen.extend(signals)
        return [{"signal_id": s["signal_id"], "accepted": True} for s in signals]

    bodies = [b"{", b"[]", b'{"symbol": "BTC/USDT", "side": "buy", "quantity": "lots"}',
              json.dumps([{"symbol": "BTC/USDT", "side": "buy", "quantity": 1, "signal_id": "ok"},
                          {"symbol": "BTC/USDT", "side": "hold", "quantity": 1}]).encode()]

    async def go():
        server = await start_intake("127.0.0.1", 0, handler)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
                return [await client.post("/signals", content=b) for b in bodies]
        finally:
            await server.stop()

    answers = asyncio.run(go())
    assert [a.status_code for a in answers] == [400] * len(bodies)
    assert all(a.json()["error"] and "\n" not in a.json()["error"] for a in answers)
    assert seen == []  # the good first signal of the last body was not half-accepted
