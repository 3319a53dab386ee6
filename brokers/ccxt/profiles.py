"""Venue profiles: what differs between venues, as data (no ``if venue == ...`` in the
adapter). One profile per venue and market type: spot for binance, kraken, bybit,
kucoin and okx; USDT-margined perpetual futures (ccxt ``swap``, linear) for binance
and bybit, derived from their spot profiles.

Each profile says which ccxt class to build and with which options, under which
parameter name the venue takes our client order id when placing (``client_order_id_param``)
and when looking an order up (``lookup_param``: also the field of a cancel answer
that carries the order's own client id), which client ids it accepts, which phrases in
a refusal mean "you already sent this client id", and, for derivatives, the parameter
that makes an order reduce-only and the highest leverage the adapter will set.
``verified`` says whether the profile has been driven end to end (real ccxt over HTTP
against ``brokers.emulator``: Binance and Bybit, spot and USDT perpetuals); the others
are written from ccxt's source and the venues' documentation, and checked only as far
as ccxt builds their requests offline (tests/brokers/ccxt/test_profiles.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class VenueProfile:
    exchange_id: str  # the ccxt class name
    options: Mapping[str, Any]  # ccxt options merged under the caller's
    client_order_id_param: str  # create_order param carrying our client order id
    client_order_id_pattern: str  # what the venue accepts as a client order id
    lookup_param: str = ""  # fetch_order param to find an order by client id (default: the same)
    market_type: str = "spot"  # ccxt defaultType this profile trades
    duplicate_markers: tuple[str, ...] = ()  # refusal phrases meaning "client id already used"
    # refusal phrases meaning "server busy, try again" where ccxt raises a plain ExchangeError
    busy_markers: tuple[str, ...] = ()
    verified: bool = False
    notes: str = ""
    quote_currency: str = "USDT"  # default currency equity is valued in
    exchange_config: Mapping[str, Any] = field(default_factory=dict)  # top-level ccxt settings
    # one account's request budget over all runs (tradpal.venue_limits): sustained
    # requests per second and burst; conservative readings of the venue's published limits
    requests_per_second: float = 10.0
    request_burst: int = 20
    reduce_only_param: str | None = None  # derivatives: create_order param for reduce-only
    max_leverage: int | None = None  # derivatives: the highest leverage the adapter sets
    # derivatives: refusal phrases of set_leverage meaning "already at that leverage" (done)
    leverage_unchanged_markers: tuple[str, ...] = ()
    # derivatives: ccxt's balance total is the margin balance (wallet + unrealised profit),
    # not the wallet (binance USDⓈ-M: marginBalance; bybit: walletBalance)
    balance_includes_unrealized: bool = False
    acks_only: bool = False  # create / cancel answer with ids only: fetch the order after
    lookup_in_open_orders: bool = False  # find by client id with fetch_open_orders, not fetch_order

    def __post_init__(self) -> None:
        if not self.lookup_param:
            object.__setattr__(self, "lookup_param", self.client_order_id_param)
        if self.options.get("defaultType", self.market_type) != self.market_type:
            raise ValueError(f"{self.exchange_id}: options defaultType {self.options['defaultType']!r} "
                             f"is not the profile's market type {self.market_type!r}")

    @property
    def is_derivative(self) -> bool:
        return self.market_type != "spot"

    def accepts_client_order_id(self, client_order_id: str) -> bool:
        return re.fullmatch(self.client_order_id_pattern, client_order_id) is not None

    def is_duplicate(self, message: str) -> bool:
        """Whether a refusal's text says the client order id was already used."""
        lowered = message.lower()
        return any(marker.lower() in lowered for marker in self.duplicate_markers)

    def is_leverage_unchanged(self, message: str) -> bool:
        """Whether a refusal of ``set_leverage`` says the leverage is already the one asked."""
        lowered = message.lower()
        return any(marker.lower() in lowered for marker in self.leverage_unchanged_markers)

    def is_busy(self, message: str) -> bool:
        """Whether a refusal's text is the venue's "server error, try again" (retryable)."""
        lowered = message.lower()
        return any(marker.lower() in lowered for marker in self.busy_markers)

    def usdt_perpetuals(self, *, max_leverage: int, notes: str, **fields: Any) -> VenueProfile:
        """This venue's USDT-margined perpetual futures (ccxt ``swap``, linear): the same
        client ids, reduce-only as ccxt's unified ``reduceOnly``, leverage up to
        ``max_leverage``; other ``fields`` replaced as given."""
        return replace(
            self,
            market_type="swap",
            options=_frozen({**self.options, "defaultType": "swap", "defaultSubType": "linear",
                             "fetchMarkets": {"types": ["linear"]}}),
            reduce_only_param="reduceOnly",
            max_leverage=max_leverage,
            verified=True,
            notes=notes,
            **fields,
        )


def _frozen(d: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(d))


def _spot(exchange_id: str, **fields: Any) -> VenueProfile:
    """A spot profile: ccxt's defaultType spot plus ``fields``."""
    options = {"defaultType": "spot", **fields.pop("options", {})}
    return VenueProfile(exchange_id=exchange_id, options=_frozen(options), **fields)


