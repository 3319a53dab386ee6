"""Venue profiles: what differs between venues, as data (no ``if venue == ...`` in the
adapter).

Each profile says which ccxt class to build and with which options, under which
parameter name the venue takes our client order id when placing (``client_order_id_param``)
and when looking an order up (``lookup_param``: also the field of a cancel answer
that carries the order's own client id), which client ids it accepts, which phrases in
a refusal mean "you already sent this client id", and which market types the adapter
may use there. ``verified`` says whether the profile has been driven end to end (real
ccxt over HTTP against ``brokers.emulator``); the others are written from ccxt's source
and the venues' documentation and are not exercised yet.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class VenueProfile:
    exchange_id: str  # the ccxt class name
    options: Mapping[str, Any]  # ccxt options merged under the caller's
    client_order_id_param: str  # create_order param carrying our client order id
    lookup_param: str  # fetch_order param to find an order by client id
    market_types: frozenset[str]  # ccxt defaultType values the adapter may use
    client_order_id_pattern: str  # what the venue accepts as a client order id
    duplicate_markers: tuple[str, ...] = ()  # refusal phrases meaning "client id already used"
    verified: bool = False
    notes: str = ""
    quote_currency: str = "USDT"  # default currency equity is valued in
    exchange_config: Mapping[str, Any] = field(default_factory=dict)  # top-level ccxt settings
    # one account's request budget over all runs (tradpal.venue_limits): sustained
    # requests per second and burst; conservative readings of the venue's published limits
    requests_per_second: float = 10.0
    request_burst: int = 20

    def accepts_client_order_id(self, client_order_id: str) -> bool:
        return re.fullmatch(self.client_order_id_pattern, client_order_id) is not None

    def is_duplicate(self, message: str) -> bool:
        """Whether a refusal's text says the client order id was already used."""
        lowered = message.lower()
        return any(marker.lower() in lowered for marker in self.duplicate_markers)


def _frozen(d: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(d))


BINANCE = VenueProfile(
    exchange_id="binance",
    options=_frozen({
        "defaultType": "spot",
        # only the spot exchangeInfo; no currencies / margin endpoints (they need the
        # SAPI, which neither a spot-only key nor the emulator serves)
        "fetchMarkets": {"types": ["spot"]},
        "fetchCurrencies": False,
        "fetchMargins": False,
    }),
    client_order_id_param="newClientOrderId",
    lookup_param="origClientOrderId",
    market_types=frozenset({"spot"}),
    client_order_id_pattern=r"[.A-Z:/a-z0-9_-]{1,36}",
    duplicate_markers=("Duplicate order sent",),
    # Binance counts request weight over a rolling minute; ccxt's default leaky bucket
    # spaces every request instead (an account call, weight 20, would hold the next
    # order for 200 ms). Same accounting (1200 ccxt units = 6000 weight per minute),
    # but a burst within the budget goes out at once.
    exchange_config=MappingProxyType({"rateLimiterAlgorithm": "rollingWindow"}),
    # 6000 request weight per minute per IP, 100 orders per 10 s per account
    requests_per_second=50.0,
    request_burst=100,
    verified=True,
    notes="Client ids are unique among OPEN orders only: a filled order's id can be reused, "
    "so look up before placing. Commission is charged in the received asset unless BNB pays.",
)

KRAKEN = VenueProfile(
    exchange_id="kraken",
    options=_frozen({"defaultType": "spot"}),
    client_order_id_param="cl_ord_id",
    lookup_param="cl_ord_id",
    market_types=frozenset({"spot"}),
    # cl_ord_id: a UUID, a 32-hex short UUID, or free text of at most 18 characters
    client_order_id_pattern=r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"
    r"|[\x20-\x7e]{1,18}",
    duplicate_markers=("duplicate",),
    quote_currency="USD",
    # private calls: a counter of 15 (20 Pro) that decays by 0.33 (0.5) per second
    requests_per_second=0.33,
    request_burst=15,
    notes="Our tp-<24 hex>-<leg> ids are too long for cl_ord_id: needs a UUID mapping.",
)

BYBIT = VenueProfile(
    exchange_id="bybit",
    options=_frozen({"defaultType": "spot"}),
    client_order_id_param="orderLinkId",
    lookup_param="orderLinkId",
    market_types=frozenset({"spot", "swap"}),
    client_order_id_pattern=r"[A-Za-z0-9_-]{1,36}",
    duplicate_markers=("OrderLinkedID is duplicate", "orderLinkId is duplicate"),
    notes="fetch_order only sees recent orders on the unified account; use fetch_open_order / "
    "fetch_closed_order for older ones.",
)

KUCOIN = VenueProfile(
    exchange_id="kucoin",
    options=_frozen({"defaultType": "spot"}),
    client_order_id_param="clientOid",
    lookup_param="clientOid",
    market_types=frozenset({"spot"}),
    client_order_id_pattern=r"[A-Za-z0-9_-]{1,40}",
    duplicate_markers=("duplicate",),
    notes="Needs a passphrase (ccxt 'password') besides key and secret.",
)

OKX = VenueProfile(
    exchange_id="okx",
    options=_frozen({"defaultType": "spot"}),
    client_order_id_param="clOrdId",
    lookup_param="clOrdId",
    market_types=frozenset({"spot", "swap"}),
    client_order_id_pattern=r"[A-Za-z0-9]{1,32}",
    duplicate_markers=("Duplicated clOrdId", "51016"),
    notes="clOrdId is alphanumeric only: our ids need their hyphens removed. Needs a passphrase.",
)

PROFILES: Mapping[str, VenueProfile] = MappingProxyType(
    {p.exchange_id: p for p in (BINANCE, KRAKEN, BYBIT, KUCOIN, OKX)}
)


def profile_for(exchange_id: str) -> VenueProfile:
    """The profile of ``exchange_id``; ``ValueError`` naming the known ones otherwise."""
    try:
        return PROFILES[exchange_id]
    except KeyError:
        raise ValueError(f"no venue profile for {exchange_id!r}; known: {', '.join(sorted(PROFILES))}") from None
