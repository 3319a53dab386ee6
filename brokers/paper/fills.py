"""Pure fill rules of the paper broker: how one order fares against one bar.

Prices are plain floats. A bar is (open, high, low, close, volume); in live mode a new
last price is the flat bar ``Bar.flat(price)``. Nothing here knows about cash, time or
order state: the broker applies these rules and does the book-keeping.

    MARKET      reference = open; buy open*(1+bps/1e4), sell open*(1-bps/1e4); taker
    LIMIT buy   open <= L: fill at open (taker); low <= L: fill at L (maker); else none
    LIMIT sell  open >= L: fill at open (taker); high >= L: fill at L (maker); else none
    STOP buy    triggers when high >= S; reference max(S, open), slipped as market; taker
    STOP sell   triggers when low <= S; reference min(S, open), slipped as market; taker
    STOP_LIMIT  triggers as STOP at T; buy: T <= L fills at T (taker), else low <= L
                fills at L (maker), else it rests as a LIMIT at L (sell mirrors)

Options of the advanced simulator (defaults: the rules above):

* ``market_price``, the fill model of market orders: ``next-open`` (the bar's open),
  ``close`` (its close) or ``vwap-bar`` (its typical price (high + low + close) / 3).
  Which bar is the broker's business (see ``broker``).
* ``strict`` (limits trade through): a limit fills only when the price goes through
  it, never on a touch. LIMIT buy: open < L fills at open (taker), else low < L fills
  at L (maker); sell mirrors (open > L, high > L); a triggered STOP_LIMIT likewise
  (T < L at T, else low < L at L).

A quote that a slippage model may move (market and stop fills) says so
(``Quote.slippable``); ``evaluate`` applies ``slippage_bps`` to it, and the broker
passes 0 and applies its own model (``brokers.paper.slippage``) once the fill quantity
is known.
"""

from __future__ import annotations

from dataclasses import dataclass

from brokers.base.types import OrderType, Side

INF = float("inf")
FILL_MODELS = ("next-open", "close", "vwap-bar")


@dataclass(frozen=True)
class Bar:
    """One bar of market data; ``volume`` is infinite for a live price tick."""

    open: float
    high: float
    low: float
    close: float
    volume: float = INF

    @classmethod
    def flat(cls, price: float) -> Bar:
        """A new last price seen as a bar with open = high = low = close = price."""
        return cls(price, price, price, price)


@dataclass(frozen=True)
class Quote:
    """Where an order fills on a bar: ``price`` after slippage, ``reference_price`` before."""

    price: float
    reference_price: float
    is_maker: bool
    slippable: bool = False  # a taker fill at a model price (market, stop): slippage applies


@dataclass(frozen=True)
class Evaluation:
    """The outcome of one bar for one order: a fill quote (or None), and whether a
    stop or stop-limit triggered on this bar."""

    quote: Quote | None
    triggered: bool = False


def slipped(side: Side, price: float, slippage_bps: float) -> float:
    """``price`` moved against the taker by ``slippage_bps`` basis points."""
    factor = slippage_bps / 1e4
    return price * (1 + factor) if side is Side.BUY else price * (1 - factor)


def model_price(bar: Bar, fill_model: str = "next-open") -> float:
    """Where a market order fills on ``bar`` before slippage, per fill model."""
    if fill_model == "next-open":
        return bar.open
    if fill_model == "close":
        return bar.close
    if fill_model == "vwap-bar":
        return (bar.high + bar.low + bar.close) / 3
    raise ValueError(f"unknown fill model {fill_model!r} (expected one of {', '.join(FILL_MODELS)})")


def market_quote(side: Side, bar: Bar, slippage_bps: float, fill_model: str = "next-open") -> Quote:
    """A market order fills at the bar's model price (the open by default), with
    slippage, as taker."""
    reference = model_price(bar, fill_model)
    return Quote(slipped(side, reference, slippage_bps), reference, is_maker=False, slippable=True)


