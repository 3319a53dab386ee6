"""The emulator's second dialect: enough of Bybit's v5 REST API (unified trading
account) for a stock ccxt ``bybit`` client, over the same engines as Binance's: category
``spot`` over an ``Engine``, category ``linear`` (USDT perpetuals) over a
``FuturesEngine``; one category per emulator, the other refused.

Public:  GET  /v5/market/time, /v5/market/instruments-info, /v5/market/tickers
Signed:  GET  /v5/account/wallet-balance, /v5/order/realtime, /v5/order/history,
              /v5/execution/list, /v5/position/list (linear)
         POST /v5/order/create, /v5/order/cancel, /v5/position/set-leverage (linear)

Linear: ``reduceOnly`` orders, one-way mode (``positionIdx`` 0), leverage per symbol
(buy and sell alike; setting the leverage already set answers 110043 "Set leverage not
modified", as Bybit does); refusals 110007 "ab not enough for new order" (margin) and
110017 "Reduce-only rule not satisfied".

Signed requests are checked as Bybit checks them: ``X-BAPI-API-KEY``,
``X-BAPI-TIMESTAMP`` within ``X-BAPI-RECV-WINDOW`` (default 5000 ms) and
``X-BAPI-SIGN``, the hex HMAC-SHA256 of timestamp + key + recv window + the query
string (GET) or the JSON body (POST). Answers are ``{"retCode", "retMsg", "result",
"retExtInfo", "time"}`` with HTTP 200, refusals included (retCode 10003 key, 10004
signature, 10002 timestamp, 170131 balance, 170136 / 170140 / 170134 filters, 110072
duplicate orderLinkId, 110001 unknown order, 10001 parameters); faults answer as Bybit's
gateway does, 503 / 504 (status unknown) in plain text, retCode 10006 (rate limit),
HTTP 403 (IP ban) and retCode 10016 (server busy, HTTP 200).

``/v5/order/realtime`` answers the open orders, or, given ``orderId`` or
``orderLinkId``, that order whatever its state (as Bybit does for recent orders).
A spot market order is for ``qty`` of the base (``marketUnit=baseCoin``); a
``triggerPrice`` makes a stop (``orderFilter=StopOrder``). What Bybit reports as
``Cancelled`` / ``PartiallyFilledCanceled`` covers the engine's CANCELED and EXPIRED.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from brokers.base.types import Side
from brokers.emulator.dialect import Dialect, fmt
from brokers.emulator.engine import EmOrder, Engine, Trade, VenueError, dec
from brokers.emulator.faults import FaultAnswers
from brokers.emulator.futures import FuturesEngine

DEFAULT_RECV_WINDOW = 5_000

# the engine's refusals (Binance codes, words) -> Bybit retCode and words
_CODES: dict[int, tuple[int, str]] = {
    -1121: (10001, "params error: symbol invalid"),
    -2013: (110001, "Order does not exist."),
    -2011: (110001, "Order does not exist."),
    -2019: (110007, "ab not enough for new order"),
    -2022: (110017, "Reduce-only rule not satisfied"),
    -4028: (10001, "params error: leverage invalid"),
    -4164: (110094, "Order does not meet minimum order value"),
}
_WORDS: dict[str, tuple[int, str]] = {
    "insufficient balance": (170131, "Insufficient balance."),
    "Duplicate order sent": (110072, "OrderLinkedID is duplicate"),
    "LOT_SIZE": (170136, "Order quantity lower than the minimum."),
    "NOTIONAL": (170140, "Order value exceeded lower limit."),
    "PRICE_FILTER": (170134, "Order price decimal too long."),
    "trigger immediately": (170130, "Data sent for parameter 'triggerPrice' is not valid."),
}
_STATUS = {"NEW": "New", "PARTIALLY_FILLED": "PartiallyFilled", "FILLED": "Filled"}
_KIND = {("Market", False): "MARKET", ("Limit", False): "LIMIT", ("Market", True): "STOP_LOSS",
         ("Limit", True): "STOP_LOSS_LIMIT"}


def bybit_code(exc: VenueError) -> tuple[int, str]:
    """The retCode and words Bybit answers an engine refusal with."""
    if exc.code in _CODES:
        return _CODES[exc.code]
    for words, answer in _WORDS.items():
        if words in exc.msg:
            return answer
    if exc.code in (-2014, -2015):
        return 10003, "API key is invalid."
    return 10001, f"params error: {exc.msg}"


def answer(result: Any, code: int = 0, msg: str = "OK", *, now_ms: int = 0) -> dict[str, Any]:
    return {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": now_ms}


def refused(code: int, msg: str, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(answer({}, code, msg), status_code=status, headers=headers)


def order_status(order: EmOrder) -> str:
    if order.kind.startswith("STOP") and not order.triggered and order.is_open:
        return "Untriggered"
    if order.status in _STATUS:
        return _STATUS[order.status]
    return "PartiallyFilledCanceled" if order.executed > 0 else "Cancelled"


class BybitDialect(Dialect):
    """Routes and request checks of the Bybit v5 dialect (see the module docstring)."""

    @property
    def category(self) -> str:
        return "linear" if isinstance(self.engine, FuturesEngine) else "spot"

    def api_routes(self) -> list[Route]:
        public = [
            ("/v5/market/time", "GET", self.time),
            ("/v5/market/instruments-info", "GET", self.instruments),
            ("/v5/market/tickers", "GET", self.tickers),
        ]
        signed = [
            ("/v5/account/wallet-balance", "GET", self.wallet_balance),
            ("/v5/order/create", "POST", self.create_order),
            ("/v5/order/cancel", "POST", self.cancel_order),
            ("/v5/order/realtime", "GET", self.realtime_orders),
            ("/v5/order/history", "GET", self.order_history),
            ("/v5/execution/list", "GET", self.executions),
        ]
        if self.category == "linear":
            signed += [("/v5/position/set-leverage", "POST", self.set_leverage),
                       ("/v5/position/list", "GET", self.positions)]
        return self.route_table(public, signed, wrap=self._answered)

    def _answered(self, handler: Any) -> Any:
        """``handler``'s result inside Bybit's ``{"retCode": 0, "result": ...}``."""
        return lambda params: answer(handler(params), now_ms=self.engine.now_ms())

    def error_response(self, exc: VenueError) -> Response:
        return refused(*((exc.code, exc.msg) if isinstance(exc, _Refusal) else bybit_code(exc)))

    async def signed_params(self, request: Request) -> dict[str, Any]:
        """Check key, timestamp and signature; the query's or the JSON body's parameters."""
        headers = request.headers
        if not hmac.compare_digest(headers.get("x-bapi-api-key", "").encode(), self._api_key.encode()):
            raise VenueError(200, -2015, "API key is invalid.")
        stamp, window = headers.get("x-bapi-timestamp", ""), headers.get("x-bapi-recv-window", "")
        body = (await request.body()).decode()
        query = request.scope.get("query_string", b"").decode()
        payload = stamp + headers.get("x-bapi-api-key", "") + window + (body if request.method == "POST" else query)
        expected = hmac.new(self._secret, payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, headers.get("x-bapi-sign", "").lower()):
            raise _Refusal(10004, "error sign!")
        now = self.engine.now_ms()
        if not stamp.isdigit() or not 0 <= now - int(stamp) <= int(window or DEFAULT_RECV_WINDOW) + 1000:
            raise _Refusal(10002, "invalid request, please check your server timestamp or recv_window param")
        return json.loads(body) if request.method == "POST" and body else dict(request.query_params)

    # -- public

    def time(self, params: dict[str, Any]) -> dict[str, Any]:
        now = self.engine.now_ms()
        return {"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)}

    def instruments(self, params: dict[str, Any]) -> dict[str, Any]:
        self._spot(params)
        listed = [] if params.get("status") == "PreLaunch" else self._symbols(params)
        return {"category": self.category, "nextPageCursor": "", "list": [self._instrument(s) for s in listed]}

    def _instrument(self, symbol: str) -> dict[str, Any]:
        spec = self.engine.specs[symbol]
        if isinstance(self.engine, FuturesEngine):
            return {"symbol": spec.venue_id, "contractType": "LinearPerpetual", "status": "Trading",
                    "baseCoin": spec.base, "quoteCoin": spec.quote, "settleCoin": spec.quote,
                    "launchTime": "1585526400000", "deliveryTime": "0", "priceScale": "2", "fundingInterval": 480,
                    "leverageFilter": {"minLeverage": "1", "maxLeverage": str(self.engine.max_leverage),
                                       "leverageStep": "0.01"},
                    "priceFilter": {"minPrice": str((spec.min_price or spec.tick_size).normalize()),
                                    "maxPrice": str(spec.max_price.normalize()),
                                    "tickSize": str(spec.tick_size.normalize())},
                    "lotSizeFilter": {"minOrderQty": str(spec.min_qty.normalize()),
                                      "maxOrderQty": str(spec.max_qty.normalize()),
                                      "maxMktOrderQty": str(spec.max_qty.normalize()),
                                      "qtyStep": str(spec.step_size.normalize()),
                                      "minNotionalValue": str(spec.min_notional.normalize())},
                    "unifiedMarginTrade": True, "copyTrading": "none"}
        return {"symbol": spec.venue_id, "baseCoin": spec.base, "quoteCoin": spec.quote, "innovation": "0",
                "status": "Trading", "marginTrading": "none",
                "lotSizeFilter": {"basePrecision": str(spec.step_size.normalize()), "quotePrecision": "0.00000001",
                                  "minOrderQty": str(spec.min_qty.normalize()),
                                  "maxOrderQty": str(spec.max_qty.normalize()),
                                  "minOrderAmt": str(spec.min_notional.normalize()), "maxOrderAmt": "9000000"},
                "priceFilter": {"tickSize": str(spec.tick_size.normalize())}}

    def tickers(self, params: dict[str, Any]) -> dict[str, Any]:
        self._spot(params)
        return {"category": self.category, "list": [self._ticker(s) for s in self._symbols(params)]}

    def _ticker(self, symbol: str) -> dict[str, Any]:
        bar, last = self.engine.bar(symbol), self.engine.price(symbol)
        opened, volume = dec(bar.open), dec(bar.volume)
        return {"symbol": self.engine.specs[symbol].venue_id, "bid1Price": fmt(last), "bid1Size": fmt(volume),
                "ask1Price": fmt(last), "ask1Size": fmt(volume), "lastPrice": fmt(last), "prevPrice24h": fmt(opened),
                "price24hPcnt": f"{(last - opened) / opened:.4f}" if opened else "0",
                "highPrice24h": fmt(max(dec(bar.high), last)), "lowPrice24h": fmt(min(dec(bar.low), last)),
                "turnover24h": fmt(volume * last), "volume24h": fmt(volume),
                **({"markPrice": fmt(last), "indexPrice": fmt(last), "fundingRate": "0", "openInterest": "0"}
                   if self.category == "linear" else {})}

    # -- signed

    def wallet_balance(self, params: dict[str, Any]) -> dict[str, Any]:
        if isinstance(self.engine, FuturesEngine):  # margins, not locks
            engine = self.engine
            wallet = engine.wallet()
            unrealized = sum((engine.unrealized(s) for s in engine.specs), Decimal(0))
            coin = {"coin": engine.settle_asset, "walletBalance": fmt(wallet), "locked": "0",
                    "equity": fmt(wallet + unrealized), "unrealisedPnl": fmt(unrealized),
                    "totalOrderIM": fmt(engine.order_margin()), "totalPositionIM": fmt(engine.position_margin()),
                    "borrowAmount": "0", "accruedInterest": "0"}
            return {"list": [{"accountType": "UNIFIED", "coin": [coin]}]}
        coins = [{"coin": a, "walletBalance": fmt(free + locked), "locked": fmt(locked), "equity": fmt(free + locked),
                  "borrowAmount": "0", "accruedInterest": "0", "totalOrderIM": "0", "totalPositionIM": "0"}
                 for a, (free, locked) in self.engine.balances().items()]
        return {"list": [{"accountType": "UNIFIED", "coin": coins}]}

    def create_order(self, params: dict[str, Any]) -> dict[str, Any]:
        self._spot(params)
        symbol = self.symbol(params.get("symbol"))
        side = Side(str(params.get("side", "")).lower())
        trigger = _decimal(params.get("triggerPrice"))
        kind = _KIND[(str(params.get("orderType")), trigger is not None)]
        if params.get("marketUnit", "baseCoin") != "baseCoin":
            raise _Refusal(10001, "params error: only marketUnit baseCoin is emulated")
        link_id = str(params.get("orderLinkId") or f"emu-{self.engine.now_ms()}-{len(self.engine.orders)}")
        reduce_only = str(params.get("reduceOnly", "false")).lower() == "true"
        if reduce_only and self.category == "spot":
            raise _Refusal(10001, "params error: reduceOnly is for derivatives")
        order = self.engine.place(symbol, side, kind, _decimal(params.get("qty")) or Decimal(0),
                                  client_order_id=link_id, price=_decimal(params.get("price")),
                                  stop_price=trigger, tif=str(params.get("timeInForce") or "GTC").upper(),
                                  reduce_only=reduce_only)
        return {"orderId": str(order.order_id), "orderLinkId": order.client_order_id}

    def cancel_order(self, params: dict[str, Any]) -> dict[str, Any]:
        symbol = self.symbol(params.get("symbol"))
        order = self.engine.cancel(symbol, **self._which(params))
        return {"orderId": str(order.order_id), "orderLinkId": order.client_order_id}

    def realtime_orders(self, params: dict[str, Any]) -> dict[str, Any]:
        symbol = self.symbol(params["symbol"]) if params.get("symbol") else None
        if params.get("orderId") or params.get("orderLinkId"):
            orders = [self.engine.find(symbol or "", **self._which(params))] if symbol else []
        else:
            orders = self.engine.open_orders(symbol)
        return {"category": self.category, "nextPageCursor": "", "list": [self._order(o) for o in orders]}

    def order_history(self, params: dict[str, Any]) -> dict[str, Any]:
        symbol = self.symbol(params.get("symbol"))
        closed = [o for o in self.engine.orders.values() if o.symbol == symbol and not o.is_open]
        return {"category": self.category, "nextPageCursor": "", "list": [self._order(o) for o in reversed(closed)]}

    def executions(self, params: dict[str, Any]) -> dict[str, Any]:
        symbol = self.symbol(params.get("symbol"))
        order_id = int(params["orderId"]) if params.get("orderId") else None
        trades = self.engine.my_trades(symbol, order_id=order_id)
        return {"category": self.category, "nextPageCursor": "", "list": [self._execution(t) for t in reversed(trades)]}

    def set_leverage(self, params: dict[str, Any]) -> dict[str, Any]:
        symbol = self.symbol(params.get("symbol"))
        buy, sell = str(params.get("buyLeverage", "")), str(params.get("sellLeverage", ""))
        if not buy or Decimal(buy) != Decimal(sell or "0") or Decimal(buy) != int(Decimal(buy)):
            raise _Refusal(10001, "params error: buyLeverage and sellLeverage must be the same whole number")
        engine = _futures(self.engine)
        if int(Decimal(buy)) == engine.leverage(symbol):
            raise _Refusal(110043, "Set leverage not modified")
        engine.set_leverage(symbol, int(Decimal(buy)))
        return {}

    def positions(self, params: dict[str, Any]) -> dict[str, Any]:
        """A symbol's position, flat or not; by settle coin, the open ones (as Bybit answers)."""
        engine = _futures(self.engine)
        if params.get("symbol"):
            symbols = [self.symbol(params["symbol"])]
        elif params.get("settleCoin") in (None, engine.settle_asset):  # by settle coin: open ones only
            symbols = [s for s, p in engine.positions.items() if p.qty]
        else:
            symbols = []
        return {"category": "linear", "nextPageCursor": "", "list": [self._position(s) for s in symbols]}

    # -- serialisers and helpers

    def _order(self, order: EmOrder) -> dict[str, Any]:
        average = order.quote_executed / order.executed if order.executed else None
        fees = sum((t.commission for t in order.trades), Decimal(0))
        return {"orderId": str(order.order_id), "orderLinkId": order.client_order_id,
                "symbol": self.engine.specs[order.symbol].venue_id, "side": order.side.value.capitalize(),
                "orderType": "Limit" if order.kind.endswith("LIMIT") else "Market",
                "price": fmt(order.price) if order.price is not None else "0", "qty": fmt(order.quantity),
                "orderStatus": order_status(order), "timeInForce": order.tif, "avgPrice": fmt(average) if average else "",
                "cumExecQty": fmt(order.executed), "cumExecValue": fmt(order.quote_executed), "cumExecFee": fmt(fees),
                "leavesQty": fmt(order.remaining if order.is_open else Decimal(0)),
                "triggerPrice": fmt(order.stop_price) if order.stop_price is not None else "0",
                "orderFilter": "StopOrder" if order.stop_price is not None else "Order",
                "stopOrderType": "Stop" if order.stop_price is not None else "", "marketUnit": "baseCoin",
                "rejectReason": "EC_NoError", "isLeverage": "0", "positionIdx": 0, "reduceOnly": order.reduce_only,
                "createdTime": str(order.created_ms), "updatedTime": str(order.updated_ms)}

    def _execution(self, trade: Trade) -> dict[str, Any]:
        order = self.engine.orders[trade.order_id]
        return {"symbol": self.engine.specs[trade.symbol].venue_id, "orderId": str(trade.order_id),
                "orderLinkId": order.client_order_id, "side": trade.side.value.capitalize(),
                "orderPrice": fmt(order.price) if order.price is not None else "0", "orderQty": fmt(order.quantity),
                "orderType": "Limit" if order.kind.endswith("LIMIT") else "Market", "execId": str(trade.trade_id),
                "execPrice": fmt(trade.price), "execQty": fmt(trade.qty), "execValue": fmt(trade.quote_qty),
                "execFee": fmt(trade.commission), "feeCurrency": trade.commission_asset, "execType": "Trade",
                "feeRate": fmt(self.engine.maker_fee if trade.is_maker else self.engine.taker_fee),
                "isMaker": trade.is_maker, "execTime": str(trade.time_ms), "seq": trade.trade_id,
                "closedSize": "0", "execPnl": fmt(trade.realized_pnl)}

    def _position(self, symbol: str) -> dict[str, Any]:
        engine = _futures(self.engine)
        pos, mark = engine.positions[symbol], engine.price(symbol)
        side = "Buy" if pos.qty > 0 else "Sell" if pos.qty < 0 else ""
        return {"positionIdx": 0, "riskId": 1, "riskLimitValue": "2000000", "symbol": engine.specs[symbol].venue_id,
                "side": side, "size": fmt(abs(pos.qty)), "avgPrice": fmt(pos.entry),
                "positionValue": fmt(abs(pos.qty) * pos.entry), "tradeMode": 0, "autoAddMargin": 0,
                "positionStatus": "Normal", "leverage": str(engine.leverage(symbol)), "markPrice": fmt(mark),
                "liqPrice": "", "bustPrice": "", "positionIM": fmt(pos.margin),
                "positionMM": fmt(abs(pos.qty) * mark * Decimal("0.005")), "positionBalance": fmt(pos.margin),
                "takeProfit": "0", "stopLoss": "0", "trailingStop": "0", "unrealisedPnl": fmt(engine.unrealized(symbol)),
                "curRealisedPnl": fmt(pos.realized), "cumRealisedPnl": fmt(pos.realized), "adlRankIndicator": 0,
                "isReduceOnly": False, "createdTime": str(pos.updated_ms), "updatedTime": str(pos.updated_ms),
                "seq": pos.updated_ms}

    def _symbols(self, params: dict[str, Any]) -> list[str]:
        return [self.symbol(params["symbol"])] if params.get("symbol") else list(self.engine.specs)

    def _spot(self, params: dict[str, Any]) -> None:
        """Refuse a category other than the emulated one."""
        if params.get("category", self.category) != self.category:
            raise _Refusal(10001, f"params error: category {params.get('category')!r} is not emulated here "
                                  f"({self.category} only)")

    @staticmethod
    def _which(params: dict[str, Any]) -> dict[str, Any]:
        order_id = params.get("orderId")
        if order_id:
            return {"order_id": int(order_id)}
        return {"client_order_id": params.get("orderLinkId") or None}


