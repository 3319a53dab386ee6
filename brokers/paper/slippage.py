"""Slippage models of the paper broker: how far a taker fill at a model price (a market
order's open / close / typical price, a stop's trigger price) moves against the trader.

Each model gives a fraction ``f`` of the reference price ``P`` for one fill of
``quantity`` on one bar (open ``o``, high ``h``, low ``l``, volume ``V``); a buy pays
``P * (1 + f)``, a sell gets ``P * (1 - f)``. Limit fills (at the limit or at a bar's
open) are never slipped: a limit price is a promise.

    fixed         f = bps / 10^4                         (the default; today's behaviour)
    volatility    f = k * (h - l) / o                    (k times the bar's range fraction)
    sqrt-impact   f = k * sigma * sqrt(quantity / V)     sigma = (h - l) / o, the bar's range
                                                         fraction; quantity is this fill's

``sigma`` is the range of the bar the fill happens on (no look-back window, so the model
needs no warm-up and is the same on the first bar as on the last). With ``V == 0`` the
ratio ``quantity / V`` is taken as 1 (the broker's participation cap, on by default with
these models, never lets an order fill on a bar without volume anyway). The volatility
and sqrt-impact fractions are capped at ``MAX_FRACTION`` (50 %) so that a sell's price
stays positive on absurd bars; the fixed model is not capped (its bps are checked by
the caller instead). On a live price tick (a flat bar) the range is zero and so is the
slippage of both.

Every model is deterministic: the same bar and quantity always give the same price.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from brokers.base.types import Side
from brokers.paper.fills import Bar

SLIPPAGE_MODELS = ("fixed", "volatility", "sqrt-impact")
DEFAULT_K = {"volatility": 0.1, "sqrt-impact": 1.0}
MAX_FRACTION = 0.5


class SlippageModel(Protocol):
    """A fraction of the reference price, against the trader, for one fill on one bar."""

    name: str

    def fraction(self, bar: Bar, quantity: float) -> float: ...


def range_fraction(bar: Bar) -> float:
    """The bar's range as a fraction of its open: (high - low) / open."""
    return (bar.high - bar.low) / bar.open if bar.open > 0 else 0.0


@dataclass(frozen=True)
class FixedBps:
    """``bps`` basis points of the reference price, whatever the bar."""

    bps: float = 0.0
    name: str = "fixed"

    def fraction(self, bar: Bar, quantity: float) -> float:
        return self.bps / 1e4


@dataclass(frozen=True)
class VolatilitySlippage:
    """``k`` times the bar's range fraction (h - l) / o."""

    k: float = DEFAULT_K["volatility"]
    name: str = "volatility"

    def fraction(self, bar: Bar, quantity: float) -> float:
        return min(self.k * range_fraction(bar), MAX_FRACTION)


@dataclass(frozen=True)
class SqrtImpact:
    """Square-root market impact: ``k * sigma * sqrt(quantity / volume)``, sigma the
    bar's range fraction."""

    k: float = DEFAULT_K["sqrt-impact"]
    name: str = "sqrt-impact"

    def fraction(self, bar: Bar, quantity: float) -> float:
        if math.isinf(bar.volume):
            return 0.0
        share = quantity / bar.volume if bar.volume > 0 else 1.0
        return min(self.k * range_fraction(bar) * math.sqrt(share), MAX_FRACTION)


def slip(side: Side, price: float, fraction: float) -> float:
    """``price`` moved against the trader by ``fraction`` (same arithmetic as
    ``fills.slipped``, so the fixed model reproduces it to the last bit)."""
    return price * (1 + fraction) if side is Side.BUY else price * (1 - fraction)


def slippage_model(name: str, *, bps: float = 0.0, k: float | None = None) -> SlippageModel:
    """The model called ``name`` (one of ``SLIPPAGE_MODELS``); ``k`` defaults per model."""
    if name == "fixed":
        return FixedBps(bps)
    if name == "volatility":
        return VolatilitySlippage(DEFAULT_K[name] if k is None else k)
    if name == "sqrt-impact":
        return SqrtImpact(DEFAULT_K[name] if k is None else k)
    raise ValueError(f"unknown slippage model {name!r} (expected one of {', '.join(SLIPPAGE_MODELS)})")
