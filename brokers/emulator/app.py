"""The emulator's HTTP face: enough of Binance's spot REST API (``/api/v3``) for a stock
ccxt ``binance`` client, over an ``Engine``.

Public:  GET  /api/v3/ping, /time, /exchangeInfo, /ticker/24hr, /ticker/price,
              /ticker/bookTicker, /klines
Signed:  GET  /api/v3/account, /order, /openOrders, /allOrders, /myTrades
         POST /api/v3/order          DELETE /api/v3/order, /openOrders
Admin:   /admin/advance, /admin/price, /admin/faults, /admin/state (``dialect``)

Signed requests are checked as Binance checks them: the ``X-MBX-APIKEY`` header, an
HMAC-SHA256 ``signature`` (hex) over the query string followed by the body (both
without the signature), and ``timestamp`` within ``recvWindow`` (default 5000 ms, at
most 1000 ms ahead). Errors are Binance's ``{"code": ..., "msg": ...}`` with its HTTP
statuses: 401 -2014/-2015 (API key), 400 -1022 (signature), 400 -1021 (timestamp),
400 -1013 (filters), 400 -2010 (refused order: funds, duplicate client id), 400 -2013
(unknown order), 400 -2011 (cancel refused), 429 -1003, 503 -1001 / -1007.

Faults (``engine.faults``; every key in ``brokers.emulator.faults``) answer in Binance's
words: 503 -1001 (not executed), 503 -1007 (execution status unknown), 429 -1003 with
``Retry-After``, 418 -1003 "IP banned until <ms>" with ``Retry-After``; a dropped
connection answers nothing (or half an answer).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from brokers.base.types import Side
from brokers.emulator.dialect import Dialect, fmt
from brokers.emulator.engine import (
    EmOrder,
    Engine,
    MarketSpec,
    Trade,
    VenueError,
    bad_request,
    dec,
    floor_to,
)
from brokers.emulator.faults import FaultAnswers, FaultMiddleware

MAX_RECV_WINDOW = 60_000
DEFAULT_RECV_WINDOW = 5_000
RESP_TYPES = ("ACK", "RESULT", "FULL")


def error(status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "msg": msg}, status_code=status, headers=headers)


# ---------------------------------------------------------------------- serialisers


def market_json(spec: MarketSpec) -> dict[str, Any]:
    return {
        "symbol": spec.venue_id,
        "status": "TRADING",
        "baseAsset": spec.base,
        "baseAssetPrecision": 8,
        "quoteAsset": spec.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT"],
        "icebergAllowed": False,
        "ocoAllowed": False,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": fmt(spec.min_price),
                "maxPrice": fmt(spec.max_price),
                "tickSize": fmt(spec.tick_size),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": fmt(spec.min_qty),
                "maxQty": fmt(spec.max_qty),
                "stepSize": fmt(spec.step_size),
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": fmt(spec.min_notional),
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "NONE",
        "allowedSelfTradePreventionModes": ["NONE"],
    }


def fill_json(trade: Trade) -> dict[str, Any]:
    return {
        "price": fmt(trade.price),
        "qty": fmt(trade.qty),
        "commission": fmt(trade.commission),
        "commissionAsset": trade.commission_asset,
        "tradeId": trade.trade_id,
    }


def order_json(engine: Engine, order: EmOrder, resp_type: str = "RESULT", *, query: bool = False) -> dict[str, Any]:
    """An order as Binance answers it: ``query`` for GET /order, else the POST answer in
    ``resp_type`` (ACK, RESULT or FULL)."""
    out: dict[str, Any] = {
        "symbol": engine.specs[order.symbol].venue_id,
        "orderId": order.order_id,
        "orderListId": -1,
        "clientOrderId": order.client_order_id,
    }
    if not query:
        out["transactTime"] = order.updated_ms
        if resp_type == "ACK":
            return out
    out.update({
        "price": fmt(order.price),
        "origQty": fmt(order.quantity),
        "executedQty": fmt(order.executed),
        "cummulativeQuoteQty": fmt(order.quote_executed),
        "status": order.status,
        "timeInForce": order.tif,
        "type": order.kind,
        "side": order.side.value.upper(),
    })
    if order.stop_price is not None or query:
        out["stopPrice"] = fmt(order.stop_price)
    if query:
        out.update({
            "icebergQty": fmt(None),
            "time": order.created_ms,
            "updateTime": order.updated_ms,
            "isWorking": order.is_working,
            "origQuoteOrderQty": fmt(None),
        })
    out["workingTime"] = order.created_ms if order.is_working else -1
    out["selfTradePreventionMode"] = "NONE"
    if resp_type == "FULL" and not query:
        out["fills"] = [fill_json(t) for t in order.trades]
    return out


def trade_json(engine: Engine, trade: Trade) -> dict[str, Any]:
    return {
        "symbol": engine.specs[trade.symbol].venue_id,
        "id": trade.trade_id,
        "orderId": trade.order_id,
        "orderListId": -1,
        "price": fmt(trade.price),
        "qty": fmt(trade.qty),
        "quoteQty": fmt(trade.quote_qty),
        "commission": fmt(trade.commission),
        "commissionAsset": trade.commission_asset,
        "time": trade.time_ms,
        "isBuyer": trade.side is Side.BUY,
        "isMaker": trade.is_maker,
        "isBestMatch": True,
    }


def ticker_json(engine: Engine, symbol: str) -> dict[str, Any]:
    spec = engine.specs[symbol]
    bar = engine.bar(symbol)
    last = engine.price(symbol)
    opened = dec(bar.open)
    now = engine.now_ms()
    return {
        "symbol": spec.venue_id,
        "priceChange": fmt(last - opened),
        "priceChangePercent": f"{(last - opened) / opened * 100:.3f}" if opened else "0.000",
        "weightedAvgPrice": fmt(last),
        "prevClosePrice": fmt(opened),
        "lastPrice": fmt(last),
        "lastQty": fmt(None),
        "bidPrice": fmt(last),
        "bidQty": fmt(dec(bar.volume)),
        "askPrice": fmt(last),
        "askQty": fmt(dec(bar.volume)),
        "openPrice": fmt(opened),
        "highPrice": fmt(max(dec(bar.high), last)),
        "lowPrice": fmt(min(dec(bar.low), last)),
        "volume": fmt(dec(bar.volume)),
        "quoteVolume": fmt(dec(bar.volume) * last),
        "openTime": now - 86_400_000,
        "closeTime": now,
        "firstId": 0,
        "lastId": 0,
        "count": 0,
    }


# ---------------------------------------------------------------------- the app


class BinanceDialect(Dialect):
    """Routes and request checks of the Binance spot dialect over one engine and one
    API key / secret pair."""

    def symbols_param(self, params: dict[str, str]) -> list[str]:
        """``symbol=ETHBTC`` or ``symbols=["ETHBTC",...]`` or neither (all)."""
        if params.get("symbol"):
            return [self.symbol(params["symbol"])]
        if params.get("symbols"):
            try:
                ids = json.loads(params["symbols"])
            except ValueError:
                raise bad_request(-1100, "Illegal characters found in parameter 'symbols'.") from None
            return [self.symbol(i) for i in ids]
        return list(self.engine.specs)

    async def signed_params(self, request: Request) -> dict[str, str]:
        """Check key, signature and timestamp; the request's parameters (query + body)."""
        key = request.headers.get("x-mbx-apikey")
        if not key:
            raise VenueError(401, -2014, "API-key format invalid.")
        if not hmac.compare_digest(key.encode(), self._api_key.encode()):
            raise VenueError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        query = request.scope.get("query_string", b"").decode("latin-1")
        body = (await request.body()).decode("latin-1")
        params = dict(parse_qsl(query, keep_blank_values=True))
        params.update(parse_qsl(body, keep_blank_values=True))
        signature = params.pop("signature", None)
        if not signature:
            raise bad_request(-1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
        payload = (_unsigned(query) + _unsigned(body)).encode("latin-1")
        expected = hmac.new(self._secret, payload, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise bad_request(-1022, "Signature for this request is not valid.")
        self._check_timestamp(params)
        return params

    def _check_timestamp(self, params: dict[str, str]) -> None:
        try:
            stamp = int(params["timestamp"])
            window = int(params.get("recvWindow", DEFAULT_RECV_WINDOW))
        except (KeyError, ValueError):
            raise bad_request(
                -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed."
            ) from None
        if not 0 < window <= MAX_RECV_WINDOW:
            raise bad_request(-1131, "recvWindow must be less than 60000")
        now = self.engine.now_ms()
        if stamp > now + 1000 or now - stamp > window:
            raise bad_request(-1021, "Timestamp for this request is outside of the recvWindow.")

    def api_routes(self) -> list[Route]:
        public = [
            ("/api/v3/ping", "GET", self.ping),
            ("/api/v3/time", "GET", self.time),
            ("/api/v3/exchangeInfo", "GET", self.exchange_info),
            ("/api/v3/ticker/24hr", "GET", self.ticker_24hr),
            ("/api/v3/ticker/price", "GET", self.ticker_price),
            ("/api/v3/ticker/bookTicker", "GET", self.book_ticker),
            ("/api/v3/klines", "GET", self.klines),
        ]
        signed = [
            ("/api/v3/account", "GET", self.account),
            ("/api/v3/order", "POST", self.new_order),
            ("/api/v3/order", "GET", self.query_order),
            ("/api/v3/order", "DELETE", self.cancel_order),
            ("/api/v3/openOrders", "GET", self.open_orders),
            ("/api/v3/openOrders", "DELETE", self.cancel_open_orders),
            ("/api/v3/allOrders", "GET", self.all_orders),
            ("/api/v3/myTrades", "GET", self.my_trades),
        ]
        return self.route_table(public, signed)

    def error_response(self, exc: VenueError) -> Response:
        return error(exc.status, exc.code, exc.msg)

    # -- public endpoints

    def ping(self, params: dict[str, str]) -> dict[str, Any]:
        return {}

    def time(self, params: dict[str, str]) -> dict[str, Any]:
        return {"serverTime": self.engine.now_ms()}

    def exchange_info(self, params: dict[str, str]) -> dict[str, Any]:
        return {
            "timezone": "UTC",
            "serverTime": self.engine.now_ms(),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            ],
            "exchangeFilters": [],
            "symbols": [market_json(self.engine.specs[s]) for s in self.symbols_param(params)],
        }

    def ticker_24hr(self, params: dict[str, str]) -> Any:
        tickers = [ticker_json(self.engine, s) for s in self.symbols_param(params)]
        return tickers[0] if params.get("symbol") else tickers

    def ticker_price(self, params: dict[str, str]) -> Any:
        prices = [
            {"symbol": self.engine.specs[s].venue_id, "price": fmt(self.engine.price(s))}
            for s in self.symbols_param(params)
        ]
        return prices[0] if params.get("symbol") else prices

    def book_ticker(self, params: dict[str, str]) -> Any:
        books = []
        for s in self.symbols_param(params):
            price, size = fmt(self.engine.price(s)), fmt(dec(self.engine.bar(s).volume))
            books.append({"symbol": self.engine.specs[s].venue_id, "bidPrice": price, "bidQty": size,
                          "askPrice": price, "askQty": size})
        return books[0] if params.get("symbol") else books

    def klines(self, params: dict[str, str]) -> list[list[Any]]:
        """The bars up to and including the current one (the replayed path so far)."""
        symbol = self.symbol(params.get("symbol"))
        series = self.engine.series[symbol]
        limit = min(int(params.get("limit", 500)), 1000)
        first = max(0, self.engine.index + 1 - limit)
        rows = []
        for i in range(first, self.engine.index + 1):
            bar, start = series.bar(i), self.engine.bar_time_ms(symbol, i)
            end = self.engine.bar_time_ms(symbol, i + 1) - 1 if i + 1 < len(series) else start + 59_999
            rows.append([start, fmt(dec(bar.open)), fmt(dec(bar.high)), fmt(dec(bar.low)), fmt(dec(bar.close)),
                         fmt(dec(bar.volume)), end, fmt(dec(bar.volume * bar.close)), 0, "0", "0", "0"])
        return rows

    # -- signed endpoints

    def account(self, params: dict[str, str]) -> dict[str, Any]:
        fee_bps = int(self.engine.taker_fee * 10_000)
        return {
            "makerCommission": int(self.engine.maker_fee * 10_000),
            "takerCommission": fee_bps,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {"maker": fmt(self.engine.maker_fee), "taker": fmt(self.engine.taker_fee),
                                "buyer": fmt(None), "seller": fmt(None)},
            "canTrade": True,
            "canWithdraw": False,
            "canDeposit": False,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": self.engine.now_ms(),
            "accountType": "SPOT",
            "balances": [
                {"asset": a, "free": fmt(free), "locked": fmt(locked)}
                for a, (free, locked) in self.engine.balances().items()
            ],
            "permissions": ["SPOT"],
            "uid": 1,
        }

    def new_order(self, params: dict[str, str]) -> dict[str, Any]:
        symbol = self.symbol(params.get("symbol"))
        side = _side(params.get("side"))
        kind = params.get("type", "").upper()
        resp_type = params.get("newOrderRespType") or ("FULL" if kind in ("MARKET", "LIMIT") else "ACK")
        if resp_type not in RESP_TYPES:
            raise bad_request(-1100, "Illegal characters found in parameter 'newOrderRespType'.")
        price = _decimal(params, "price")
        quantity = _decimal(params, "quantity")
        quote_qty = _decimal(params, "quoteOrderQty")
        if quantity is None and quote_qty is not None and kind == "MARKET":
            quantity = floor_to(quote_qty / self.engine.price(symbol), self.engine.specs[symbol].step_size)
        if quantity is None:
            raise bad_request(-1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.")
        if kind in ("LIMIT", "STOP_LOSS_LIMIT") and not params.get("timeInForce"):
            raise bad_request(
                -1102, "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed."
            )
        order = self.engine.place(
            symbol,
            side,
            kind,
            quantity,
            client_order_id=params.get("newClientOrderId") or f"emu-{self.engine.now_ms()}-{len(self.engine.orders)}",
            price=price,
            stop_price=_decimal(params, "stopPrice"),
            tif=params.get("timeInForce", "GTC").upper(),
        )
        return order_json(self.engine, order, resp_type)

    def _find(self, params: dict[str, str]) -> tuple[str, int | None, str | None]:
        symbol = self.symbol(params.get("symbol"))
        order_id = params.get("orderId")
        try:
            number = int(order_id) if order_id else None
        except ValueError:
            raise bad_request(-1100, "Illegal characters found in parameter 'orderId'.") from None
        return symbol, number, params.get("origClientOrderId") or None

    def query_order(self, params: dict[str, str]) -> dict[str, Any]:
        symbol, order_id, client_id = self._find(params)
        order = self.engine.find(symbol, order_id=order_id, client_order_id=client_id)
        return order_json(self.engine, order, query=True)

    def cancel_order(self, params: dict[str, str]) -> dict[str, Any]:
        symbol, order_id, client_id = self._find(params)
        order = self.engine.cancel(symbol, order_id=order_id, client_order_id=client_id)
        return _canceled_json(self.engine, order, params.get("newClientOrderId"))

    def open_orders(self, params: dict[str, str]) -> list[dict[str, Any]]:
        symbol = self.symbol(params["symbol"]) if params.get("symbol") else None
        return [order_json(self.engine, o, query=True) for o in self.engine.open_orders(symbol)]

    def cancel_open_orders(self, params: dict[str, str]) -> list[dict[str, Any]]:
        symbol = self.symbol(params.get("symbol"))
        canceled = [self.engine.cancel(symbol, order_id=o.order_id) for o in self.engine.open_orders(symbol)]
        return [_canceled_json(self.engine, o, None) for o in canceled]

    def all_orders(self, params: dict[str, str]) -> list[dict[str, Any]]:
        symbol = self.symbol(params.get("symbol"))
        since = int(params.get("orderId") or 0)
        limit = min(int(params.get("limit", 500)), 1000)
        orders = [o for o in self.engine.orders.values() if o.symbol == symbol and o.order_id >= since]
        return [order_json(self.engine, o, query=True) for o in orders[-limit:]]

    def my_trades(self, params: dict[str, str]) -> list[dict[str, Any]]:
        symbol = self.symbol(params.get("symbol"))
        order_id = int(params["orderId"]) if params.get("orderId") else None
        trades = self.engine.my_trades(symbol, order_id=order_id)
        start, end = int(params.get("startTime") or 0), int(params.get("endTime") or 2**62)
        from_id = int(params.get("fromId") or 0)
        limit = min(int(params.get("limit", 500)), 1000)
        chosen = [t for t in trades if start <= t.time_ms <= end and t.trade_id >= from_id]
        return [trade_json(self.engine, t) for t in chosen[:limit]]


def _unsigned(raw: str) -> str:
    """``raw`` (a query string or form body) without its ``signature=`` parameter."""
    return "&".join(p for p in raw.split("&") if p and not p.startswith("signature="))


def _side(raw: str | None) -> Side:
    if raw is None or raw.upper() not in ("BUY", "SELL"):
        raise bad_request(-1102, "Mandatory parameter 'side' was not sent, was empty/null, or malformed.")
    return Side(raw.lower())


def _decimal(params: dict[str, str], name: str) -> Decimal | None:
    raw = params.get(name)
    if raw in (None, ""):
        return None
    try:
        value = Decimal(raw)
    except ArithmeticError:
        raise bad_request(-1100, f"Illegal characters found in parameter '{name}'; legal range is '^([0-9]{{1,20}})(\\.[0-9]{{1,20}})?$'.") from None
    if not value.is_finite() or value <= 0:
        raise bad_request(-1100, f"Illegal characters found in parameter '{name}'.")
    return value


def _canceled_json(engine: Engine, order: EmOrder, cancel_id: str | None) -> dict[str, Any]:
    """The DELETE answer: the order, ``origClientOrderId`` its client id and
    ``clientOrderId`` the id of the cancel request (as Binance answers)."""
    out = order_json(engine, order, "RESULT")
    out["origClientOrderId"] = order.client_order_id
    out["clientOrderId"] = cancel_id or f"cancel-{order.order_id}"
    return out


# ---------------------------------------------------------------------- faults


def _banned(until_ms: int, retry_after_s: int) -> JSONResponse:
    return error(418, -1003, f"Way too much request weight used; IP banned until {until_ms}. "
                 "Please use WebSocket Streams for live updates to avoid bans.",
                 headers={"Retry-After": str(retry_after_s)})


BINANCE_FAULTS = FaultAnswers(
    unavailable=lambda: error(503, -1001, "Internal error; unable to process your request. Please try again."),
    status_unknown=lambda: error(503, -1007, "Timeout waiting for response from backend server. "
                                 "Send status unknown; execution status unknown."),
    rate_limited=lambda retry_after_s: error(
        429, -1003, "Too many requests; current limit of IP is 6000 requests per minute.",
        headers={"Retry-After": str(retry_after_s)}),
    banned=_banned,
)


def create_app(engine: Engine, *, api_key: str, secret: str, venue: str = "binance") -> ASGIApp:
    """The emulator's ASGI app speaking ``venue``'s dialect for the engine's market type:
    ``binance`` (spot ``/api/v3``; over a ``FuturesEngine``, USDⓈ-M futures ``/fapi``:
    ``brokers.emulator.binance_futures``) or ``bybit`` (v5, unified account, category
    spot or linear: ``brokers.emulator.bybit``)."""
    from brokers.emulator.binance_futures import BinanceFuturesDialect
    from brokers.emulator.bybit import BYBIT_FAULTS, BybitDialect

    market_type = getattr(engine, "market_type", "spot")
    dialects: dict[tuple[str, str], tuple[type[Dialect], FaultAnswers]] = {
        ("binance", "spot"): (BinanceDialect, BINANCE_FAULTS),
        ("binance", "swap"): (BinanceFuturesDialect, BINANCE_FAULTS),
        ("bybit", "spot"): (BybitDialect, BYBIT_FAULTS),
        ("bybit", "swap"): (BybitDialect, BYBIT_FAULTS),
    }
    if (venue, market_type) not in dialects:
        raise ValueError(f"the emulator speaks {' and '.join(sorted({v for v, _ in dialects}))}, not {venue!r}")
    dialect, faults = dialects[(venue, market_type)]
    app = Starlette(routes=dialect(engine, api_key, secret).routes())
    return FaultMiddleware(app, engine, faults)