class _Refusal(VenueError):
    """A refusal already in Bybit's words (retCode, retMsg)."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(200, code, msg)


def _futures(engine: Engine) -> FuturesEngine:
    if not isinstance(engine, FuturesEngine):
        raise _Refusal(10001, "params error: category spot has no positions")
    return engine


def _decimal(raw: Any) -> Decimal | None:
    if raw in (None, "", "0"):
        return None
    value = Decimal(str(raw))
    if not value.is_finite() or value <= 0:
        raise ValueError(f"not a positive number: {raw!r}")
    return value


BYBIT_FAULTS = FaultAnswers(  # what Bybit's gateway answers (plain text), and its own rate-limit / ban words
    unavailable=lambda: Response("Service Unavailable", status_code=503, media_type="text/plain"),
    status_unknown=lambda: Response("Gateway Timeout", status_code=504, media_type="text/plain"),
    rate_limited=lambda retry_after_s: refused(10006, "Too many visits!",
                                               headers={"X-Bapi-Limit-Reset-Timestamp": "0",
                                                        "Retry-After": str(retry_after_s)}),
    banned=lambda until_ms, retry_after_s: JSONResponse(
        {"retCode": 10018, "retMsg": f"access too frequent, IP banned until {until_ms}"}, status_code=403,
        headers={"Retry-After": str(retry_after_s)}),
    busy=lambda: refused(10016, "System error. Please try again later."),
)
