"""Fault injection for the emulator's HTTP face: ``FaultMiddleware`` reads ``engine.faults``
on every request outside ``/admin`` and logs the request in ``engine.requests``.

What a fault *is* (when it fires, on which request) lives here, venue-neutral; what it
*says* (status, error code, words) is the dialect's ``FaultAnswers``.

Keys of ``engine.faults`` (set by the test or by ``POST /admin/faults``):

    latency_ms          added before every answer
    fail_next           the next N requests answer "unavailable" (Binance 503 -1001)
                        without reaching the engine: nothing is executed
    lose_next           the next N requests reach the engine, then answer "execution
                        status unknown" (Binance 503 -1007): an order may exist
    busy_next           the next N requests answer the venue's own "server busy, try again"
                        (Bybit: HTTP 200 retCode 10016 "System error. Please try again
                        later."; Binance has none of its own: 503 -1001) without reaching
                        the engine
    busy_executes       with ``busy_next``: the request reaches the engine first, then
                        answers busy (an order may exist)
    rate_limit_next     the next N requests answer 429 (Binance -1003) with Retry-After
    retry_after_s       that Retry-After, in seconds (default 1)
    ban_on_abuse_s      a request sent while a 429's Retry-After is still running bans
                        the client for this many seconds (0 / absent: no ban)
    ban_s               ban the client for this many seconds from the next request on:
                        every request answers 418 (Binance -1003 "IP banned until <ms>")
                        with Retry-After, and reaches nothing, until the ban ends
    banned_until_ms     the running ban's end (epoch ms; set by the two keys above)
    drop_next           the next N requests reach the engine, then the server closes the
                        connection without an answer (an order is accepted, its answer
                        never arrives)
    drop_mid_response_next
                        the next N requests reach the engine, then the server sends the
                        answer's headers and half its body and closes the connection
    fault_on            restrict the counted faults (fail/lose/rate_limit/drop) to
                        requests whose ``"METHOD /path"`` starts with this text, e.g.
                        ``"POST /api/v3/order"``; other requests pass (default: all)

Counted faults are consumed one request at a time in the order fail, rate limit, lose,
drop, drop mid-response, busy. The keys are a stable interface (the reliability campaign sets
them directly); new ones are only ever added.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from brokers.emulator.engine import Engine

COUNTED = ("fail_next", "rate_limit_next", "lose_next", "drop_next", "drop_mid_response_next", "busy_next")


@dataclass(frozen=True)
class FaultAnswers:
    """How a dialect words each fault (each returns the complete HTTP answer)."""

    unavailable: Callable[[], Response]  # not executed; try again
    status_unknown: Callable[[], Response]  # executed or not: look it up
    rate_limited: Callable[[int], Response]  # Retry-After seconds
    banned: Callable[[int, int], Response]  # (banned until epoch ms, Retry-After seconds)
    busy: Callable[[], Response] | None = None  # the venue's own "server error, try again" (None: unavailable)


@dataclass(frozen=True)
class Decision:
    latency_s: float
    fault: str | None  # a COUNTED key, "banned", or None
    retry_after_s: int
    banned_until_ms: int = 0


def decide(faults: dict[str, Any], method: str, path: str, now_ms: int) -> Decision:
    """What happens to one request, consuming counts (call with the engine's lock held)."""
    latency = float(faults.get("latency_ms", 0)) / 1000
    retry_after = int(faults.get("retry_after_s", 1))
    if faults.get("ban_s"):
        faults["banned_until_ms"] = now_ms + int(float(faults.pop("ban_s")) * 1000)
    if int(faults.get("ban_on_abuse_s", 0) or 0) > 0 and now_ms < int(faults.get("retry_until_ms", 0)):
        faults["banned_until_ms"] = now_ms + int(float(faults["ban_on_abuse_s"]) * 1000)
        faults.pop("retry_until_ms", None)
    until = int(faults.get("banned_until_ms", 0))
    if now_ms < until:
        return Decision(latency, "banned", max(1, -(-(until - now_ms) // 1000)), until)
    if not f"{method} {path}".startswith(str(faults.get("fault_on") or "")):
        return Decision(latency, None, retry_after)
    for name in COUNTED:
        if int(faults.get(name, 0)) > 0:
            faults[name] = int(faults[name]) - 1
            if name == "rate_limit_next":
                faults["retry_until_ms"] = now_ms + retry_after * 1000
            return Decision(latency, name, retry_after)
    return Decision(latency, None, retry_after)


class FaultMiddleware:
    """Applies ``engine.faults`` to every request outside ``/admin`` (see the module
    docstring) and appends ``(time.monotonic(), method, path)`` to ``engine.requests``."""

    def __init__(self, app: ASGIApp, engine: Engine, answers: FaultAnswers) -> None:
        self.app = app
        self.engine = engine
        self.answers = answers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/admin"):
            await self.app(scope, receive, send)
            return
        with self.engine.lock:
            self.engine.requests.append((time.monotonic(), scope["method"], scope["path"]))
            decision = decide(self.engine.faults, scope["method"], scope["path"], self.engine.now_ms())
        if decision.latency_s > 0:
            await asyncio.sleep(decision.latency_s)
        fault = decision.fault
        if fault is None:
            await self.app(scope, receive, send)
            return
        if fault in ("drop_next", "drop_mid_response_next"):
            await self._drop(scope, receive, send, mid_response=fault == "drop_mid_response_next")
            return
        if fault == "lose_next":
            await self.app(scope, receive, _discard)
            response = self.answers.status_unknown()
        elif fault == "busy_next":
            if self.engine.faults.get("busy_executes"):
                await self.app(scope, receive, _discard)
            response = (self.answers.busy or self.answers.unavailable)()
        elif fault == "fail_next":
            response = self.answers.unavailable()
        elif fault == "rate_limit_next":
            response = self.answers.rate_limited(decision.retry_after_s)
        else:
            response = self.answers.banned(decision.banned_until_ms, decision.retry_after_s)
        await response(scope, receive, send)

    async def _drop(self, scope: Scope, receive: Receive, send: Send, *, mid_response: bool) -> None:
        """Let the engine execute the request, then close the connection: before any
        answer, or after the headers and half the body."""
        messages: list[Message] = []

        async def keep(message: Message) -> None:
            messages.append(message)

        await self.app(scope, receive, keep)
        if mid_response and messages:
            body = b"".join(m.get("body", b"") for m in messages[1:])
            await send(messages[0])  # the headers, with the full Content-Length
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
        await _close_connection(send)


async def _close_connection(send: Send) -> None:
    """Abort the TCP connection under ``send`` (uvicorn's request cycle holds it as
    ``transport``), then let the server see it go. Without a transport to reach, raise:
    the server then closes the connection itself (after a 500 if nothing was sent)."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise ConnectionAbortedError("emulator fault: connection dropped")
    transport.abort()
    for _ in range(3):  # connection_lost runs on the next loop iterations
        await asyncio.sleep(0)


async def _discard(message: Message) -> None:
    return None
