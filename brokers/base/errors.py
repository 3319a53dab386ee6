"""Broker errors.

    BrokerError                     anything a broker refused or could not do
    ├── BrokerConnectionError       retryable: network down, timeout, 5xx
    ├── RateLimitError              retryable: slow down, then try again
    ├── InsufficientFundsError      not retryable: the account cannot pay / has nothing to sell
    ├── InvalidOrderError           not retryable: the venue refuses the order as specified
    └── OrderNotFoundError          not retryable: the venue does not know this order id

Each error carries the broker's own message (``broker_message``) and, where known,
the order it concerns, so that an operator reading the ledger knows what to fix.
"""

from __future__ import annotations


class BrokerError(Exception):
    """Base of every broker failure. ``retryable`` says whether trying again can help."""

    retryable: bool = False

    def __init__(self, message: str, *, broker_message: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.broker_message = broker_message if broker_message is not None else message


class BrokerConnectionError(BrokerError):
    """The broker could not be reached or did not answer. Retry with backoff; if it
    persists, check the network and the venue's status page."""

    retryable = True


class RateLimitError(BrokerError):
    """The venue asked us to slow down. Retry after a backoff; lower the request rate
    if it keeps happening."""

    retryable = True


class InsufficientFundsError(BrokerError):
    """The account cannot pay for this buy, or holds less than this sell. Not retried:
    fund the account or reduce the size."""


class InvalidOrderError(BrokerError):
    """The venue refused the order as specified (bad price, size, symbol or type).
    Not retried: fix the order."""


class OrderNotFoundError(BrokerError):
    """The venue does not know this order. Not retried: reconcile the ledger."""


def is_retryable(exc: BaseException) -> bool:
    """True for the broker errors that a retry can fix (connection, rate limit)."""
    return isinstance(exc, BrokerError) and exc.retryable
