"""The ccxt adapter: one ``BaseBroker`` for every venue ccxt speaks, driven by a venue
profile (``profiles.py``) and with ccxt's errors mapped once (``errors.py``).

    broker = CcxtBroker("binance", api_key=..., secret=...)              # the venue
    broker = CcxtBroker("binance", api_key=..., secret=..., base_url=url)  # the emulator
    async with broker:
        result = await broker.place_order(order)

* ``connect`` builds ``ccxt.async_support.<exchange_id>`` (rate limiter on) and loads
  the markets. Every HTTP request then waits for ccxt's limiter and, if given, for
  ``request_gate`` (an async callable shared by every client of the account, e.g.
  ``tradpal.venue_limits.PrefectRateGate``: one rate for all runs together); quantities and prices are rounded with the market's precision
  (``amount_to_precision`` / ``price_to_precision``) before they are sent.
* Our client order id travels in the venue's own parameter (Binance ``newClientOrderId``)
  and ``get_order_by_client_id`` finds it again (Binance ``origClientOrderId``), None if
  the venue never saw it. A placement the venue refuses as a duplicate client id is
  reconciled: the existing order is returned, nothing is placed twice.
* Statuses: ccxt ``open`` -> NEW, or PARTIALLY_FILLED once something filled; ``closed`` ->
  FILLED; ``canceled`` / ``rejected`` / ``expired`` -> CANCELED / REJECTED / EXPIRED.
  Fills (with the venue's trade ids) come from the order answer when it carries them
  (Binance FULL answers), else from the order's trades.
* ``market_type="swap"`` trades a venue's USDT-margined perpetuals where its profile
  has one (binance, bybit; symbols as ccxt names them, ``BTC/USDT:USDT``):
  ``Order.reduce_only`` travels as ccxt's ``reduceOnly`` and ``leverage`` is set once per
  symbol before its first order (a venue answering "already at that leverage" counts as
  set). ``get_positions`` is then the venue's own positions (signed: a short is < 0,
  at its entry price and mark); the quote balance is the wallet (deposits, realised
  profit, fees: ccxt's margin balance less the unrealised profit where the profile says
  ccxt reports that) and equity the wallet plus the positions' unrealised profit. Futures are usable through the adapter's calls; the pipeline's step 7 still
  books spot-style (cash, not margin), so a futures live run is not wired yet.
* A spot venue knows balances, not positions: ``get_positions`` reports each held base
  currency that trades against the quote currency, valued at the last price (the cost
  basis lives in our ledger, so ``average_price`` is that last price too).
* Credentials never leave this object in text: error messages, ``repr`` and ccxt's own
  debug log lines (routed through a redacting logger) blank them out.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import ccxt.async_support as ccxt_async

from brokers.base.errors import BrokerError, InvalidOrderError, OrderNotFoundError
from brokers.base.protocol import BaseBroker
from brokers.base.types import (
    AccountInfo,
    Fill,
    MarketLimits,
    Order,
    OrderResult,
    OrderStatus,
    OrderType,
    Position,
    Side,
    TimeInForce,
)
from brokers.ccxt.errors import DuplicateClientOrderIdError, mapped_errors, redact
from brokers.ccxt.profiles import VenueProfile, profile_for

log = logging.getLogger("brokers.ccxt")
wire_log = logging.getLogger("brokers.ccxt.wire")

# our order type -> (ccxt order type, whether the venue takes a time in force)
ORDER_TYPES: Mapping[OrderType, tuple[str, bool]] = {
    OrderType.MARKET: ("market", False),
    OrderType.LIMIT: ("limit", True),
    OrderType.STOP: ("market", False),  # with triggerPrice: Binance STOP_LOSS
    OrderType.STOP_LIMIT: ("limit", True),  # with triggerPrice: Binance STOP_LOSS_LIMIT
}

# ccxt's unified order status -> ours (None: open, NEW or PARTIALLY_FILLED by what filled)
STATUSES: Mapping[str, OrderStatus | None] = {
    "open": None,
    "canceling": None,
    "closed": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELED,
    "rejected": OrderStatus.REJECTED,
    "expired": OrderStatus.EXPIRED,
}

REASONS: Mapping[OrderStatus, str] = {
    OrderStatus.CANCELED: "canceled at the venue",
    OrderStatus.REJECTED: "rejected by the venue",
    OrderStatus.EXPIRED: "expired at the venue (time in force, or a market order without liquidity)",
}


def rebase_api_urls(api: Any, base_url: str) -> Any:
    """ccxt's ``urls['api']`` (a URL or a nested dict of them) with every URL's scheme
    and host replaced by ``base_url``'s, paths kept: ``https://api.binance.com/api/v3``
    becomes ``http://127.0.0.1:8000/api/v3``."""
    if isinstance(api, str):
        url, base = urlsplit(api), urlsplit(base_url)
        return urlunsplit((base.scheme, base.netloc, base.path.rstrip("/") + url.path, url.query, url.fragment))
    if isinstance(api, Mapping):
        return {key: rebase_api_urls(value, base_url) for key, value in api.items()}
    return api


