"""Fee schedules of the paper broker, per venue profile: maker and taker spot fees as
fractions of the notional, charged in the quote currency.

A fill that rests on the book and is then traded against pays the maker fee; a fill
that crosses (market orders, stops, a limit marketable on arrival or at a bar's open)
pays the taker fee. The broker decides which (``Quote.is_maker``); this module only
holds the rates.

The named profiles are the venues' published **base-tier spot** rates (lowest
30-day-volume tier, no token discount, no VIP/promotion), as we know them at the time
of writing; venues change their schedules, so check the venue's fee page before you
rely on a figure, or pass your own (``custom:MAKER:TAKER``):

    venue     maker     taker     tier
    binance   0.100 %   0.100 %   Regular user (VIP 0), without the BNB discount
    kraken    0.250 %   0.400 %   Kraken Pro, $0-10k 30-day volume
    bybit     0.100 %   0.100 %   Non-VIP spot
    kucoin    0.100 %   0.100 %   Level 0 (LV0), class A pairs
    okx       0.080 %   0.100 %   Regular user, Lv1 spot

``fee_schedule("binance")`` returns a profile; ``fee_schedule("custom:0.0002:0.0007")``
a custom one (maker first, then taker, each a fraction in [0, 1)).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FeeSchedule:
    """Maker and taker fees of one venue, fractions of the notional (0.001 = 0.1 %)."""

    venue: str
    maker: float
    taker: float

    def __post_init__(self) -> None:
        for name, rate in (("maker", self.maker), ("taker", self.taker)):
            if not 0 <= rate < 1:
                raise ValueError(f"{self.venue}: {name} fee must be in [0, 1), got {rate}")


VENUES: dict[str, FeeSchedule] = {
    "binance": FeeSchedule("binance", maker=0.001, taker=0.001),
    "kraken": FeeSchedule("kraken", maker=0.0025, taker=0.004),
    "bybit": FeeSchedule("bybit", maker=0.001, taker=0.001),
    "kucoin": FeeSchedule("kucoin", maker=0.001, taker=0.001),
    "okx": FeeSchedule("okx", maker=0.0008, taker=0.001),
}
CUSTOM_SYNTAX = "custom:MAKER:TAKER"


def fee_schedule(spec: str) -> FeeSchedule:
    """The schedule named by ``spec``: a venue of ``VENUES`` (any case) or
    ``custom:MAKER:TAKER``. Raises ``ValueError`` saying what is expected."""
    name = spec.strip().lower()
    if name in VENUES:
        return VENUES[name]
    if name.startswith("custom:"):
        parts = name.split(":")[1:]
        try:
            maker, taker = (float(p) for p in parts)
        except ValueError:
            raise ValueError(f"expected {CUSTOM_SYNTAX} with two numbers, got {spec!r}") from None
        return FeeSchedule("custom", maker, taker)
    known = ", ".join(VENUES)
    raise ValueError(f"unknown venue {spec!r} (expected one of {known}, or {CUSTOM_SYNTAX})")
