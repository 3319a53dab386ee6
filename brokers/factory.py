"""The broker a live run trades with, from configuration (``tradpal.config.Settings``).

    TRADPAL_BROKER=paper    the paper broker on the wall clock (the default)
    TRADPAL_BROKER=ccxt     a venue through ccxt: TRADPAL_EXCHANGE (binance),
                            TRADPAL_EXCHANGE_URL (API base override, e.g. the emulator),
                            TRADPAL_SANDBOX (the venue's testnet), credentials from the
                            Prefect Secret blocks named by TRADPAL_API_KEY_BLOCK /
                            TRADPAL_API_SECRET_BLOCK, else TRADPAL_API_KEY / TRADPAL_API_SECRET;
                            one request rate per venue account over all runs
                            (TRADPAL_VENUE_RATE_LIMIT / _BURST, ``tradpal.venue_limits``)

Credentials are only ever held as ``SecretStr`` until they are handed to the broker;
no message here contains them.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from brokers.base.clock import WallClock
from brokers.base.protocol import BaseBroker
from tradpal.config import Settings
from tradpal.errors import ConfigError


def paper_broker(cash: float, quote: str, prices: dict[str, float], clock: WallClock) -> BaseBroker:
    """The paper broker holding ``cash`` of ``quote``, at ``prices``, on ``clock``."""
    from brokers.paper import PaperBroker

    broker = PaperBroker(cash=cash, quote_currency=quote, clock=clock, name="paper")
    for symbol, price in prices.items():
        broker.set_price(symbol, price)
    return broker


def _secret_block(name: str, key: str) -> str:
    from prefect.blocks.system import Secret

    try:
        block = Secret.load(name, _sync=True)  # type: ignore[call-arg]
    except Exception as exc:  # noqa: BLE001 - any failure: the block is not usable
        raise ConfigError(f"{key}: cannot load the Prefect Secret block {name!r} ({type(exc).__name__})") from None
    value = block.get()
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: the Prefect Secret block {name!r} holds no text value")
    return value


def credentials(settings: Settings) -> tuple[str, str]:
    """(API key, secret): each from its Secret block if one is named, else from the
    environment; ``ConfigError`` naming the missing key otherwise."""
    out = []
    for what, block, direct in (("API_KEY", settings.api_key_block, settings.api_key),
                                ("API_SECRET", settings.api_secret_block, settings.api_secret)):
        if block:
            out.append(_secret_block(block, f"TRADPAL_{what}_BLOCK"))
        elif direct is not None and direct.get_secret_value():
            out.append(direct.get_secret_value())
        else:
            raise ConfigError(f"TRADPAL_{what}_BLOCK or TRADPAL_{what}: required for broker ccxt")
    return out[0], out[1]


def venue_name(settings: Settings) -> str:
    """The venue account's name in the ledger: the exchange, marked as testnet or as
    the overriding host, so rehearsal orders never mix with the real account's."""
    name = settings.exchange
    if settings.sandbox:
        name += "-testnet"
    if settings.exchange_url:
        name += f"@{urlsplit(settings.exchange_url).netloc}"
    return name[:64]


def ccxt_broker(settings: Settings, quote: str | None = None) -> BaseBroker:
    """A ``CcxtBroker`` for ``settings`` (not connected)."""
    from brokers.ccxt import PROFILES, CcxtBroker

    if settings.exchange not in PROFILES:
        raise ConfigError(f"TRADPAL_EXCHANGE: no venue profile for {settings.exchange!r} "
                          f"(known: {', '.join(sorted(PROFILES))})")
    api_key, secret = credentials(settings)
    name = venue_name(settings)
    return CcxtBroker(settings.exchange, api_key=api_key, secret=secret, base_url=settings.exchange_url,
                      sandbox=settings.sandbox, name=name, quote_currency=quote,
                      request_gate=venue_rate_gate(settings, name, api_key), ccxt_rate_limit=settings.ccxt_rate_limit)


def venue_rate_gate(settings: Settings, venue: str, api_key: str):
    """The Prefect rate limit shared by every run on this venue account, at
    TRADPAL_VENUE_RATE_LIMIT requests per second ('profile': the venue profile's
    budget); None when it is unset or 0 (ccxt's own limiter only)."""
    from brokers.ccxt import profile_for
    from tradpal.venue_limits import PrefectRateGate, VenueRateLimit, limit_name

    if settings.venue_rate_limit is None:
        return None
    profile = profile_for(settings.exchange)
    per_second = (profile.requests_per_second if settings.venue_rate_limit == "profile"
                  else float(settings.venue_rate_limit))
    if per_second == 0:
        return None
    burst = settings.venue_rate_burst or profile.request_burst
    return PrefectRateGate(VenueRateLimit(limit_name(venue, api_key), per_second, burst))


def backup_broker(settings: Settings, quote: str | None = None) -> BaseBroker | None:
    """The backup route of the venue account (``TRADPAL_BACKUP_EXCHANGE_URL``, broker ccxt):
    the same exchange, credentials and ledger venue name through another API base; None
    when none is configured."""
    if settings.broker != "ccxt" or not settings.backup_exchange_url:
        return None
    backup = ccxt_broker(settings.model_copy(update={"exchange_url": settings.backup_exchange_url}), quote)
    backup.name = venue_name(settings)  # the same account: its orders are the primary's in the ledger
    return backup


def guarded(broker: BaseBroker, settings: Settings, risk, *, ledger, namespace: str, alerter=None,
            run_id: str | None = None, quote: str | None = None) -> BaseBroker:
    """``broker`` behind the connectivity breaker when the risk configuration has one
    (``breakers.connectivity``), failing over to `backup_broker`; else ``broker`` itself."""
    conn = getattr(getattr(risk, "breakers", None), "connectivity", None)
    if conn is None:
        return broker
    from risk.connectivity import ConnectivityGuard

    return ConnectivityGuard(broker, backup_broker(settings, quote), max_errors=conn.max_errors, ledger=ledger,
                             namespace=namespace, alerter=alerter, run_id=run_id)


def make_broker(settings: Settings, *, cash: float = 10_000.0, quote: str = "USDT",
                prices: dict[str, float] | None = None, clock: WallClock | None = None) -> BaseBroker:
    """The configured broker. ``cash``, ``prices`` and ``clock`` only matter for the
    paper broker; ``quote`` is the currency the account is valued in."""
    if settings.broker == "ccxt":
        return ccxt_broker(settings, quote)
    if settings.broker == "paper":
        return paper_broker(cash, quote, prices or {}, clock or WallClock())
    raise ConfigError(f"TRADPAL_BROKER: unknown broker {settings.broker!r}")
