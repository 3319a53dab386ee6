"""Domain types shared by every broker. Immutable; money is float (rounded at order
creation to the venue's precision) and the ledger stores it as Numeric."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum


class Side(str, Enum):
    BUY = "buy"
    SELL = "sell"


class OrderType(str, Enum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"


class TimeInForce(str, Enum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"


class OrderStatus(str, Enum):
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED}
)


@dataclass(frozen=True)
class Order:
    """An order as we send it. ``client_order_id`` is ours and deterministic (derived
    from the signal id), so a retried placement can be looked up before it is re-sent."""

    symbol: str
    side: Side
    order_type: OrderType
    quantity: float
    client_order_id: str
    price: float | None = None  # limit price (LIMIT, STOP_LIMIT)
    stop_price: float | None = None  # trigger (STOP, STOP_LIMIT)
    time_in_force: TimeInForce = TimeInForce.GTC
    placed_at: datetime | None = None  # when the order was sent (simulated time in replay)
    reduce_only: bool = False  # derivatives: may only reduce a position, never open or grow one

    def __post_init__(self) -> None:
        if not self.quantity > 0:
            raise ValueError(f"order {self.client_order_id}: quantity must be > 0, got {self.quantity}")
        if self.order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT) and not (self.price or 0) > 0:
            raise ValueError(f"order {self.client_order_id}: {self.order_type.value} needs a price > 0")
        if self.order_type in (OrderType.STOP, OrderType.STOP_LIMIT) and not (self.stop_price or 0) > 0:
            raise ValueError(f"order {self.client_order_id}: {self.order_type.value} needs a stop_price > 0")


@dataclass(frozen=True)
class Fill:
    """One execution against an order."""

    order_id: str
    client_order_id: str
    symbol: str
    side: Side
    quantity: float
    price: float
    fee: float
    fee_currency: str
    timestamp: datetime
    is_maker: bool = False
    reference_price: float | None = None  # the model's price before slippage
    trade_id: str | None = None  # the venue's execution id (None: derived from order id and sequence)
    slippage_bps: float | None = None  # price vs reference_price in bps, + = against us (None: unknown)


@dataclass(frozen=True)
class OrderResult:
    """What the broker says about an order now. ``executed_price`` is the average."""

    order_id: str
    client_order_id: str
    status: OrderStatus
    executed_quantity: float
    executed_price: float | None
    timestamp: datetime
    fees: float = 0.0
    fee_currency: str | None = None
    reason: str | None = None  # why REJECTED / CANCELED / EXPIRED, in the broker's words
    fills: tuple[Fill, ...] = ()


@dataclass(frozen=True)
class Position:
    symbol: str
    quantity: float
    average_price: float
    market_price: float | None = None
    realized_pnl: float = 0.0

    @property
    def market_value(self) -> float:
        return self.quantity * (self.market_price if self.market_price is not None else self.average_price)

    @property
    def unrealized_pnl(self) -> float:
        if self.market_price is None:
            return 0.0
        return self.quantity * (self.market_price - self.average_price)


@dataclass(frozen=True)
class AccountInfo:
    """Balances per currency (free + locked), and equity in the quote currency."""

    balances: dict[str, float]
    equity: float
    quote_currency: str
    locked: dict[str, float] = field(default_factory=dict)

    def free(self, currency: str) -> float:
        return self.balances.get(currency, 0.0) - self.locked.get(currency, 0.0)


@dataclass(frozen=True)
class MarketLimits:
    """One market's trading rules as the venue publishes them (ccxt: ``load_markets``):
    quantity and price steps (None: not published), minimum and maximum quantity, and
    minimum notional (quantity x price, in the quote currency). Step 4 checks orders
    against them before anything is sent."""

    symbol: str
    amount_step: float | None = None
    price_step: float | None = None
    min_amount: float = 0.0
    max_amount: float | None = None
    min_notional: float = 0.0
