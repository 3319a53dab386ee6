"""The matching engine for one USDT-margined perpetual futures account (Binance USDⓈ-M,
Bybit linear): the spot ``Engine``'s markets, orders and matching, with positions and
margin instead of holdings.

Symbols are the engine's unified spot-style names (``BTC/USDT``; ccxt calls the market
``BTC/USDT:USDT``); one contract is one unit of the base. Money is the quote currency
(the settlement asset, USDT) only.

Positions
    One position per symbol in one-way mode: a signed quantity (> 0 long, < 0 short),
    its average entry price and the initial margin locked for it. A buy first closes a
    short, then opens / grows a long (a sell the same way round). Closing realises
    ``closed x (price - entry)`` (sign by side) into the wallet and frees the closed
    share of the position's margin.

Margin
    Leverage is per symbol (``set_leverage``; default ``default_leverage``, at most
    ``max_leverage``). Opening ``q`` at price ``p`` locks ``q x p / leverage`` of the quote
    currency. An order reserves, at placement, the margin of the part that would open
    (at its limit, else the current price) plus the fee of the whole quantity; the
    reservation is released as it fills, the actual margin and fee then taken. An order
    the free balance cannot reserve for is refused: ``-2019 Margin is insufficient.``
    Unrealised profit is not lent as margin, and there are no liquidations or funding
    payments: the price path never moves far enough within a test for them to matter.

Reduce-only
    A reduce-only order must be on the opposite side of the position and no larger than
    it; otherwise it is refused at placement (``-2022 ReduceOnly Order is rejected.``).
    The minimum notional does not apply to it (below it, any other order is refused:
    ``-4164 Order's notional must be no smaller than ...``), so a small rest can close.
    It reserves only its fee, and at each fill it is cut to what is left of the position
    (a market order then expires the rest).

The balances (``balances()``): free = the available balance, locked = the margins of
open orders and of positions; free + locked is the wallet balance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from typing import Any

import pandas as pd

from brokers.base.types import Side
from brokers.emulator.engine import (
    EIGHT,
    ZERO,
    EmOrder,
    Engine,
    MarketSpec,
    VenueError,
    bad_request,
    floor_to,
)

DEFAULT_LEVERAGE = 20
MAX_LEVERAGE = 125
MARGIN_INSUFFICIENT = "Margin is insufficient."
REDUCE_ONLY_REJECTED = "ReduceOnly Order is rejected."


@dataclass
class EmPosition:
    """One symbol's position (one-way mode)."""

    symbol: str
    qty: Decimal = ZERO  # signed: > 0 long, < 0 short
    entry: Decimal = ZERO  # average entry price (0 when flat)
    margin: Decimal = ZERO  # initial margin locked for it, in the quote currency
    realized: Decimal = ZERO  # realised profit so far
    updated_ms: int = 0

    @property
    def side(self) -> str:
        return "long" if self.qty > 0 else "short" if self.qty < 0 else "flat"


