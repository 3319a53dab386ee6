"""The exchange emulator's matching engine: balances, orders and trades of one spot
account, matched against a price path replayed from OHLCV bars.

Venue-neutral: symbols are unified (``ETH/BTC``), statuses and order kinds are the
FIX-like names every spot venue uses (``NEW``, ``PARTIALLY_FILLED``, ``FILLED``,
``CANCELED``, ``EXPIRED``; ``MARKET``, ``LIMIT``, ``STOP_LOSS``, ``STOP_LOSS_LIMIT``).
The HTTP dialect (``app.py``) turns requests into these calls and the results into the
venue's JSON. Money is ``Decimal`` (quantities and prices on the venue's grid), so the
balances an HTTP client reads back are exact.

The market
    Every symbol's bars advance together, one index for all. The *current price* of a
    symbol is the close of the current bar, unless ``set_price`` overrode it (until the
    next ``advance``). Each bar offers ``liquidity_fraction x volume`` base units to
    our orders (``None``: unlimited); what one fill takes, the next cannot.

Matching (the paper broker's fill rules, ``brokers.paper.fills``, applied per bar)
    * at placement, against the current price seen as a flat bar: a market order fills
      at the current price, a limit that crosses it fills at the current price (taker);
    * ``advance`` evaluates each resting order against the new bar (o, h, l, c): a limit
      buy fills at the open if the bar opens at or below it (taker), else at the limit
      if the low reaches it (maker); stops trigger on the high / low;
    * ``set_price`` evaluates resting orders against the new price (a flat bar).
    An order larger than the bar's remaining liquidity fills partly: a GTC limit rests
    for the rest (``PARTIALLY_FILLED``), a market or IOC order expires the rest, a FOK
    order fills completely or expires untouched.

Funds
    A buy reserves ``quantity x (limit or current price) x (1 + fee)`` of the quote
    currency, a sell reserves the quantity of the base; each fill releases its share of
    the reservation and pays the actual amount; a terminal order releases the rest.
    Fees are charged in the quote currency (``commission="quote"``, as the paper broker
    does) or, like Binance's default, in the currency received (``"received"``).

Faults and the request log
    ``faults`` is a dict the HTTP layer checks on every request (its keys:
    ``brokers.emulator.faults``); ``requests`` is the log of every request the HTTP
    layer saw, ``(time.monotonic(), method, path)``. The engine only stores both, under
    ``lock``.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal
from typing import Any

import pandas as pd

from brokers.base.types import OrderType, Side
from brokers.paper.fills import Bar, evaluate
from brokers.paper.market import BarSeries

EIGHT = Decimal("0.00000001")
ZERO = Decimal(0)
OPEN_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED"})
KINDS = {  # order kind -> the paper fill rule it starts as
    "MARKET": OrderType.MARKET,
    "LIMIT": OrderType.LIMIT,
    "STOP_LOSS": OrderType.STOP,
    "STOP_LOSS_LIMIT": OrderType.STOP_LIMIT,
}
TIME_IN_FORCE = frozenset({"GTC", "IOC", "FOK"})


def dec(x: float | int | str | Decimal) -> Decimal:
    """A number as a Decimal (floats through their shortest repr, so 0.1 stays 0.1)."""
    if isinstance(x, Decimal):
        return x
    if isinstance(x, float):
        if not math.isfinite(x):
            raise ValueError(f"not a finite number: {x!r}")
        return Decimal(repr(x))
    return Decimal(x)


def floor_to(x: Decimal, step: Decimal) -> Decimal:
    """``x`` rounded down to a multiple of ``step``."""
    return (x / step).to_integral_value(ROUND_DOWN) * step


def round_to(x: Decimal, step: Decimal) -> Decimal:
    """``x`` rounded (half to even) to a multiple of ``step``."""
    return (x / step).to_integral_value(ROUND_HALF_EVEN) * step


class VenueError(Exception):
    """A refusal the venue answers with: HTTP status, venue error code and message."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(f"{status} {code} {msg}")
        self.status = status
        self.code = code
        self.msg = msg


def bad_request(code: int, msg: str) -> VenueError:
    return VenueError(400, code, msg)


INSUFFICIENT = "Account has insufficient balance for requested action."


