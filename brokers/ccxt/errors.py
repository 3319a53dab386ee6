"""ccxt's exceptions mapped to the broker errors, once, in one table (most specific
first: the first row whose ccxt class matches, and whose condition holds, wins).

    ccxt exception                              broker error                  retry?
    any, raised from a broken connection (†)->  BrokerConnectionError         yes: look up first
    InsufficientFunds                       ->  InsufficientFundsError        no
    OrderNotFound                           ->  OrderNotFoundError            no
    InvalidOrder saying "duplicate" (*)     ->  DuplicateClientOrderIdError   no: reconcile
    InvalidOrder, BadSymbol, BadRequest     ->  InvalidOrderError             no
    AuthenticationError, PermissionDenied   ->  VenueAuthenticationError      no: fix the key
    DDoSProtection saying "banned until"    ->  VenueBannedError              yes, after the ban
    DDoSProtection, RateLimitExceeded       ->  RateLimitError                yes
    RequestTimeout, ExchangeNotAvailable,
    NetworkError, OperationFailed           ->  BrokerConnectionError         yes
    ExchangeError saying "busy" (‡)         ->  BrokerConnectionError         yes: look up first
    anything else ccxt raises               ->  BrokerError                   no

    (*) the venue profile's ``duplicate_markers``; Binance: "Duplicate order sent."
    (‡) the venue profile's ``busy_markers``: a venue's own "server error, try again"
        that ccxt raises as a plain ``ExchangeError`` (Bybit retCode 10016 "System error.
        Please try again later.", HTTP 200): a 5xx in all but status, so retried as one.
    (†) ccxt raises a plain ``ExchangeError`` when the connection closes in the middle
        of an answer (aiohttp's ``ClientPayloadError``) and ``ExchangeNotAvailable`` when
        it closes before one: either way the request may have been executed.

``OrderNotFound`` is a subclass of ``InvalidOrder`` and ``DDoSProtection`` of
``NetworkError``, hence the order. Binance answers 503 -1001 with ccxt's
``OperationFailed`` (not a ``NetworkError``), 503 -1007 "execution status unknown"
with ``RequestTimeout``, and 418 (an IP ban, -1003 "banned until <ms>") and 429 with
``DDoSProtection``: all retryable, and after any of them a placement must be looked up
by client id before it is sent again.

Messages keep what the operator needs (the action: side, quantity, symbol, client
order id) and the venue's own words, with the API key, the secret and request
signatures blanked out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import ccxt

from brokers.base.errors import (
    BrokerConnectionError,
    BrokerError,
    InsufficientFundsError,
    InvalidOrderError,
    OrderNotFoundError,
    RateLimitError,
)

REDACTED = "***"
_SIGNATURE = re.compile(r"(signature=|X-BAPI-SIGN['\"]?\s*[:=]\s*['\"]?)[0-9A-Za-z%+/=_-]+", re.IGNORECASE)
_BANNED_UNTIL = re.compile(r"banned until (\d{12,14})", re.IGNORECASE)


class DuplicateClientOrderIdError(InvalidOrderError):
    """The venue already has an open order with this client order id. Not a rejection:
    look the order up by client id and carry on with that one."""


class VenueAuthenticationError(BrokerError):
    """The venue refused our credentials or their permissions. Not retried: check the
    API key and secret, the key's permissions (trading enabled) and its IP whitelist."""

    retryable = False


class VenueBannedError(RateLimitError):
    """The venue has banned our IP for sending too much (Binance: HTTP 418). Every
    request before ``banned_until`` is refused, and on Binance each one lengthens the
    ban: retried with backoff, but lower the request rate (ccxt's limiter, the
    per-account Prefect rate limit) so that it does not happen again."""

    banned_until: datetime | None = None


def _never(_: str) -> bool:
    return False


@dataclass(frozen=True)
class VenueWords:
    """What the venue profile reads in a refusal's text: "this client id is already
    used" (``is_duplicate``) and "server busy, try again" (``is_busy``)."""

    is_duplicate: Callable[[str], bool] = _never
    is_busy: Callable[[str], bool] = _never


Condition = Callable[[BaseException, VenueWords], bool]


def _says_duplicate(exc: BaseException, words: VenueWords) -> bool:
    return words.is_duplicate(str(exc))


def _says_busy(exc: BaseException, words: VenueWords) -> bool:
    return words.is_busy(str(exc))


def _broke_in_transit(exc: BaseException, _: VenueWords) -> bool:
    return isinstance(exc.__cause__, aiohttp.ClientError)


def _says_banned(exc: BaseException, _: VenueWords) -> bool:
    return _BANNED_UNTIL.search(str(exc)) is not None


