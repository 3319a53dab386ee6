"""HTTP intake for signals, so that a model process in any language can send them.

    POST /signals   one signal (JSON object) or a list of them
                    202 {"results": [{"signal_id": ..., "accepted": true}, ...]}
                    400 {"error": "signals[1], field 'side': unknown side 'hold' ..."}  (nothing accepted)
                    413 body larger than ``max_body`` bytes
    GET  /health    200 {"status": "ok"}

Bound to loopback by default. Bound anywhere else it needs a token (``TRADPAL_INTAKE_TOKEN``,
or ``token=``): POST then needs ``Authorization: Bearer <token>`` (401 otherwise).

Validation is `tradpal.signals.parse_signal_payload` (the intake step's rules); a payload
with one bad signal is refused whole, so nothing is half-accepted.

What happens to accepted signals is the **handler**, so the same server serves both live
paths::

    Handler = Callable[[list[dict]], Awaitable[list[dict]]]

    async def handler(signals: list[dict]) -> list[dict]:
        # signals: validated, normalised signal dicts (see tradpal.signals)
        # return one result per signal, in order:
        #   {"signal_id": id, "accepted": True, ...anything JSON-able}
        #   {"signal_id": id, "accepted": False, "reason": "one line"}
        ...

`emit_handler` (the default of ``tradpal intake``) emits each as the Prefect event
``tradpal.signal.received`` (the ``live-execution`` deployment's trigger); a streaming
session passes a handler that enqueues into its long-lived flow run. A handler that raises
answers 500 with the error's one line. The server is uvicorn on starlette (both come with
Prefect), bound to loopback by default.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tradpal.errors import InputError
from tradpal.signals import emit_signal, parse_signal_payload


class Busy(Exception):
    """A handler's refusal for now (too many signals waiting, stopping): 503, Retry-After 1."""


Handler = Callable[[list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]
MAX_BODY = 1 << 20  # 1 MiB


def parse(body: bytes) -> list[dict[str, Any]]:
    """The validated signals of a request body, or `InputError` with the reason."""
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"body is not valid JSON: {exc}") from None
    return parse_signal_payload(obj)


async def emit_handler(signals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Emit each signal as ``tradpal.signal.received`` (queued to Prefect's events client)."""
    return [{"signal_id": emit_signal(s), "accepted": True} for s in signals]


async def _read_limited(request: Request, max_body: int) -> bytes | None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def require_token(host: str, token: str | None) -> str | None:
    """The token the intake demands: ``token`` or ``TRADPAL_INTAKE_TOKEN``; none is needed on
    loopback, but an intake bound anywhere else without one is refused (`InputError`)."""
    token = token or os.environ.get("TRADPAL_INTAKE_TOKEN") or None
    if token is None and not is_loopback(host):
        raise InputError(f"intake: listening on {host} (not loopback) needs a token: set TRADPAL_INTAKE_TOKEN "
                         "(senders then send 'Authorization: Bearer <token>')")
    return token


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def make_app(handler: Handler, *, max_body: int = MAX_BODY, token: str | None = None) -> Starlette:
    """The ASGI app: POST /signals through ``handler``, GET /health. With ``token``, POST
    needs ``Authorization: Bearer <token>`` (401 otherwise)."""
    expected = f"Bearer {token}".encode() if token else None

    async def signals(request: Request) -> JSONResponse:
        if expected is not None and not hmac.compare_digest(request.headers.get("authorization", "").encode(),
                                                             expected):
            return JSONResponse({"error": "missing or wrong token (Authorization: Bearer <token>)"}, status_code=401)
        body = await _read_limited(request, max_body)
        if body is None:
            return JSONResponse({"error": f"body larger than {max_body} bytes"}, status_code=413)
        try:
            parsed = parse(body)
        except InputError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        try:
            results = await handler(parsed)
        except InputError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except Busy as exc:  # back-pressure: try again later
            return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "1"})
        except Exception as exc:  # the handler's failure, in one line, not a traceback
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=500)
        return JSONResponse({"results": results}, status_code=202)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/signals", signals, methods=["POST"]), Route("/health", health, methods=["GET"])])


async def serve_intake(host: str, port: int, handler: Handler = emit_handler, *, max_body: int = MAX_BODY,
                       started: Callable[[int], None] | None = None, token: str | None = None) -> None:
    """Serve the intake on ``host:port`` until cancelled (``port=0``: a free port).
    ``started(port)`` is called once it listens."""
    server = await start_intake(host, port, handler, max_body=max_body, token=token)
    if started is not None:
        started(server.port)
    try:
        await server.main_loop()
    finally:
        await server.stop()


async def start_intake(host: str, port: int, handler: Handler = emit_handler, *,
                       max_body: int = MAX_BODY, token: str | None = None) -> IntakeServer:
    """Start serving in the running event loop and return the server (``.port``;
    ``await .stop()``). A port that cannot be bound raises `InputError`, and so does a
    host other than loopback without a token (`require_token`)."""
    import socket

    import uvicorn

    token = require_token(host, token)
    config = uvicorn.Config(make_app(handler, max_body=max_body, token=token), host=host, port=port,
                            log_level="warning",
                            lifespan="off", access_log=False, timeout_graceful_shutdown=2)
    config.load()
    # IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on sockets that say they are
    # TCP. Without it the answer's last segment waited for the sender's delayed ACK (~40 ms) on
    # every keep-alive request that came soon after the previous one (measured: 68 -> 36 ms p50
    # back to back)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InputError(f"intake: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    server = IntakeServer(config)
    server.lifespan = config.lifespan_class(config)
    server.socket = sock
    await server.startup(sockets=[sock])
    return server


def _server_base():
    import uvicorn

    return uvicorn.Server


class IntakeServer(_server_base()):  # type: ignore[misc]
    """uvicorn's server on a socket we bound, without taking over signals or the loop."""

    socket: Any = None

    @property
    def port(self) -> int:
        return int(self.socket.getsockname()[1])

    async def stop(self) -> None:
        if self.started:
            self.should_exit = True
            self.started = False
            await self.shutdown(sockets=[self.socket])
