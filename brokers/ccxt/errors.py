"""ccxt's exceptions mapped to the broker errors, once, in one table (most specific
first: the first row whose ccxt class matches wins).

    ccxt exception                              broker error                  retry?
    InsufficientFunds                       ->  InsufficientFundsError        no
    OrderNotFound                           ->  OrderNotFoundError            no
    InvalidOrder saying "duplicate" (*)     ->  DuplicateClientOrderIdError   no: reconcile
    InvalidOrder, BadSymbol, BadRequest     ->  InvalidOrderError             no
    AuthenticationError, PermissionDenied   ->  VenueAuthenticationError      no: fix the key
    DDoSProtection, RateLimitExceeded       ->  RateLimitError                yes
    RequestTimeout, ExchangeNotAvailable,
    NetworkError, OperationFailed           ->  BrokerConnectionError         yes
    anything else ccxt raises               ->  BrokerError                   no

    (*) the venue profile's ``duplicate_markers``; Binance: "Duplicate order sent."

``OrderNotFound`` is a subclass of ``InvalidOrder`` and ``DDoSProtection`` of
``NetworkError``, hence the order. Binance answers 503 -1001 with ccxt's
``OperationFailed`` (not a ``NetworkError``) and 503 -1007 "execution status unknown"
with ``RequestTimeout``: both are retryable connection errors, and after either a
placement must be looked up by client id before it is sent again.

Messages keep what the operator needs (the action: side, quantity, symbol, client
order id) and the venue's own words, with the API key, the secret and request
signatures blanked out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

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
_SIGNATURE = re.compile(r"(signature=)[0-9A-Za-z%+/=_-]+")


class DuplicateClientOrderIdError(InvalidOrderError):
    """The venue already has an open order with this client order id. Not a rejection:
    look the order up by client id and carry on with that one."""


class VenueAuthenticationError(BrokerError):
    """The venue refused our credentials or their permissions. Not retried: check the
    API key and secret, the key's permissions (trading enabled) and its IP whitelist."""

    retryable = False


@dataclass(frozen=True)
class Rule:
    ccxt_error: type[BaseException]
    broker_error: type[BrokerError]
    duplicate_only: bool = False  # applies only when the venue says "duplicate client id"
    hint: str = ""


ERROR_TABLE: tuple[Rule, ...] = (
    Rule(ccxt.InsufficientFunds, InsufficientFundsError),
    Rule(ccxt.OrderNotFound, OrderNotFoundError),
    Rule(ccxt.InvalidOrder, DuplicateClientOrderIdError, duplicate_only=True,
         hint="an order with this client id already exists: look it up by client id"),
    Rule(ccxt.InvalidOrder, InvalidOrderError),
    Rule(ccxt.BadSymbol, InvalidOrderError),
    Rule(ccxt.BadRequest, InvalidOrderError),
    Rule(ccxt.AuthenticationError, VenueAuthenticationError,
         hint="authentication refused: check the API key and secret, the key's trading permission "
              "and its IP whitelist"),
    Rule(ccxt.DDoSProtection, RateLimitError, hint="rate limited: back off"),
    Rule(ccxt.RateLimitExceeded, RateLimitError, hint="rate limited: back off"),
    Rule(ccxt.RequestTimeout, BrokerConnectionError,
         hint="no answer in time: the request may have been executed"),
    Rule(ccxt.ExchangeNotAvailable, BrokerConnectionError),
    Rule(ccxt.NetworkError, BrokerConnectionError),
    Rule(ccxt.OperationFailed, BrokerConnectionError),
    Rule(ccxt.BaseError, BrokerError),
)


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret (API key, secret, password) and request signature
    replaced by ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    return _SIGNATURE.sub(r"\g<1>" + REDACTED, text)


def rule_for(exc: BaseException, is_duplicate: Callable[[str], bool] = lambda _: False) -> Rule | None:
    """The first row of ``ERROR_TABLE`` that applies to ``exc`` (None: not a ccxt error)."""
    for rule in ERROR_TABLE:
        if isinstance(exc, rule.ccxt_error) and (not rule.duplicate_only or is_duplicate(str(exc))):
            return rule
    return None


def translate(
    exc: BaseException,
    action: str,
    *,
    secrets: Iterable[str | None] = (),
    is_duplicate: Callable[[str], bool] = lambda _: False,
) -> BrokerError:
    """The broker error for a ccxt exception raised while doing ``action``."""
    rule = rule_for(exc, is_duplicate) or Rule(BaseException, BrokerError)
    secrets = tuple(secrets)
    venue_words = redact(str(exc), secrets) or type(exc).__name__
    parts = [redact(action, secrets), f"{type(exc).__name__}: {venue_words}"]
    if rule.hint:
        parts.insert(1, rule.hint)
    return rule.broker_error(" — ".join(parts), broker_message=venue_words)


@contextmanager
def mapped_errors(
    action: str,
    *,
    secrets: Iterable[str | None] = (),
    is_duplicate: Callable[[str], bool] = lambda _: False,
) -> Iterator[None]:
    """Run the block; a ccxt exception leaves it as the broker error of ``ERROR_TABLE``
    (``raise ... from`` the original, whose text carries no credentials either)."""
    try:
        yield
    except ccxt.BaseError as exc:
        raise translate(exc, action, secrets=secrets, is_duplicate=is_duplicate) from exc