@dataclass(frozen=True)
class MarketSpec:
    """One spot market's trading rules (the venue's PRICE_FILTER, LOT_SIZE, NOTIONAL)."""

    symbol: str  # unified, BASE/QUOTE
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal = Decimal(9_000_000)
    min_price: Decimal | None = None  # default: the tick size
    max_price: Decimal = Decimal(1_000_000)
    min_notional: Decimal = ZERO

    def __post_init__(self) -> None:
        base, slash, quote = self.symbol.partition("/")
        if not (base and slash and quote):
            raise ValueError(f"symbol must be BASE/QUOTE, got {self.symbol!r}")
        for name in ("tick_size", "step_size", "min_qty", "max_qty", "max_price", "min_notional"):
            object.__setattr__(self, name, dec(getattr(self, name)))
        if self.min_price is None:
            object.__setattr__(self, "min_price", self.tick_size)
        else:
            object.__setattr__(self, "min_price", dec(self.min_price))

    @property
    def base(self) -> str:
        return self.symbol.split("/")[0]

    @property
    def quote(self) -> str:
        return self.symbol.split("/")[1]

    @property
    def venue_id(self) -> str:
        """The venue's name for the market: ``ETH/BTC`` -> ``ETHBTC``."""
        return self.base + self.quote

    @classmethod
    def default(cls, symbol: str, reference_price: float) -> MarketSpec:
        """Rules scaled to a price level: ~7 significant digits of price, a lot worth
        ~1/1000 of a quote unit, no minimum notional."""
        magnitude = math.floor(math.log10(reference_price)) if reference_price > 0 else 0
        tick = Decimal(1).scaleb(max(-8, min(0, magnitude - 7)))
        step = Decimal(1).scaleb(max(-8, min(0, -magnitude - 3)))
        return cls(symbol=symbol, tick_size=tick, step_size=step, min_qty=step)


@dataclass(frozen=True)
class Trade:
    """One execution of one of our orders."""

    trade_id: int
    order_id: int
    symbol: str
    side: Side
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    time_ms: int
    is_maker: bool
    realized_pnl: Decimal = ZERO  # futures: the profit this trade realised closing a position


@dataclass(eq=False)
class EmOrder:
    """The engine's record of one order (mutable until terminal)."""

    order_id: int
    client_order_id: str
    symbol: str
    side: Side
    kind: str
    tif: str
    quantity: Decimal
    price: Decimal | None
    stop_price: Decimal | None
    created_ms: int
    reserve_asset: str
    reserved: Decimal
    status: str = "NEW"
    executed: Decimal = ZERO
    quote_executed: Decimal = ZERO
    triggered: bool = False
    updated_ms: int = 0
    reduce_only: bool = False  # futures: may only reduce the position
    trades: list[Trade] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.executed

    @property
    def rule(self) -> OrderType:
        """The paper fill rule that applies now: a triggered stop is a market order, a
        triggered stop-limit a limit order."""
        if self.triggered:
            return OrderType.LIMIT if self.kind == "STOP_LOSS_LIMIT" else OrderType.MARKET
        return KINDS[self.kind]

    @property
    def is_working(self) -> bool:
        """False for a stop that has not triggered yet (the venue's ``isWorking``)."""
        return self.kind not in ("STOP_LOSS", "STOP_LOSS_LIMIT") or self.triggered