class FuturesEngine(Engine):
    """One USDT-margined futures account (see the module docstring). Fees are charged in
    the quote currency; ``commission`` is not a choice here."""

    market_type = "swap"

    def __init__(
        self,
        bars: Mapping[str, pd.DataFrame],
        balances: Mapping[str, float | str | Decimal],
        *,
        default_leverage: int = DEFAULT_LEVERAGE,
        max_leverage: int = MAX_LEVERAGE,
        **settings: Any,
    ) -> None:
        settings["commission"] = "quote"
        super().__init__(bars, balances, **settings)
        if not 1 <= default_leverage <= max_leverage:
            raise ValueError(f"default_leverage must be 1..{max_leverage}, got {default_leverage}")
        quotes = {spec.quote for spec in self.specs.values()}
        if len(quotes) != 1:
            raise ValueError(f"a futures account settles in one currency, got markets quoted in {sorted(quotes)}")
        self.settle_asset = quotes.pop()
        self.default_leverage = default_leverage
        self.max_leverage = max_leverage
        self._leverage: dict[str, int] = {}
        self.positions: dict[str, EmPosition] = {symbol: EmPosition(symbol) for symbol in self.specs}

    # ------------------------------------------------------------------ account

    def leverage(self, symbol: str) -> int:
        with self.lock:
            self.spec(symbol)
            return self._leverage.get(symbol, self.default_leverage)

    def set_leverage(self, symbol: str, leverage: int) -> int:
        """The symbol's leverage from now on (margins already locked stay as they are)."""
        with self.lock:
            self.spec(symbol)
            if not 1 <= leverage <= self.max_leverage:
                raise bad_request(-4028, f"Leverage {leverage} is not valid")
            self._leverage[symbol] = leverage
            return leverage

    def position(self, symbol: str) -> EmPosition:
        with self.lock:
            self.spec(symbol)
            return self.positions[symbol]

    def unrealized(self, symbol: str) -> Decimal:
        """The position's profit at the current price."""
        with self.lock:
            pos = self.positions[symbol]
            return (pos.qty * (self.price(symbol) - pos.entry)).quantize(EIGHT) if pos.qty else ZERO

    def order_margin(self, symbol: str | None = None) -> Decimal:
        """What open orders reserve (on ``symbol``, or on all)."""
        with self.lock:
            return sum((o.reserved for o in self.open_orders(symbol)), ZERO)

    def position_margin(self, symbol: str | None = None) -> Decimal:
        with self.lock:
            return sum((p.margin for s, p in self.positions.items() if symbol in (None, s)), ZERO)

    def wallet(self) -> Decimal:
        """The wallet balance: deposits + realised profit - fees."""
        with self.lock:
            return self.free(self.settle_asset) + self.locked(self.settle_asset)

    # ------------------------------------------------------------------ placement rules

    def _closable(self, symbol: str, side: Side) -> Decimal:
        """How much of the position an order on ``side`` would close."""
        held = self.positions[symbol].qty
        if side is Side.BUY:
            return -held if held < 0 else ZERO
        return held if held > 0 else ZERO

    def _check_reduce_only(self, symbol: str, side: Side, quantity: Decimal, reduce_only: bool) -> None:
        if reduce_only and quantity > self._closable(symbol, side):
            raise bad_request(-2022, REDUCE_ONLY_REJECTED)

    def _insufficient(self) -> VenueError:
        return bad_request(-2019, MARGIN_INSUFFICIENT)

    reduce_only_skips_notional = True

    def _below_min_notional(self, spec: MarketSpec) -> VenueError:
        return bad_request(-4164, f"Order's notional must be no smaller than {spec.min_notional.normalize()} "
                                  "(unless you choose reduce only).")

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
        """The margin of the part that would open, plus the fee of all of it."""
        ref = price if price is not None else stop_price if stop_price is not None else current
        opening = ZERO if reduce_only else max(ZERO, quantity - self._closable(spec.symbol, side))
        fee = max(self.maker_fee, self.taker_fee)
        margin = opening * ref / self.leverage(spec.symbol)
        return spec.quote, (margin + quantity * ref * fee).quantize(EIGHT, ROUND_UP)

    # ------------------------------------------------------------------ fills

    def _affordable(self, order: EmOrder, qty: Decimal, price: Decimal, is_maker: bool) -> Decimal:
        """``qty`` cut to what is left to close (reduce-only), or to what the order's
        reservation plus the free balance can margin (closing costs only its fee)."""
        if qty <= 0:
            return qty
        closable = self._closable(order.symbol, order.side)
        if order.reduce_only:
            return min(qty, closable)
        spec = self.specs[order.symbol]
        fee_unit = price * self._fee_rate(is_maker)
        open_unit = price / self.leverage(order.symbol) + fee_unit
        closing = min(qty, closable)

        def cost(q: Decimal) -> Decimal:
            c = min(q, closable)
            return (c * fee_unit + (q - c) * open_unit).quantize(EIGHT, ROUND_UP)

        budget = order.reserved + self._free.get(spec.quote, ZERO)
        if cost(qty) <= budget:
            return qty
        spare = budget - closing * fee_unit
        q = closing + (floor_to(spare / open_unit, spec.step_size) if spare > 0 else ZERO)
        while q > closing and cost(q) > budget:
            q -= spec.step_size
        return max(min(q, qty), ZERO)

    def _release_share(self, order: EmOrder, qty: Decimal) -> Decimal:
        if qty >= order.remaining:
            return order.reserved
        return (order.reserved * qty / order.remaining).quantize(EIGHT, ROUND_DOWN)

    def _settle(self, order: EmOrder, qty: Decimal, price: Decimal, is_maker: bool
                ) -> tuple[Decimal, Decimal, str, Decimal]:
        quote = self.specs[order.symbol].quote
        release = self._release_share(order, qty)
        order.reserved -= release
        self._move(quote, release, to_locked=False)
        pos = self.positions[order.symbol]
        sign = 1 if order.side is Side.BUY else -1
        closing = min(qty, self._closable(order.symbol, order.side))
        opening = qty - closing
        realized = ZERO
        if closing > 0:
            held = abs(pos.qty)
            freed = pos.margin if closing >= held else (pos.margin * closing / held).quantize(EIGHT, ROUND_DOWN)
            pos.margin -= freed
            self._move(quote, freed, to_locked=False)
            realized = (closing * (price - pos.entry) * -sign).quantize(EIGHT)
            pos.qty += sign * closing
            if pos.qty == 0:
                pos.entry = ZERO
        if opening > 0:
            held = abs(pos.qty)
            pos.entry = ((held * pos.entry + opening * price) / (held + opening)).quantize(EIGHT)
            pos.qty += sign * opening
            margin = (opening * price / self.leverage(order.symbol)).quantize(EIGHT, ROUND_UP)
            self._move(quote, margin, to_locked=True)
            pos.margin += margin
        notional = (qty * price).quantize(EIGHT)
        fee = (notional * self._fee_rate(is_maker)).quantize(EIGHT)
        self._free[quote] += realized - fee
        pos.realized += realized
        pos.updated_ms = self.now_ms()
        return notional, fee, quote, realized