def url_pairs(original: Any, rebased: Any) -> list[tuple[str, str]]:
    """(rebased URL, original URL) for every URL in ccxt's ``urls['api']`` and its rebased
    copy (``rebase_api_urls``), the longest rebased URL first."""
    if isinstance(original, str) and isinstance(rebased, str):
        return [(rebased, original)]
    pairs: list[tuple[str, str]] = []
    if isinstance(original, Mapping) and isinstance(rebased, Mapping):
        for key, value in original.items():
            pairs += url_pairs(value, rebased.get(key))
    return sorted(pairs, key=lambda pair: len(pair[0]), reverse=True)


def unrebase(url: str, pairs: Sequence[tuple[str, str]]) -> str:
    """The venue's own URL for a rebased one (``url`` itself if none matches)."""
    for rebased, original in pairs:
        if url.startswith(rebased):
            return original + url[len(rebased):]
    return url


def keep_error_tables(exchange: Any, pairs: Sequence[tuple[str, str]]) -> None:
    """Some ccxt classes pick their error table by the venue's host (Binance: fapi's
    -2022 "ReduceOnly Order is rejected." is an ``InvalidOrder`` only on a fapi host, a
    plain ``ExchangeError`` elsewhere). With the API rebased (the emulator, a proxy), ask
    with the URL the request would have had."""
    by_url = getattr(exchange, "get_exceptions_by_url", None)
    if by_url is None:
        return

    def get_exceptions_by_url(url: str | None, exact_or_broad: str) -> Any:
        return by_url(unrebase(url, pairs) if url else url, exact_or_broad)

    exchange.get_exceptions_by_url = get_exceptions_by_url


def check_leverage(profile: VenueProfile, leverage: int | None) -> int | None:
    """``leverage`` if the profile's market takes it (derivatives, 1 to its maximum);
    ``ValueError`` naming the venue and the bound otherwise."""
    if leverage is None:
        return None
    if profile.max_leverage is None:
        raise ValueError(f"{profile.exchange_id} {profile.market_type}: no leverage on this market type")
    if not 1 <= leverage <= profile.max_leverage:
        raise ValueError(f"{profile.exchange_id} {profile.market_type}: leverage must be 1..{profile.max_leverage}, "
                         f"got {leverage}")
    return leverage


def order_params(profile: VenueProfile, order: Order, *, action: str) -> dict[str, Any]:
    """The venue parameters of ``order`` beyond ccxt's unified arguments: our client
    order id in the venue's own parameter, the time in force where the type takes one,
    and reduce-only (``InvalidOrderError`` on a market type without it)."""
    _, takes_tif = ORDER_TYPES[order.order_type]
    params: dict[str, Any] = {profile.client_order_id_param: order.client_order_id}
    if takes_tif:
        params["timeInForce"] = order.time_in_force.value
    if order.reduce_only:
        if profile.reduce_only_param is None:
            raise InvalidOrderError(f"{action}: reduce-only needs a derivatives market, "
                                    f"{profile.exchange_id} {profile.market_type} has none")
        params[profile.reduce_only_param] = True
    return params


