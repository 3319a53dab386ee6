"""What every HTTP dialect of the emulator shares: symbols by the venue's market id, the
endpoint wrapper (parameters in, JSON out, a refusal as the venue's error answer) and
the admin endpoints.

    POST /admin/advance {"bars": n}      POST /admin/price {"symbol", "price"}
    POST /admin/faults {...}             GET  /admin/state
    (no authentication: the server listens on 127.0.0.1 only)

The engine refuses with ``VenueError``s carrying Binance's codes (the emulator's own
vocabulary); each dialect answers them in its venue's words (``error_response``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from brokers.emulator.engine import Engine, VenueError, bad_request

Handler = Callable[[Request], Awaitable[Response]]
Reader = Callable[[Request], Awaitable[dict[str, Any]]]
# the engine's refusal for a request whose parameters cannot be read
ILLEGAL = (-1100, "Illegal characters found in a parameter.")


def fmt(x: Decimal | None) -> str:
    """A number as both dialects write it: a string with 8 decimals."""
    return f"{(x if x is not None else Decimal(0)):.8f}"


class Dialect:
    """A venue's HTTP face over one engine and one API key / secret pair."""

    def __init__(self, engine: Engine, api_key: str, secret: str) -> None:
        self.engine = engine
        self._api_key = api_key
        self._secret = secret.encode()
        self._by_venue_id = {spec.venue_id: symbol for symbol, spec in engine.specs.items()}

    # -- to be given by each dialect

    def api_routes(self) -> list[Route]:
        raise NotImplementedError

    def error_response(self, exc: VenueError) -> Response:
        """The venue's answer to a refusal."""
        raise NotImplementedError

    # -- shared plumbing

    def routes(self) -> list[Route]:
        admin = [
            ("/admin/advance", "POST", self.admin_advance),
            ("/admin/price", "POST", self.admin_price),
            ("/admin/faults", "POST", self.admin_faults),
            ("/admin/state", "GET", self.admin_state),
        ]
        return self.api_routes() + [Route(p, self.endpoint(public_params, h), methods=[m]) for p, m, h in admin]

    async def signed_params(self, request: Request) -> dict[str, Any]:
        """Check the request's key, signature and timestamp; its parameters."""
        raise NotImplementedError

    def route_table(self, public: list[tuple[str, str, Any]], signed: list[tuple[str, str, Any]],
                    wrap: Callable[[Any], Any] = lambda handler: handler) -> list[Route]:
        """Routes of ``(path, method, handler)``: public ones read ``public_params``,
        signed ones ``signed_params``; each handler's result passed through ``wrap``."""
        return ([Route(p, self.endpoint(public_params, wrap(h)), methods=[m]) for p, m, h in public]
                + [Route(p, self.endpoint(self.signed_params, wrap(h)), methods=[m]) for p, m, h in signed])

    def symbol(self, venue_id: str | None) -> str:
        """The unified symbol of the venue's market id (``ETHBTC`` -> ``ETH/BTC``)."""
        if not venue_id:
            raise bad_request(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        symbol = self._by_venue_id.get(venue_id.upper())
        if symbol is None:
            raise bad_request(-1121, "Invalid symbol.")
        return symbol

    def endpoint(self, read: Reader, handler: Callable[[dict[str, Any]], Any]) -> Handler:
        """An endpoint: parameters from ``read``, the answer from ``handler`` (under the
        engine's lock), a refusal as ``error_response``."""

        async def serve(request: Request) -> Response:
            try:
                params = await read(request)
                with self.engine.lock:
                    return JSONResponse(handler(params))
            except VenueError as exc:
                return self.error_response(exc)
            except (ValueError, KeyError, TypeError, ArithmeticError):
                return self.error_response(bad_request(*ILLEGAL))

        return serve

    # -- admin endpoints

    def admin_advance(self, params: dict[str, Any]) -> dict[str, Any]:
        index = self.engine.advance(int(params.get("bars", 1)))
        return self._market_state(index)

    def admin_price(self, params: dict[str, Any]) -> dict[str, Any]:
        raw = str(params.get("symbol", ""))
        symbol = raw if raw in self.engine.specs else self.symbol(raw)
        if "price" not in params:
            raise bad_request(-1102, "Mandatory parameter 'price' was not sent.")
        self.engine.set_price(symbol, params["price"])
        return self._market_state(self.engine.index)

    def admin_faults(self, params: dict[str, Any]) -> dict[str, Any]:
        self.engine.faults.update(params)
        return dict(self.engine.faults)

    def admin_state(self, params: dict[str, str]) -> dict[str, Any]:
        return {
            **self._market_state(self.engine.index),
            "orders": len(self.engine.orders),
            "open_orders": len(self.engine.open_orders()),
            "trades": len(self.engine.trades),
            "balances": {a: {"free": fmt(f), "locked": fmt(lk)} for a, (f, lk) in self.engine.balances().items()},
            "faults": dict(self.engine.faults),
            "requests": len(self.engine.requests),
        }

    def _market_state(self, index: int) -> dict[str, Any]:
        return {
            "index": index,
            "bars": self.engine.bar_count,
            "prices": {s: fmt(self.engine.price(s)) for s in self.engine.specs},
        }


async def public_params(request: Request) -> dict[str, Any]:
    """The query parameters, and a POST's JSON body."""
    out: dict[str, Any] = dict(request.query_params)
    if request.method == "POST":
        raw = await request.body()
        out.update(json.loads(raw) if raw else {})
    return out


def error_json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)
