"""Domain types, the async broker protocol and the broker error hierarchy."""

from brokers.base.errors import (
    BrokerConnectionError,
    BrokerError,
    InsufficientFundsError,
    InvalidOrderError,
    OrderNotFoundError,
    RateLimitError,
    is_retryable,
)
from brokers.base.protocol import BaseBroker
from brokers.base.types import (
    AccountInfo,
    Fill,
    MarketLimits,
    Order,
    OrderResult,
    OrderStatus,
    OrderType,
    Position,
    Side,
    TimeInForce,
)

__all__ = [
    "AccountInfo",
    "BaseBroker",
    "BrokerConnectionError",
    "BrokerError",
    "Fill",
    "MarketLimits",
    "InsufficientFundsError",
    "InvalidOrderError",
    "Order",
    "OrderNotFoundError",
    "OrderResult",
    "OrderStatus",
    "OrderType",
    "Position",
    "RateLimitError",
    "Side",
    "TimeInForce",
    "is_retryable",
]