def _reaches(price: float, limit: float, strict: bool) -> bool:
    """``price`` at or beyond ``limit`` (for a buy: at or below); strictly when ``strict``."""
    return price < limit if strict else price <= limit


def limit_quote(side: Side, limit: float, bar: Bar, strict: bool = False) -> Quote | None:
    """A limit order: at the open if the bar opens through the limit (taker), at the
    limit if the bar trades through it (maker), else no fill. No slippage. ``strict``:
    a touch (open, low or high equal to the limit) is not enough."""
    if side is Side.BUY:
        if _reaches(bar.open, limit, strict):
            return Quote(bar.open, bar.open, is_maker=False)
        if _reaches(bar.low, limit, strict):
            return Quote(limit, limit, is_maker=True)
        return None
    if _reaches(-bar.open, -limit, strict):
        return Quote(bar.open, bar.open, is_maker=False)
    if _reaches(-bar.high, -limit, strict):
        return Quote(limit, limit, is_maker=True)
    return None


def stop_trigger_price(side: Side, stop: float, bar: Bar) -> float | None:
    """The price at which a stop triggers on ``bar`` (None if it does not): a buy stop
    at max(stop, open) once the high reaches it, a sell stop at min(stop, open) once
    the low reaches it (a gap through the stop triggers at the open)."""
    if side is Side.BUY:
        return max(stop, bar.open) if max(bar.high, bar.open) >= stop else None
    return min(stop, bar.open) if min(bar.low, bar.open) <= stop else None


def stop_quote(side: Side, stop: float, bar: Bar, slippage_bps: float) -> Quote | None:
    """A stop order becomes a market order at its trigger price, with slippage."""
    trigger = stop_trigger_price(side, stop, bar)
    if trigger is None:
        return None
    return Quote(slipped(side, trigger, slippage_bps), trigger, is_maker=False, slippable=True)


def stop_limit_quote(side: Side, trigger: float, limit: float, bar: Bar, strict: bool = False) -> Quote | None:
    """A stop-limit on its trigger bar: at the trigger price if within the limit
    (taker), else at the limit if the bar comes back to it (maker), else no fill.
    ``strict``: within / through the limit, not at it."""
    if side is Side.BUY:
        if _reaches(trigger, limit, strict):
            return Quote(trigger, trigger, is_maker=False)
        return Quote(limit, limit, is_maker=True) if _reaches(bar.low, limit, strict) else None
    if _reaches(-trigger, -limit, strict):
        return Quote(trigger, trigger, is_maker=False)
    return Quote(limit, limit, is_maker=True) if _reaches(-bar.high, -limit, strict) else None


def evaluate(
    mode: OrderType,
    side: Side,
    limit: float | None,
    stop: float | None,
    bar: Bar,
    slippage_bps: float,
    *,
    fill_model: str = "next-open",
    strict: bool = False,
) -> Evaluation:
    """Apply the fill rule of ``mode`` (the order's current type) to one bar; see the
    module docstring for ``fill_model`` and ``strict``."""
    if mode is OrderType.MARKET:
        return Evaluation(market_quote(side, bar, slippage_bps, fill_model))
    if mode is OrderType.LIMIT:
        return Evaluation(limit_quote(side, _need(limit), bar, strict))
    if mode is OrderType.STOP:
        quote = stop_quote(side, _need(stop), bar, slippage_bps)
        return Evaluation(quote, triggered=quote is not None)
    trigger = stop_trigger_price(side, _need(stop), bar)
    if trigger is None:
        return Evaluation(None)
    return Evaluation(stop_limit_quote(side, trigger, _need(limit), bar, strict), triggered=True)


def after_trigger(mode: OrderType) -> OrderType:
    """What a triggered order continues as: a stop as MARKET, a stop-limit as LIMIT."""
    if mode is OrderType.STOP:
        return OrderType.MARKET
    if mode is OrderType.STOP_LIMIT:
        return OrderType.LIMIT
    return mode


def _need(value: float | None) -> float:
    if value is None:  # Order.__post_init__ guarantees the prices its type needs
        raise ValueError("order lacks the price its type needs")
    return value