def describe(order: Order) -> str:
    """How messages name an order: side, quantity, symbol, type, price, client id."""
    price = f" @ {order.price!r}" if order.price is not None else ""
    stop = f" stop {order.stop_price!r}" if order.stop_price is not None else ""
    reduce = " reduce-only" if order.reduce_only else ""
    return (
        f"{order.side.value} {order.quantity!r} {order.symbol} {order.order_type.value} "
        f"{order.time_in_force.value}{price}{stop}{reduce}, order {order.client_order_id}"
    )


def _as_order(raw: Mapping[str, Any], client_order_id: str) -> Order:
    """A ccxt order (as fetched) as the ``Order`` it is."""
    trigger = raw.get("triggerPrice") or raw.get("stopPrice") or None
    kind = str(raw.get("type") or "market").lower()
    if trigger:
        order_type = OrderType.STOP_LIMIT if "limit" in kind else OrderType.STOP
    else:
        order_type = OrderType.LIMIT if "limit" in kind else OrderType.MARKET
    tif = str(raw.get("timeInForce") or "GTC").upper()
    return Order(
        symbol=str(raw["symbol"]),
        side=Side(str(raw.get("side") or "buy").lower()),
        order_type=order_type,
        quantity=float(raw.get("amount") or 0.0),
        client_order_id=client_order_id,
        price=float(raw["price"]) if raw.get("price") and order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT) else None,
        stop_price=float(trigger) if trigger else None,
        time_in_force=TimeInForce(tif) if tif in TimeInForce.__members__ else TimeInForce.GTC,
        placed_at=_when(raw.get("timestamp")),
    )


def _step(precision: Any, mode: int) -> float | None:
    """A ccxt precision as a step: TICK_SIZE mode gives the step, DECIMAL_PLACES the
    number of decimals; significant digits have no fixed step."""
    if precision is None:
        return None
    if mode == ccxt_async.TICK_SIZE:
        return float(precision)
    if mode == ccxt_async.DECIMAL_PLACES:
        return 10.0 ** -int(precision)
    return None


def _limits(symbol: str, market: Mapping[str, Any], mode: int) -> MarketLimits:
    limits, precision = market.get("limits") or {}, market.get("precision") or {}
    amount, cost = limits.get("amount") or {}, limits.get("cost") or {}
    return MarketLimits(
        symbol=symbol,
        amount_step=_step(precision.get("amount"), mode),
        price_step=_step(precision.get("price"), mode),
        min_amount=float(amount.get("min") or 0.0),
        max_amount=float(amount["max"]) if amount.get("max") else None,
        min_notional=float(cost.get("min") or 0.0),
    )


def _when(ms: Any) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, tz=UTC) if isinstance(ms, int | float) else None


def _gated(throttle: Callable[..., Awaitable[Any]], gate: Callable[[], Awaitable[None]]) -> Callable[..., Any]:
    """ccxt's ``throttle`` (awaited before every request it signs and sends), then ``gate``."""

    async def throttled(cost: Any = None) -> None:
        await throttle(cost)
        await gate()

    return throttled


class _RedactingLogger(logging.LoggerAdapter):
    """ccxt's ``logger``: its request / response debug lines (headers carry the API key)
    go to ``brokers.ccxt.wire`` with the credentials blanked out."""

    def __init__(self, logger: logging.Logger, secrets: Sequence[str | None]) -> None:
        super().__init__(logger, {})
        self._secrets = tuple(secrets)

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            text = str(msg) % args if args else str(msg)
            self.logger.log(level, "%s", redact(text, self._secrets), **kwargs)


