"""The ccxt adapter: ``CcxtBroker`` for every venue ccxt speaks, venue differences as
data (``profiles``), ccxt's errors mapped once (``errors``). Nothing outside this
package imports ccxt."""

from brokers.ccxt.broker import CcxtBroker, rebase_api_urls
from brokers.ccxt.errors import DuplicateClientOrderIdError, VenueAuthenticationError, VenueBannedError
from brokers.ccxt.profiles import DERIVATIVE_PROFILES, PROFILES, VenueProfile, market_types, profile_for

__all__ = [
    "DERIVATIVE_PROFILES",
    "PROFILES",
    "CcxtBroker",
    "DuplicateClientOrderIdError",
    "VenueAuthenticationError",
    "VenueBannedError",
    "VenueProfile",
    "market_types",
    "profile_for",
    "rebase_api_urls",
]