@dataclass(frozen=True)
class Rule:
    ccxt_error: type[BaseException]
    broker_error: type[BrokerError]
    when: Condition | None = None  # the row applies only if this holds too
    hint: str = ""


_LOOK_UP = "the request may have been executed: look the order up by client id before sending it again"

ERROR_TABLE: tuple[Rule, ...] = (
    Rule(ccxt.BaseError, BrokerConnectionError, when=_broke_in_transit,
         hint=f"the connection broke before the answer was complete; {_LOOK_UP}"),
    Rule(ccxt.InsufficientFunds, InsufficientFundsError),
    Rule(ccxt.OrderNotFound, OrderNotFoundError),
    Rule(ccxt.InvalidOrder, DuplicateClientOrderIdError, when=_says_duplicate,
         hint="an order with this client id already exists: look it up by client id"),
    Rule(ccxt.InvalidOrder, InvalidOrderError),
    Rule(ccxt.BadSymbol, InvalidOrderError),
    Rule(ccxt.BadRequest, InvalidOrderError),
    Rule(ccxt.AuthenticationError, VenueAuthenticationError,
         hint="authentication refused: check the API key and secret, the key's trading permission "
              "and its IP whitelist"),
    Rule(ccxt.DDoSProtection, VenueBannedError, when=_says_banned,
         hint="IP banned by the venue for too many requests: lower the request rate"),
    Rule(ccxt.DDoSProtection, RateLimitError, hint="rate limited: back off"),
    Rule(ccxt.RateLimitExceeded, RateLimitError, hint="rate limited: back off"),
    Rule(ccxt.RequestTimeout, BrokerConnectionError, hint=f"no answer in time; {_LOOK_UP}"),
    Rule(ccxt.ExchangeNotAvailable, BrokerConnectionError, hint=f"no answer; {_LOOK_UP}"),
    Rule(ccxt.NetworkError, BrokerConnectionError),
    Rule(ccxt.OperationFailed, BrokerConnectionError),
    Rule(ccxt.ExchangeError, BrokerConnectionError, when=_says_busy,
         hint=f"the venue says it is busy (a server error); {_LOOK_UP}"),
    Rule(ccxt.BaseError, BrokerError),
)


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret (API key, secret, password) and request signature
    replaced by ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    return _SIGNATURE.sub(r"\g<1>" + REDACTED, text)


def rule_for(exc: BaseException, is_duplicate: Callable[[str], bool] = _never,
             is_busy: Callable[[str], bool] = _never) -> Rule | None:
    """The first row of ``ERROR_TABLE`` that applies to ``exc`` (None: not a ccxt error)."""
    words = VenueWords(is_duplicate, is_busy)
    for rule in ERROR_TABLE:
        if isinstance(exc, rule.ccxt_error) and (rule.when is None or rule.when(exc, words)):
            return rule
    return None


def banned_until(message: str) -> datetime | None:
    """The end of an IP ban a venue's message announces (Binance: "banned until <ms>")."""
    found = _BANNED_UNTIL.search(message)
    return datetime.fromtimestamp(int(found.group(1)) / 1000, tz=UTC) if found else None


def translate(
    exc: BaseException,
    action: str,
    *,
    secrets: Iterable[str | None] = (),
    is_duplicate: Callable[[str], bool] = _never,
    is_busy: Callable[[str], bool] = _never,
) -> BrokerError:
    """The broker error for a ccxt exception raised while doing ``action``."""
    rule = rule_for(exc, is_duplicate, is_busy) or Rule(BaseException, BrokerError)
    secrets = tuple(secrets)
    venue_words = redact(str(exc), secrets) or type(exc).__name__
    parts = [redact(action, secrets), f"{type(exc).__name__}: {venue_words}"]
    hint = rule.hint
    until = banned_until(venue_words) if rule.broker_error is VenueBannedError else None
    if until is not None:
        hint += f"; banned until {until.isoformat(timespec='seconds')}"
    if hint:
        parts.insert(1, hint)
    error = rule.broker_error(" — ".join(parts), broker_message=venue_words)
    if isinstance(error, VenueBannedError):
        error.banned_until = until
    return error


@contextmanager
def mapped_errors(
    action: str,
    *,
    secrets: Iterable[str | None] = (),
    is_duplicate: Callable[[str], bool] = _never,
    is_busy: Callable[[str], bool] = _never,
) -> Iterator[None]:
    """Run the block; a ccxt exception leaves it as the broker error of ``ERROR_TABLE``
    (``raise ... from`` the original, whose text carries no credentials either)."""
    try:
        yield
    except ccxt.BaseError as exc:
        raise translate(exc, action, secrets=secrets, is_duplicate=is_duplicate, is_busy=is_busy) from exc