BINANCE = _spot(
    "binance",
    # only the spot exchangeInfo; no currencies / margin endpoints (they need the
    # SAPI, which neither a spot-only key nor the emulator serves)
    options={"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False, "fetchMargins": False},
    client_order_id_param="newClientOrderId",
    lookup_param="origClientOrderId",
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

KRAKEN = _spot(
    "kraken",
    client_order_id_param="cl_ord_id",
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

BYBIT = _spot(
    "bybit",
    # v5 on a unified trading account (ccxt would ask /v5/user/query-api and
    # /v5/account/info otherwise); spot markets only; no currencies (a signed asset call)
    options={"fetchMarkets": {"types": ["spot"]}, "enableUnifiedAccount": True, "enableUnifiedMargin": False,
             "fetchOrder": {"acknowledged": True}},
    exchange_config=MappingProxyType({"has": {"fetchCurrencies": False}}),
    client_order_id_param="orderLinkId",
    client_order_id_pattern=r"[A-Za-z0-9_-]{1,36}",
    duplicate_markers=("OrderLinkedID is duplicate", "orderLinkId is duplicate"),
    # retCode 10016 "System error. Please try again later." / "Server error.": ccxt raises a
    # plain ExchangeError; it is Bybit's 5xx (answered with HTTP 200)
    busy_markers=('"retCode":10016', '"retCode": 10016'),
    acks_only=True,
    lookup_in_open_orders=True,
    verified=True,
    notes="Unified trading account assumed. /v5/order/realtime (fetch_order, and fetch_open_orders "
    "given an orderLinkId) sees open and recent orders only. Spot fees are charged in the asset "
    "received.",
)

KUCOIN = _spot(
    "kucoin",
    client_order_id_param="clientOid",
    client_order_id_pattern=r"[A-Za-z0-9_-]{1,40}",
    duplicate_markers=("duplicate",),
    notes="Needs a passphrase (ccxt 'password') besides key and secret.",
)

OKX = _spot(
    "okx",
    client_order_id_param="clOrdId",
    client_order_id_pattern=r"[A-Za-z0-9]{1,32}",
    duplicate_markers=("Duplicated clOrdId", "51016"),
    notes="clOrdId is alphanumeric only: our ids need their hyphens removed. Needs a passphrase.",
)

BINANCE_USDM = BINANCE.usdt_perpetuals(
    max_leverage=125,
    balance_includes_unrealized=True,
    requests_per_second=20.0,  # 2400 request weight per minute on fapi
    request_burst=40,
    notes="USDⓈ-M perpetuals on fapi: newClientOrderId / origClientOrderId as on spot; reduceOnly is "
    "refused in hedge mode (dual side position): the account must be in one-way mode. Leverage is "
    "per symbol (POST /fapi/v1/leverage). Emulated (brokers.emulator.binance_futures).",
)

BYBIT_LINEAR = BYBIT.usdt_perpetuals(
    max_leverage=100,
    # set-leverage to the leverage already set is refused: 110043 "Set leverage not modified"
    leverage_unchanged_markers=('"retCode":110043', "Set leverage not modified"),
    notes="USDT perpetuals (category linear) on the unified account: orderLinkId as on spot; "
    "reduceOnly for closing; leverage per symbol (POST /v5/position/set-leverage, buy and sell "
    "alike). Emulated (brokers.emulator.bybit, category linear).",
)

PROFILES: Mapping[str, VenueProfile] = MappingProxyType(
    {p.exchange_id: p for p in (BINANCE, KRAKEN, BYBIT, KUCOIN, OKX)}
)
"""The spot profile of each venue."""

DERIVATIVE_PROFILES: Mapping[tuple[str, str], VenueProfile] = MappingProxyType(
    {(p.exchange_id, p.market_type): p for p in (BINANCE_USDM, BYBIT_LINEAR)}
)
"""USDT-margined perpetual futures, by (exchange id, ccxt market type)."""


def market_types(exchange_id: str) -> list[str]:
    """The market types the adapter may trade at ``exchange_id``."""
    spot = ["spot"] if exchange_id in PROFILES else []
    return spot + sorted(t for e, t in DERIVATIVE_PROFILES if e == exchange_id)


def profile_for(exchange_id: str, market_type: str = "spot") -> VenueProfile:
    """The profile of ``exchange_id`` for ``market_type``; ``ValueError`` naming the
    known venues, or the venue's market types, otherwise."""
    if exchange_id not in PROFILES:
        raise ValueError(f"no venue profile for {exchange_id!r}; known: {', '.join(sorted(PROFILES))}")
    profile = PROFILES[exchange_id] if market_type == "spot" else DERIVATIVE_PROFILES.get((exchange_id, market_type))
    if profile is None:
        raise ValueError(f"{exchange_id}: market type {market_type!r} not supported here "
                         f"(supported: {', '.join(market_types(exchange_id))})")
    return profile