class Engine:
    """One spot account at an emulated venue. Thread-safe: every public method holds
    ``lock`` (the HTTP server runs in its own thread; tests call in from theirs)."""

    def __init__(
        self,
        bars: Mapping[str, pd.DataFrame],
        balances: Mapping[str, float | str | Decimal],
        *,
        specs: Iterable[MarketSpec] = (),
        maker_fee: float = 0.001,
        taker_fee: float = 0.001,
        liquidity_fraction: float | None = 1.0,
        commission: str = "quote",
        now_ms: Callable[[], int] | None = None,
    ) -> None:
        if not bars:
            raise ValueError("the emulator needs bars for at least one symbol")
        if liquidity_fraction is not None and not liquidity_fraction > 0:
            raise ValueError(f"liquidity_fraction must be > 0 or None, got {liquidity_fraction}")
        if commission not in ("quote", "received"):
            raise ValueError(f"commission must be 'quote' or 'received', got {commission!r}")
        self.lock = threading.RLock()
        self.faults: dict[str, Any] = {}
        self.requests: list[tuple[float, str, str]] = []
        self.maker_fee = dec(maker_fee)
        self.taker_fee = dec(taker_fee)
        self.liquidity_fraction = liquidity_fraction
        self.commission = commission
        self._now_ms = now_ms or (lambda: time.time_ns() // 1_000_000)
        self.series = {symbol: BarSeries.from_frame(frame) for symbol, frame in bars.items()}
        lengths = {len(s) for s in self.series.values()}
        if len(lengths) != 1 or 0 in lengths:
            raise ValueError(f"every symbol needs the same, non-zero number of bars, got {sorted(lengths)}")
        given = {spec.symbol: spec for spec in specs}
        self.specs = {
            symbol: given.get(symbol) or MarketSpec.default(symbol, float(series.close.max()))
            for symbol, series in self.series.items()
        }
        self.index = 0
        self._override: dict[str, Decimal] = {}
        self._used: dict[tuple[str, int], Decimal] = {}
        self._free: dict[str, Decimal] = {}
        self._locked: dict[str, Decimal] = {}
        for asset, amount in balances.items():
            self._free[asset] = dec(amount)
        self.orders: dict[int, EmOrder] = {}
        self._by_client_id: dict[tuple[str, str], EmOrder] = {}
        self.trades: list[Trade] = []
        self._order_ids = itertools.count(1001)
        self._trade_ids = itertools.count(5001)

    # ------------------------------------------------------------------ market

    def now_ms(self) -> int:
        return self._now_ms()

    def spec(self, symbol: str) -> MarketSpec:
        spec = self.specs.get(symbol)
        if spec is None:
            raise bad_request(-1121, "Invalid symbol.")
        return spec

    def price(self, symbol: str) -> Decimal:
        """The current price: the current bar's close, or the override."""
        with self.lock:
            override = self._override.get(symbol)
            if override is not None:
                return override
            return dec(float(self.series[symbol].close[self.index]))

    def bar(self, symbol: str, index: int | None = None) -> Bar:
        return self.series[symbol].bar(self.index if index is None else index)

    def bar_time_ms(self, symbol: str, index: int) -> int:
        return int(self.series[symbol].ts[index]) // 1_000_000

    @property
    def bar_count(self) -> int:
        return len(next(iter(self.series.values())))

    def advance(self, bars: int = 1) -> int:
        """Move the market ``bars`` bars forward (not past the last), matching resting
        orders against each new bar. Returns the new bar index."""
        with self.lock:
            for _ in range(max(0, bars)):
                if self.index + 1 >= self.bar_count:
                    break
                self.index += 1
                self._override.clear()
                for symbol in self.series:
                    self._match_resting(symbol, self.bar(symbol))
            return self.index

    def set_price(self, symbol: str, price: float | str | Decimal) -> Decimal:
        """A new current price for ``symbol`` (until the next ``advance``); resting orders
        are matched against it."""
        with self.lock:
            spec = self.spec(symbol)
            value = round_to(dec(price), spec.tick_size)
            if value <= 0:
                raise bad_request(-1013, "Filter failure: PRICE_FILTER")
            self._override[symbol] = value
            self._match_resting(symbol, Bar.flat(float(value)))
            return value

    def _available(self, symbol: str) -> Decimal | None:
        """What the current bar still offers (base units), None if unlimited."""
        if self.liquidity_fraction is None:
            return None
        volume = float(self.series[symbol].volume[self.index])
        offered = dec(volume * self.liquidity_fraction)
        return max(ZERO, offered - self._used.get((symbol, self.index), ZERO))

    # ------------------------------------------------------------------ account

    def balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        """Every asset ever held: (free, locked)."""
        with self.lock:
            assets = sorted(set(self._free) | set(self._locked))
            return {a: (self._free.get(a, ZERO), self._locked.get(a, ZERO)) for a in assets}

    def free(self, asset: str) -> Decimal:
        with self.lock:
            return self._free.get(asset, ZERO)

    def locked(self, asset: str) -> Decimal:
        with self.lock:
            return self._locked.get(asset, ZERO)

    def deposit(self, asset: str, amount: float | str | Decimal) -> None:
        with self.lock:
            self._free[asset] = self._free.get(asset, ZERO) + dec(amount)

    def _move(self, asset: str, amount: Decimal, *, to_locked: bool) -> None:
        src, dst = (self._free, self._locked) if to_locked else (self._locked, self._free)
        src[asset] = src.get(asset, ZERO) - amount
        dst[asset] = dst.get(asset, ZERO) + amount

    # ------------------------------------------------------------------ orders

    def place(
        self,
        symbol: str,
        side: Side,
        kind: str,
        quantity: Decimal,
        *,
        client_order_id: str,
        price: Decimal | None = None,
        stop_price: Decimal | None = None,
        tif: str = "GTC",
        reduce_only: bool = False,
    ) -> EmOrder:
        """Validate, reserve funds, record and match one order. Raises ``VenueError``
        (nothing recorded) when the venue refuses it."""
        with self.lock:
            spec = self.spec(symbol)
            current = self.price(symbol)
            self._validate(spec, side, kind, quantity, price, stop_price, tif, current, reduce_only=reduce_only)
            self._check_reduce_only(symbol, side, quantity, reduce_only)
            if (symbol, client_order_id) in self._by_client_id and self._by_client_id[
                (symbol, client_order_id)
            ].is_open:
                raise bad_request(-2010, "Duplicate order sent.")
            asset, reserve = self._reservation(spec, side, kind, quantity, price, stop_price, current,
                                               reduce_only=reduce_only)
            if self._free.get(asset, ZERO) < reserve:
                raise self._insufficient()
            now = self.now_ms()
            order = EmOrder(
                order_id=next(self._order_ids),
                client_order_id=client_order_id,
                symbol=symbol,
                side=side,
                kind=kind,
                tif=tif if kind in ("LIMIT", "STOP_LOSS_LIMIT") else "GTC",
                quantity=quantity,
                price=price,
                stop_price=stop_price,
                created_ms=now,
                updated_ms=now,
                reserve_asset=asset,
                reserved=reserve,
                reduce_only=reduce_only,
            )
            self._move(asset, reserve, to_locked=True)
            self.orders[order.order_id] = order
            self._by_client_id[(symbol, client_order_id)] = order
            self._match_at_placement(order, current)
            return order

    def _validate(
        self,
        spec: MarketSpec,
        side: Side,
        kind: str,
        quantity: Decimal,
        price: Decimal | None,
        stop_price: Decimal | None,
        tif: str,
        current: Decimal,
        *,
        reduce_only: bool = False,
    ) -> None:
        if kind not in KINDS:
            raise bad_request(-1116, "Invalid orderType.")
        if tif not in TIME_IN_FORCE:
            raise bad_request(-1115, "Invalid timeInForce.")
        if kind in ("LIMIT", "STOP_LOSS_LIMIT") and price is None:
            raise bad_request(-1102, "Mandatory parameter 'price' was not sent, was empty/null, or malformed.")
        if kind in ("STOP_LOSS", "STOP_LOSS_LIMIT") and stop_price is None:
            raise bad_request(
                -1102, "Mandatory parameter 'stopPrice' was not sent, was empty/null, or malformed."
            )
        floor = spec.min_price or spec.tick_size
        for p in (price, stop_price):
            if p is not None and (p < floor or p > spec.max_price or (p - floor) % spec.tick_size != 0):
                raise bad_request(-1013, "Filter failure: PRICE_FILTER")
        if quantity < spec.min_qty or quantity > spec.max_qty or (quantity - spec.min_qty) % spec.step_size != 0:
            raise bad_request(-1013, "Filter failure: LOT_SIZE")
        reference = price if price is not None and kind in ("LIMIT", "STOP_LOSS_LIMIT") else current
        if quantity * reference < spec.min_notional and not (reduce_only and self.reduce_only_skips_notional):
            raise self._below_min_notional(spec)
        if stop_price is not None:
            immediate = current >= stop_price if side is Side.BUY else current <= stop_price
            if immediate:
                raise bad_request(-2010, "Stop price would trigger immediately.")

    def _reservation(
        self,
        spec: MarketSpec,
        side: Side,
        kind: str,
        quantity: Decimal,
        price: Decimal | None,
        stop_price: Decimal | None,
        current: Decimal,
        *,
        reduce_only: bool = False,
    ) -> tuple[str, Decimal]:
        """What an order locks: the base it sells, or what the buy may cost (at its limit,
        else at the current price or the stop, plus the fee when paid in quote)."""
        if side is Side.SELL:
            return spec.base, quantity
        if price is not None:
            ref = price
        elif stop_price is not None:
            ref = stop_price
        else:
            ref = current
        fee = max(self.maker_fee, self.taker_fee) if self.commission == "quote" else ZERO
        return spec.quote, (quantity * ref * (1 + fee)).quantize(EIGHT)

    def _check_reduce_only(self, symbol: str, side: Side, quantity: Decimal, reduce_only: bool) -> None:
        """A spot market has no positions to reduce (``FuturesEngine`` checks them)."""
        if reduce_only:
            raise bad_request(-1106, "Parameter 'reduceOnly' sent when not required.")

    reduce_only_skips_notional = False  # futures venues let a small reduce-only order close

    def _below_min_notional(self, spec: MarketSpec) -> VenueError:
        return bad_request(-1013, "Filter failure: NOTIONAL")

    def _insufficient(self) -> VenueError:
        """The refusal of an order the account cannot pay for."""
        return bad_request(-2010, INSUFFICIENT)

    def find(self, symbol: str, *, order_id: int | None = None, client_order_id: str | None = None) -> EmOrder:
        """The order by venue id or (latest) client id; ``VenueError`` -2013 if unknown."""
        with self.lock:
            self.spec(symbol)
            order: EmOrder | None = None
            if order_id is not None:
                order = self.orders.get(order_id)
            elif client_order_id is not None:
                order = self._by_client_id.get((symbol, client_order_id))
            else:
                raise bad_request(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
            if order is None or order.symbol != symbol:
                raise bad_request(-2013, "Order does not exist.")
            return order

    def cancel(self, symbol: str, *, order_id: int | None = None, client_order_id: str | None = None) -> EmOrder:
        """Cancel an open order; ``VenueError`` -2011 if unknown or no longer open."""
        with self.lock:
            try:
                order = self.find(symbol, order_id=order_id, client_order_id=client_order_id)
            except VenueError as exc:
                if exc.code == -2013:
                    raise bad_request(-2011, "Unknown order sent.") from None
                raise
            if not order.is_open:
                raise bad_request(-2011, "Unknown order sent.")
            self._finish(order, "CANCELED")
            return order

    def open_orders(self, symbol: str | None = None) -> list[EmOrder]:
        with self.lock:
            return [o for o in self.orders.values() if o.is_open and (symbol is None or o.symbol == symbol)]

    def my_trades(self, symbol: str, *, order_id: int | None = None) -> list[Trade]:
        with self.lock:
            self.spec(symbol)
            return [t for t in self.trades if t.symbol == symbol and (order_id is None or t.order_id == order_id)]

    # ------------------------------------------------------------------ matching

    def _match_at_placement(self, order: EmOrder, current: Decimal) -> None:
        self._execute(order, Bar.flat(float(current)))

    def _match_resting(self, symbol: str, bar: Bar) -> None:
        for order in sorted(self.open_orders(symbol), key=lambda o: o.order_id):
            self._execute(order, bar)

    def _execute(self, order: EmOrder, bar: Bar) -> None:
        """Match ``order`` on one bar; a working market / IOC / FOK order then expires
        what did not fill (a stop is working once triggered)."""
        self._match(order, bar)
        one_shot = order.rule is OrderType.MARKET or order.tif in ("IOC", "FOK")
        if order.is_open and order.is_working and one_shot:
            self._finish(order, "EXPIRED")

    def _match(self, order: EmOrder, bar: Bar) -> None:
        """Apply the fill rule of ``order`` to one bar, within the bar's liquidity and
        the account's funds (FOK: all or nothing)."""
        evaluation = evaluate(order.rule, order.side, _f(order.price), _f(order.stop_price), bar, 0.0)
        if evaluation.triggered:
            order.triggered = True
        quote = evaluation.quote
        if quote is None:
            return
        spec = self.specs[order.symbol]
        qty = order.remaining
        available = self._available(order.symbol)
        if available is not None:
            qty = min(qty, floor_to(available, spec.step_size))
        price = round_to(dec(quote.price), spec.tick_size)
        qty = self._affordable(order, qty, price, quote.is_maker)
        if order.tif == "FOK" and qty < order.remaining:
            return
        if qty > 0:
            self._fill(order, qty, price, quote.is_maker)

    def _affordable(self, order: EmOrder, qty: Decimal, price: Decimal, is_maker: bool) -> Decimal:
        """``qty``, cut to what the order's reservation plus the free quote can pay (a
        stop-market buy may fill above its stop)."""
        if order.side is Side.SELL or qty <= 0:
            return qty
        spec = self.specs[order.symbol]
        budget = order.reserved + self._free.get(spec.quote, ZERO)
        unit = price * (1 + (self._fee_rate(is_maker) if self.commission == "quote" else ZERO))
        if (qty * unit).quantize(EIGHT) <= budget:
            return qty
        qty = floor_to(budget / unit, spec.step_size)
        while qty > 0 and (qty * unit).quantize(EIGHT) > budget:
            qty -= spec.step_size
        return max(qty, ZERO)

    def _release_share(self, order: EmOrder, qty: Decimal) -> Decimal:
        """The part of the order's reservation that ``qty`` of its remainder frees."""
        if qty >= order.remaining:
            return order.reserved
        if order.side is Side.SELL:
            return qty
        return (order.reserved * qty / order.remaining).quantize(EIGHT, ROUND_DOWN)

    def _fee_rate(self, is_maker: bool) -> Decimal:
        return self.maker_fee if is_maker else self.taker_fee

    def _fill(self, order: EmOrder, qty: Decimal, price: Decimal, is_maker: bool) -> None:
        notional, fee, fee_asset, realized = self._settle(order, qty, price, is_maker)
        deficit = -self._free[order.reserve_asset]
        if deficit > 0:  # paid beyond its share: take it from the order's reservation
            take = min(deficit, order.reserved)
            order.reserved -= take
            self._move(order.reserve_asset, take, to_locked=False)
        if self.liquidity_fraction is not None:
            key = (order.symbol, self.index)
            self._used[key] = self._used.get(key, ZERO) + qty
        now = self.now_ms()
        trade = Trade(
            trade_id=next(self._trade_ids),
            order_id=order.order_id,
            symbol=order.symbol,
            side=order.side,
            price=price,
            qty=qty,
            quote_qty=notional,
            commission=fee,
            commission_asset=fee_asset,
            time_ms=now,
            is_maker=is_maker,
            realized_pnl=realized,
        )
        self.trades.append(trade)
        order.trades.append(trade)
        order.executed += qty
        order.quote_executed += notional
        order.updated_ms = now
        if order.remaining <= 0:
            self._finish(order, "FILLED")
        else:
            order.status = "PARTIALLY_FILLED"

    def _settle(self, order: EmOrder, qty: Decimal, price: Decimal, is_maker: bool
                ) -> tuple[Decimal, Decimal, str, Decimal]:
        """Move the money of one fill: (notional, fee, fee asset, realised profit)."""
        spec = self.specs[order.symbol]
        release = self._release_share(order, qty)
        order.reserved -= release
        self._move(order.reserve_asset, release, to_locked=False)
        notional = (qty * price).quantize(EIGHT)
        rate = self._fee_rate(is_maker)
        if order.side is Side.BUY:
            fee_asset = spec.quote if self.commission == "quote" else spec.base
            fee = ((notional if fee_asset == spec.quote else qty) * rate).quantize(EIGHT)
            self._free[spec.quote] = self._free.get(spec.quote, ZERO) - notional
            self._free[spec.base] = self._free.get(spec.base, ZERO) + qty
        else:
            fee_asset = spec.quote
            fee = (notional * rate).quantize(EIGHT)
            self._free[spec.base] = self._free.get(spec.base, ZERO) - qty
            self._free[spec.quote] = self._free.get(spec.quote, ZERO) + notional
        self._free[fee_asset] -= fee
        return notional, fee, fee_asset, ZERO

    def _finish(self, order: EmOrder, status: str) -> None:
        """A terminal status; the rest of the reservation goes back to free."""
        self._move(order.reserve_asset, order.reserved, to_locked=False)
        order.reserved = ZERO
        order.status = status
        order.updated_ms = self.now_ms()


def _f(x: Decimal | None) -> float | None:
    return None if x is None else float(x)
