"""The emulator's Binance USDⓈ-M futures dialect (``/fapi``): enough for a stock ccxt
``binanceusdm`` (or ``binance`` with ``defaultType`` swap / future) over a
``FuturesEngine``: load markets, set leverage, place / query / cancel market and limit
orders (reduce-only included), open orders, trades, balance, account and positions.

Public:  GET  /fapi/v1/ping, /time, /exchangeInfo, /ticker/24hr, /ticker/price,
              /ticker/bookTicker, /premiumIndex, /klines; /fapi/v2/ticker/price
Signed:  GET  /fapi/v1/order, /openOrders, /allOrders, /userTrades, /leverageBracket,
              /positionSide/dual; /fapi/v2|v3/account, /balance, /positionRisk
         POST /fapi/v1/order, /leverage          DELETE /fapi/v1/order, /allOpenOrders

Requests are signed and checked exactly as on spot (``app.BinanceDialect``). One-way
position mode only (``positionSide`` BOTH); cross margin is reported, isolated margin
accounting applies (``brokers.emulator.futures``). Refusals in Binance's futures words:
-2019 "Margin is insufficient." (ccxt ``InsufficientFunds``), -2022 "ReduceOnly Order is
rejected." (``InvalidOrder``), -4028 (leverage out of range); the rest as on spot.
Conditional orders (STOP / STOP_MARKET: Binance's algo-order service) are not emulated.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from starlette.routing import Route

from brokers.emulator.app import BinanceDialect, _decimal, _side
from brokers.emulator.dialect import fmt
from brokers.emulator.engine import EmOrder, MarketSpec, Trade, bad_request
from brokers.emulator.futures import FuturesEngine

KINDS = {"MARKET": "MARKET", "LIMIT": "LIMIT"}  # fapi order type -> engine kind
MAINT_MARGIN_RATIO = Decimal("0.004")


def _digits(step: Decimal) -> int:
    return max(0, -step.normalize().as_tuple().exponent)  # type: ignore[operator]


class BinanceFuturesDialect(BinanceDialect):
    """Routes of Binance's USDⓈ-M futures API over a ``FuturesEngine``."""

    engine: FuturesEngine

    def api_routes(self) -> list[Route]:
        public = [
            ("/fapi/v1/ping", "GET", self.ping),
            ("/fapi/v1/time", "GET", self.time),
            ("/fapi/v1/exchangeInfo", "GET", self.exchange_info),
            ("/fapi/v1/ticker/24hr", "GET", self.ticker_24hr),
            ("/fapi/v1/ticker/price", "GET", self.ticker_price),
            ("/fapi/v2/ticker/price", "GET", self.ticker_price),
            ("/fapi/v1/ticker/bookTicker", "GET", self.book_ticker),
            ("/fapi/v1/premiumIndex", "GET", self.premium_index),
            ("/fapi/v1/klines", "GET", self.klines),
        ]
        signed = [
            ("/fapi/v1/order", "POST", self.new_order),
            ("/fapi/v1/order", "GET", self.query_order),
            ("/fapi/v1/order", "DELETE", self.cancel_order),
            ("/fapi/v1/openOrders", "GET", self.open_orders),
            ("/fapi/v1/allOpenOrders", "DELETE", self.cancel_all_open_orders),
            ("/fapi/v1/allOrders", "GET", self.all_orders),
            ("/fapi/v1/userTrades", "GET", self.my_trades),
            ("/fapi/v1/leverage", "POST", self.set_leverage),
            ("/fapi/v1/leverageBracket", "GET", self.leverage_bracket),
            ("/fapi/v1/positionSide/dual", "GET", self.position_mode),
            ("/fapi/v2/account", "GET", self.account),
            ("/fapi/v3/account", "GET", self.account),
            ("/fapi/v2/balance", "GET", self.balance),
            ("/fapi/v3/balance", "GET", self.balance),
            ("/fapi/v2/positionRisk", "GET", self.position_risk),
            ("/fapi/v3/positionRisk", "GET", self.position_risk),
        ]
        return self.route_table(public, signed)

    # -- public

    def exchange_info(self, params: dict[str, str]) -> dict[str, Any]:
        return {
            "timezone": "UTC",
            "serverTime": self.engine.now_ms(),
            "futuresType": "U_MARGINED",
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
                {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            ],
            "exchangeFilters": [],
            "assets": [{"asset": self.engine.settle_asset, "marginAvailable": True, "autoAssetExchange": "0"}],
            "symbols": [self._market(self.engine.specs[s]) for s in self.symbols_param(params)],
        }

    def _market(self, spec: MarketSpec) -> dict[str, Any]:
        lot = {"minQty": fmt(spec.min_qty), "maxQty": fmt(spec.max_qty), "stepSize": fmt(spec.step_size)}
        return {
            "symbol": spec.venue_id, "pair": spec.venue_id, "contractType": "PERPETUAL",
            "deliveryDate": 4133404800000, "onboardDate": 1569398400000, "status": "TRADING",
            "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000",
            "baseAsset": spec.base, "quoteAsset": spec.quote, "marginAsset": spec.quote,
            "pricePrecision": _digits(spec.tick_size), "quantityPrecision": _digits(spec.step_size),
            "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN", "settlePlan": 0,
            "triggerProtect": "0.0500", "liquidationFee": "0.012500", "marketTakeBound": "0.05",
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": fmt(spec.min_price), "maxPrice": fmt(spec.max_price),
                 "tickSize": fmt(spec.tick_size)},
                {"filterType": "LOT_SIZE", **lot},
                {"filterType": "MARKET_LOT_SIZE", **lot},
                {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                {"filterType": "MIN_NOTIONAL", "notional": fmt(spec.min_notional)},
            ],
            "orderTypes": list(KINDS),
            "timeInForce": ["GTC", "IOC", "FOK"],
        }

    def premium_index(self, params: dict[str, str]) -> Any:
        """Mark price = index price = the current price; no funding."""
        now = self.engine.now_ms()
        rows = [{"symbol": self.engine.specs[s].venue_id, "markPrice": fmt(self.engine.price(s)),
                 "indexPrice": fmt(self.engine.price(s)), "estimatedSettlePrice": fmt(self.engine.price(s)),
                 "lastFundingRate": "0.00000000", "interestRate": "0.00000000", "nextFundingTime": now + 28_800_000,
                 "time": now} for s in self.symbols_param(params)]
        return rows[0] if params.get("symbol") else rows

    # -- signed: orders

    def new_order(self, params: dict[str, str]) -> dict[str, Any]:
        symbol = self.symbol(params.get("symbol"))
        side = _side(params.get("side"))
        kind = KINDS.get(params.get("type", "").upper())
        if kind is None:
            raise bad_request(-1116, "Invalid orderType.")
        if params.get("positionSide", "BOTH").upper() != "BOTH":
            raise bad_request(-4061, "Order's position side does not match user's setting.")
        quantity = _decimal(params, "quantity")
        if quantity is None:
            raise bad_request(-1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.")
        if kind == "LIMIT" and not params.get("timeInForce"):
            raise bad_request(-1102, "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed.")
        order = self.engine.place(
            symbol, side, kind, quantity,
            client_order_id=params.get("newClientOrderId") or f"emu-{self.engine.now_ms()}-{len(self.engine.orders)}",
            price=_decimal(params, "price"),
            tif=params.get("timeInForce", "GTC").upper(),
            reduce_only=str(params.get("reduceOnly", "false")).lower() == "true",
        )
        return self._order(order)

    def query_order(self, params: dict[str, str]) -> dict[str, Any]:
        symbol, order_id, client_id = self._find(params)
        return self._order(self.engine.find(symbol, order_id=order_id, client_order_id=client_id))

    def cancel_order(self, params: dict[str, str]) -> dict[str, Any]:
        symbol, order_id, client_id = self._find(params)
        return self._order(self.engine.cancel(symbol, order_id=order_id, client_order_id=client_id))

    def open_orders(self, params: dict[str, str]) -> list[dict[str, Any]]:
        symbol = self.symbol(params["symbol"]) if params.get("symbol") else None
        return [self._order(o) for o in self.engine.open_orders(symbol)]

    def cancel_all_open_orders(self, params: dict[str, str]) -> dict[str, Any]:
        symbol = self.symbol(params.get("symbol"))
        for order in self.engine.open_orders(symbol):
            self.engine.cancel(symbol, order_id=order.order_id)
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def all_orders(self, params: dict[str, str]) -> list[dict[str, Any]]:
        symbol = self.symbol(params.get("symbol"))
        since = int(params.get("orderId") or 0)
        limit = min(int(params.get("limit", 500)), 1000)
        orders = [o for o in self.engine.orders.values() if o.symbol == symbol and o.order_id >= since]
        return [self._order(o) for o in orders[-limit:]]

    def my_trades(self, params: dict[str, str]) -> list[dict[str, Any]]:
        symbol = self.symbol(params.get("symbol"))
        order_id = int(params["orderId"]) if params.get("orderId") else None
        start, end = int(params.get("startTime") or 0), int(params.get("endTime") or 2**62)
        from_id = int(params.get("fromId") or 0)
        limit = min(int(params.get("limit", 500)), 1000)
        chosen = [t for t in self.engine.my_trades(symbol, order_id=order_id)
                  if start <= t.time_ms <= end and t.trade_id >= from_id]
        return [self._trade(t) for t in chosen[:limit]]

    # -- signed: leverage, account, positions

    def set_leverage(self, params: dict[str, str]) -> dict[str, Any]:
        symbol = self.symbol(params.get("symbol"))
        try:
            leverage = int(params.get("leverage", ""))
        except ValueError:
            raise bad_request(-1102, "Mandatory parameter 'leverage' was not sent, was empty/null, or malformed.") from None
        self.engine.set_leverage(symbol, leverage)
        return {"leverage": leverage, "maxNotionalValue": "50000000", "symbol": self.engine.specs[symbol].venue_id}

    def leverage_bracket(self, params: dict[str, str]) -> Any:
        rows = [{"symbol": self.engine.specs[s].venue_id, "notionalCoef": 1.0, "brackets": [
            {"bracket": 1, "initialLeverage": self.engine.max_leverage, "notionalCap": 50_000_000, "notionalFloor": 0,
             "maintMarginRatio": float(MAINT_MARGIN_RATIO), "cum": 0.0}]} for s in self.symbols_param(params)]
        return rows[0] if params.get("symbol") else rows

    def position_mode(self, params: dict[str, str]) -> dict[str, Any]:
        return {"dualSidePosition": False}

    def _asset(self) -> dict[str, Any]:
        engine, asset = self.engine, self.engine.settle_asset
        wallet, free = engine.wallet(), engine.free(asset)
        unrealized = sum((engine.unrealized(s) for s in engine.specs), Decimal(0))
        order_im, position_im = engine.order_margin(), engine.position_margin()
        return {
            "asset": asset, "walletBalance": fmt(wallet), "unrealizedProfit": fmt(unrealized),
            "marginBalance": fmt(wallet + unrealized), "maintMargin": fmt(self._maint_margin()),
            "initialMargin": fmt(order_im + position_im), "positionInitialMargin": fmt(position_im),
            "openOrderInitialMargin": fmt(order_im), "crossWalletBalance": fmt(wallet),
            "crossUnPnl": fmt(unrealized), "availableBalance": fmt(free), "maxWithdrawAmount": fmt(free),
            "marginAvailable": True, "updateTime": engine.now_ms(),
        }

    def _maint_margin(self) -> Decimal:
        return sum((abs(p.qty) * self.engine.price(s) * MAINT_MARGIN_RATIO
                    for s, p in self.engine.positions.items()), Decimal(0))

    def account(self, params: dict[str, str]) -> dict[str, Any]:
        asset = self._asset()
        return {
            "totalInitialMargin": asset["initialMargin"], "totalMaintMargin": asset["maintMargin"],
            "totalWalletBalance": asset["walletBalance"], "totalUnrealizedProfit": asset["unrealizedProfit"],
            "totalMarginBalance": asset["marginBalance"], "totalPositionInitialMargin": asset["positionInitialMargin"],
            "totalOpenOrderInitialMargin": asset["openOrderInitialMargin"],
            "totalCrossWalletBalance": asset["crossWalletBalance"], "totalCrossUnPnl": asset["crossUnPnl"],
            "availableBalance": asset["availableBalance"], "maxWithdrawAmount": asset["maxWithdrawAmount"],
            "canTrade": True, "canDeposit": False, "canWithdraw": False, "feeTier": 0, "multiAssetsMargin": False,
            "updateTime": self.engine.now_ms(),
            "assets": [asset],
            "positions": [self._position(s, brief=True) for s, p in self.engine.positions.items() if p.qty],
        }

    def balance(self, params: dict[str, str]) -> list[dict[str, Any]]:
        asset = self._asset()
        return [{"accountAlias": "emulator", "asset": asset["asset"], "balance": asset["walletBalance"],
                 "crossWalletBalance": asset["crossWalletBalance"], "crossUnPnl": asset["crossUnPnl"],
                 "availableBalance": asset["availableBalance"], "maxWithdrawAmount": asset["maxWithdrawAmount"],
                 "marginAvailable": True, "updateTime": asset["updateTime"]}]

    def position_risk(self, params: dict[str, str]) -> list[dict[str, Any]]:
        """Every symbol's position, flat ones included (as Binance answers)."""
        symbols = [self.symbol(params["symbol"])] if params.get("symbol") else list(self.engine.specs)
        return [self._position(s) for s in symbols]

    # -- serialisers

    def _position(self, symbol: str, *, brief: bool = False) -> dict[str, Any]:
        engine, pos = self.engine, self.engine.positions[symbol]
        mark = engine.price(symbol)
        notional = pos.qty * mark
        out: dict[str, Any] = {
            "symbol": engine.specs[symbol].venue_id, "positionSide": "BOTH", "positionAmt": fmt(pos.qty),
            "entryPrice": fmt(pos.entry), "breakEvenPrice": fmt(pos.entry), "unrealizedProfit": fmt(engine.unrealized(symbol)),
            "notional": fmt(notional), "initialMargin": fmt(pos.margin), "positionInitialMargin": fmt(pos.margin),
            "openOrderInitialMargin": fmt(engine.order_margin(symbol)),
            "maintMargin": fmt(abs(notional) * MAINT_MARGIN_RATIO), "isolatedWallet": "0",
            "leverage": str(engine.leverage(symbol)), "isolated": False, "updateTime": pos.updated_ms,
        }
        if brief:
            return out
        out.update({
            "unRealizedProfit": out.pop("unrealizedProfit"), "markPrice": fmt(mark), "liquidationPrice": "0",
            "marginType": "cross", "isolatedMargin": "0.00000000", "isAutoAddMargin": "false",
            "maxNotionalValue": "50000000", "marginAsset": engine.settle_asset, "adl": 0,
            "bidNotional": "0", "askNotional": "0",
        })
        return out

    def _order(self, order: EmOrder) -> dict[str, Any]:
        average = order.quote_executed / order.executed if order.executed else None
        return {
            "orderId": order.order_id, "symbol": self.engine.specs[order.symbol].venue_id, "status": order.status,
            "clientOrderId": order.client_order_id, "price": fmt(order.price), "avgPrice": fmt(average),
            "origQty": fmt(order.quantity), "executedQty": fmt(order.executed), "cumQty": fmt(order.executed),
            "cumQuote": fmt(order.quote_executed), "timeInForce": order.tif, "type": order.kind,
            "origType": order.kind, "reduceOnly": order.reduce_only, "closePosition": False,
            "side": order.side.value.upper(), "positionSide": "BOTH", "stopPrice": fmt(None),
            "workingType": "CONTRACT_PRICE", "priceProtect": False, "priceMatch": "NONE",
            "selfTradePreventionMode": "NONE", "goodTillDate": 0,
            "time": order.created_ms, "updateTime": order.updated_ms,
        }

    def _trade(self, trade: Trade) -> dict[str, Any]:
        return {
            "symbol": self.engine.specs[trade.symbol].venue_id, "id": trade.trade_id, "orderId": trade.order_id,
            "side": trade.side.value.upper(), "price": fmt(trade.price), "qty": fmt(trade.qty),
            "realizedPnl": fmt(trade.realized_pnl), "quoteQty": fmt(trade.quote_qty),
            "commission": fmt(trade.commission), "commissionAsset": trade.commission_asset,
            "time": trade.time_ms, "positionSide": "BOTH", "buyer": trade.side.value == "buy",
            "maker": trade.is_maker,
        }