class CcxtBroker(BaseBroker):
    """A venue through ccxt (``ccxt.async_support``); see the module docstring."""

    def __init__(
        self,
        exchange_id: str = "binance",
        *,
        api_key: str,
        secret: str,
        market_type: str = "spot",
        base_url: str | None = None,
        sandbox: bool = False,
        name: str | None = None,
        options: Mapping[str, Any] | None = None,
        password: str | None = None,
        quote_currency: str | None = None,
        timeout_ms: int = 10_000,
        request_gate: Callable[[], Awaitable[None]] | None = None,
        leverage: int | None = None,
        ccxt_rate_limit: bool = True,
    ) -> None:
        self.profile: VenueProfile = profile_for(exchange_id, market_type)
        self.ccxt_rate_limit = ccxt_rate_limit  # off: only for a venue that limits nothing (the emulator)
        self.leverage = check_leverage(self.profile, leverage)
        self._leveraged: set[str] = set()
        self.exchange_id = exchange_id
        self.market_type = market_type
        self.base_url = base_url
        self.sandbox = sandbox
        self.name = name or exchange_id
        self.quote_currency = quote_currency or self.profile.quote_currency
        self.timeout_ms = timeout_ms
        self._options = options or {}
        self._api_key = api_key
        self._secret = secret
        self._password = password
        self._request_gate = request_gate
        self._exchange: Any = None

    def __repr__(self) -> str:
        where = f", base_url={self.base_url!r}" if self.base_url else ""
        return f"CcxtBroker({self.exchange_id!r}, name={self.name!r}, market_type={self.market_type!r}{where})"

    @property
    def exchange(self) -> Any:
        """The connected ccxt exchange (``BrokerError`` before ``connect``)."""
        if self._exchange is None:
            raise BrokerError(f"{self.name}: not connected; call connect() (or use 'async with') first")
        return self._exchange

    def _guard(self, action: str) -> AbstractContextManager[None]:
        return mapped_errors(
            f"{action} at {self.name}",
            secrets=(self._api_key, self._secret, self._password),
            is_duplicate=self.profile.is_duplicate,
            is_busy=self.profile.is_busy,
        )

    def _build(self) -> Any:
        options = copy.deepcopy(dict(self.profile.options))
        options["defaultType"] = self.market_type
        options.update(copy.deepcopy(dict(self._options)))
        config: dict[str, Any] = {
            **self.profile.exchange_config,
            "apiKey": self._api_key,
            "secret": self._secret,
            "enableRateLimit": self.ccxt_rate_limit,
            "timeout": self.timeout_ms,
            "options": options,
        }
        if self._password is not None:
            config["password"] = self._password
        exchange = getattr(ccxt_async, self.exchange_id)(config)
        exchange.logger = _RedactingLogger(wire_log, (self._api_key, self._secret, self._password))
        if self.sandbox:
            exchange.set_sandbox_mode(True)
        if self.base_url:
            original = exchange.urls["api"]
            exchange.urls["api"] = rebase_api_urls(original, self.base_url)
            keep_error_tables(exchange, url_pairs(original, exchange.urls["api"]))
        if self._request_gate is not None:
            exchange.throttle = _gated(exchange.throttle, self._request_gate)
        return exchange

    # ------------------------------------------------------------------ BaseBroker

    async def connect(self) -> None:
        """Build the ccxt client and load the venue's markets."""
        if self._exchange is not None:
            return
        exchange = self._build()
        try:
            with self._guard("load markets"):
                await exchange.load_markets()
        except BaseException:
            await exchange.close()
            raise
        self._exchange = exchange
        log.info("%s: connected (%d markets)", self.name, len(exchange.markets))

    async def close(self) -> None:
        """Release the HTTP session."""
        exchange, self._exchange = self._exchange, None
        if exchange is not None:
            await exchange.close()

    async def get_account_info(self) -> AccountInfo:
        """Balances (free + locked) and locked amounts per currency; equity in the quote
        currency at the last prices (currencies without a market against it are left out
        of equity)."""
        totals, locked = await self._balances()
        if self.profile.is_derivative:  # the wallet, plus what the open positions would realise
            unrealized = sum(p.unrealized_pnl for p in await self._contract_positions())
            if self.profile.balance_includes_unrealized and self.quote_currency in totals:
                totals[self.quote_currency] -= unrealized
            return AccountInfo(balances=totals, equity=totals.get(self.quote_currency, 0.0) + unrealized,
                               quote_currency=self.quote_currency, locked=locked)
        prices = await self._prices(totals)
        equity = totals.get(self.quote_currency, 0.0) + sum(
            qty * prices[asset] for asset, qty in totals.items() if asset in prices
        )
        return AccountInfo(balances=totals, equity=equity, quote_currency=self.quote_currency, locked=locked)

    async def get_positions(self) -> list[Position]:
        """Each held base currency with a market against the quote currency (spot), or the
        venue's open positions (derivatives)."""
        if self.profile.is_derivative:
            return await self._contract_positions()
        totals, _ = await self._balances()
        prices = await self._prices(totals)
        return [
            Position(
                symbol=f"{asset}/{self.quote_currency}",
                quantity=qty,
                average_price=prices[asset],
                market_price=prices[asset],
            )
            for asset, qty in sorted(totals.items())
            if asset in prices and qty > 0
        ]

    async def place_order(self, order: Order) -> OrderResult:
        """Send ``order`` (rounded to the market's precision) with its client order id.
        A venue answer "duplicate client id" returns the order already there."""
        exchange = self.exchange
        action = f"place {describe(order)}"
        if not self.profile.accepts_client_order_id(order.client_order_id):
            raise InvalidOrderError(
                f"{action} at {self.name}: client order id does not match the venue's pattern "
                f"{self.profile.client_order_id_pattern!r}"
            )
        kind, _ = ORDER_TYPES[order.order_type]
        params = order_params(self.profile, order, action=f"{action} at {self.name}")
        if self.leverage is not None and order.symbol not in self._leveraged:
            await self._set_leverage(order.symbol, self.leverage)
        try:
            with self._guard(action):
                amount = float(exchange.amount_to_precision(order.symbol, order.quantity))
                price = None
                if order.price is not None:
                    price = float(exchange.price_to_precision(order.symbol, order.price))
                if order.stop_price is not None:
                    params["triggerPrice"] = float(exchange.price_to_precision(order.symbol, order.stop_price))
                raw = await exchange.create_order(order.symbol, kind, order.side.value, amount, price, params)
        except DuplicateClientOrderIdError:
            existing = await self.get_order_by_client_id(order.client_order_id, order.symbol)
            if existing is None:
                raise
            log.warning("%s: %s is already at the venue as %s; not placed again",
                        self.name, order.client_order_id, existing.order_id)
            return existing
        raw = await self._complete(raw, order.symbol)
        result = await self._result(raw, order.symbol, order)
        log.info("%s: placed %s -> %s %s", self.name, describe(order), result.order_id, result.status.value)
        return result

    async def _set_leverage(self, symbol: str, leverage: int) -> None:
        """Set ``symbol``'s leverage at the venue (once per symbol and connection)."""
        try:
            with self._guard(f"set leverage {leverage}x on {symbol}"):
                await self.exchange.set_leverage(leverage, symbol)
        except BrokerError as exc:
            if not self.profile.is_leverage_unchanged(str(exc)):
                raise
        self._leveraged.add(symbol)
        log.info("%s: leverage %dx on %s", self.name, leverage, symbol)

    async def cancel_order(self, order_id: str, symbol: str) -> OrderResult:
        """Cancel an open order: ``InvalidOrderError`` if it is no longer open,
        ``OrderNotFoundError`` if the venue does not know it."""
        exchange = self.exchange
        try:
            with self._guard(f"cancel order {order_id} on {symbol}"):
                raw = await exchange.cancel_order(order_id, symbol)
        except OrderNotFoundError as exc:  # Binance answers -2011 for filled orders too
            current = await self.get_order_status(order_id, symbol)
            if current.status.is_terminal:
                raise InvalidOrderError(
                    f"cannot cancel order {order_id} ({current.client_order_id}) on {symbol} at "
                    f"{self.name}: it is {current.status.value}",
                    broker_message=exc.broker_message,
                ) from exc
            raise
        raw = await self._complete(raw, symbol)
        result = await self._result(raw, symbol)
        log.info("%s: canceled order %s (%s) on %s", self.name, order_id, result.client_order_id, symbol)
        return result

    async def get_order_status(self, order_id: str, symbol: str) -> OrderResult:
        """The order now, with its fills."""
        return await self._result(await self._fetch_order(order_id, symbol), symbol)

    async def _fetch_order(self, order_id: str, symbol: str) -> Mapping[str, Any]:
        with self._guard(f"fetch order {order_id} on {symbol}"):
            return await self.exchange.fetch_order(order_id, symbol)

    async def _complete(self, raw: Mapping[str, Any], symbol: str) -> Mapping[str, Any]:
        """``raw``, or the order fetched again where the venue's answer is only an
        acknowledgement (profile ``acks_only``: Bybit answers create and cancel with ids)."""
        if not self.profile.acks_only:
            return raw
        return await self._fetch_order(str(raw["id"]), symbol)

    async def get_order_by_client_id(self, client_order_id: str, symbol: str) -> OrderResult | None:
        """The order bearing ``client_order_id`` on ``symbol``, or None if the venue has
        never seen it."""
        lookup = {self.profile.lookup_param: client_order_id}
        try:
            with self._guard(f"look up order {client_order_id} on {symbol}"):
                if self.profile.lookup_in_open_orders:  # the venue finds any recent order this way
                    found = await self.exchange.fetch_open_orders(symbol, None, None, lookup)
                    raw = found[0] if found else None
                else:
                    raw = await self.exchange.fetch_order(None, symbol, lookup)
        except OrderNotFoundError:
            return None
        return None if raw is None else await self._result(raw, symbol)

    # ------------------------------------------------------------------ capabilities (not in BaseBroker)

    async def get_last_prices(self, symbols: Sequence[str]) -> dict[str, float]:
        """The last traded price of each of ``symbols`` the venue lists (reference prices
        for a live run); symbols it does not list, or without a last price, are left out."""
        markets = self.exchange.markets or {}
        prices: dict[str, float] = {}
        for symbol in dict.fromkeys(symbols):
            if symbol not in markets:
                continue
            with self._guard(f"fetch ticker {symbol}"):
                ticker = await self.exchange.fetch_ticker(symbol)
            last = ticker.get("last") or ticker.get("close")
            if last:
                prices[symbol] = float(last)
        return prices

    def market_limits(self, symbols: Sequence[str]) -> dict[str, MarketLimits]:
        """The trading rules of each of ``symbols`` the venue lists, from the markets
        loaded at ``connect`` (no request): steps, minimum / maximum amount, minimum
        notional."""
        markets = self.exchange.markets or {}
        return {symbol: _limits(symbol, markets[symbol], self.exchange.precisionMode)
                for symbol in dict.fromkeys(symbols) if symbol in markets}

    async def get_open_orders(self, symbol: str | None = None) -> list[tuple[Order, OrderResult]]:
        """Every order open at the venue (on ``symbol``, or on all symbols), each as the
        order it is (symbol, side, type, quantity, prices, client id) and its state."""
        exchange = self.exchange
        if symbol is None:
            exchange.options["warnOnFetchOpenOrdersWithoutSymbol"] = False
        with self._guard(f"fetch open orders{f' on {symbol}' if symbol else ''}"):
            raws = await exchange.fetch_open_orders(symbol)
        out = []
        for raw in raws:
            result = await self._result(raw, str(raw["symbol"]))
            out.append((_as_order(raw, result.client_order_id), result))
        return out

    # ------------------------------------------------------------------ helpers

    async def _contract_positions(self) -> list[Position]:
        """The venue's open positions: quantity in base units, negative when short."""
        with self._guard("fetch positions"):
            raws = await self.exchange.fetch_positions()
        out = []
        for raw in raws:
            size = float(raw.get("contracts") or 0.0) * float(raw.get("contractSize") or 1.0)
            if not size:
                continue
            mark = raw.get("markPrice")
            out.append(Position(
                symbol=str(raw["symbol"]),
                quantity=-size if raw.get("side") == "short" else size,
                average_price=float(raw.get("entryPrice") or 0.0),
                market_price=float(mark) if mark else None,
                realized_pnl=float(raw.get("realizedPnl") or 0.0),
            ))
        return sorted(out, key=lambda p: p.symbol)

    async def _balances(self) -> tuple[dict[str, float], dict[str, float]]:
        with self._guard("fetch balance"):
            balance = await self.exchange.fetch_balance()
        totals = {c: float(v) for c, v in (balance.get("total") or {}).items() if v}
        locked = {c: float(v) for c, v in (balance.get("used") or {}).items() if v}
        return totals, locked

    async def _prices(self, assets: Mapping[str, float]) -> dict[str, float]:
        """Last price against the quote currency of each asset that has such a market."""
        markets = self.exchange.markets or {}
        symbols = {f"{a}/{self.quote_currency}": a for a in assets if a != self.quote_currency}
        symbols = {s: a for s, a in symbols.items() if s in markets}
        if not symbols:
            return {}
        with self._guard(f"fetch tickers {', '.join(symbols)}"):
            # one symbol: its own ticker (Binance: weight 2, where the list endpoint costs 80,
            # and ccxt's limiter then holds every account valuation for ~1 s)
            if len(symbols) > 1 and self.exchange.has.get("fetchTickers"):
                tickers = await self.exchange.fetch_tickers(list(symbols))
            else:
                tickers = {s: await self.exchange.fetch_ticker(s) for s in symbols}
        prices = {}
        for symbol, asset in symbols.items():
            ticker = tickers.get(symbol) or {}
            last = ticker.get("last") or ticker.get("close")
            if last:
                prices[asset] = float(last)
        return prices

    async def _result(self, raw: Mapping[str, Any], symbol: str, order: Order | None = None) -> OrderResult:
        """A ccxt order as our ``OrderResult`` (fetching its trades if it filled and the
        answer does not carry them)."""
        info = raw.get("info") or {}
        client_id = info.get(self.profile.lookup_param) or raw.get("clientOrderId")
        if not client_id and order is not None:
            client_id = order.client_order_id
        filled = float(raw.get("filled") or 0.0)
        status = STATUSES.get(str(raw.get("status")), None)
        if status is None:
            status = OrderStatus.PARTIALLY_FILLED if filled > 0 else OrderStatus.NEW
        elif status is OrderStatus.FILLED and filled < float(raw.get("amount") or 0.0) * (1 - 1e-9):
            status = OrderStatus.CANCELED  # ccxt says "closed" for the rest canceled (Bybit PartiallyFilledCanceled)
        fills = await self._fills(raw, symbol, str(client_id or ""), filled) if filled > 0 else ()
        fees = sum(f.fee for f in fills)
        fee_currency = fills[0].fee_currency if fills else None
        if not fills and raw.get("fee"):
            fees = float(raw["fee"].get("cost") or 0.0)
            fee_currency = raw["fee"].get("currency")
        average = raw.get("average")
        if average is None and fills:
            average = sum(f.quantity * f.price for f in fills) / sum(f.quantity for f in fills)
        when = raw.get("lastUpdateTimestamp") or raw.get("lastTradeTimestamp") or raw.get("timestamp")
        return OrderResult(
            order_id=str(raw.get("id")),
            client_order_id=str(client_id or ""),
            status=status,
            executed_quantity=filled,
            executed_price=float(average) if average is not None and filled > 0 else None,
            timestamp=_when(when) or datetime.now(UTC),
            fees=fees,
            fee_currency=fee_currency,
            reason=REASONS.get(status),
            fills=fills,
        )

    async def _fills(self, raw: Mapping[str, Any], symbol: str, client_id: str, filled: float) -> tuple[Fill, ...]:
        trades = list(raw.get("trades") or [])
        if sum(float(t.get("amount") or 0.0) for t in trades) < filled * (1 - 1e-9):
            trades = await self._order_trades(str(raw.get("id")), symbol)
        side = Side(raw.get("side") or "buy")
        fallback = raw.get("lastTradeTimestamp") or raw.get("timestamp")
        return tuple(
            Fill(
                order_id=str(raw.get("id")),
                client_order_id=client_id,
                symbol=symbol,
                side=side,
                quantity=float(t["amount"]),
                price=float(t["price"]),
                fee=float((t.get("fee") or {}).get("cost") or 0.0),
                fee_currency=(t.get("fee") or {}).get("currency") or self.quote_currency,
                timestamp=_when(t.get("timestamp") or fallback) or datetime.now(UTC),
                is_maker=t.get("takerOrMaker") == "maker",
                trade_id=str(t["id"]) if t.get("id") is not None else None,
            )
            for t in trades
        )

    async def _order_trades(self, order_id: str, symbol: str) -> list[dict[str, Any]]:
        with self._guard(f"fetch trades of order {order_id} on {symbol}"):
            if self.exchange.has.get("fetchOrderTrades"):
                try:
                    return list(await self.exchange.fetch_order_trades(order_id, symbol))
                except ccxt_async.NotSupported:  # Binance: spot markets only
                    pass
            trades = await self.exchange.fetch_my_trades(symbol)
        return [t for t in trades if str(t.get("order")) == order_id]
