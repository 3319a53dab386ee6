"""The one async protocol every broker implements (paper, ccxt, future venues)."""

from __future__ import annotations

import abc

from brokers.base.types import AccountInfo, Order, OrderResult, Position


class BaseBroker(abc.ABC):
    """An execution venue. All methods are coroutines; errors are ``BrokerError``s.

    ``name`` identifies the venue account in the ledger (orders are unique per
    (venue, client_order_id)).
    """

    name: str = "broker"
    #: Its calls wait on a network: orders of one batch are worth having in flight at
    #: once (`tasks.placement`). A venue simulated in memory answers at once: False.
    waits_on_network: bool = True

    async def __aenter__(self) -> BaseBroker:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def get_account_info(self) -> AccountInfo: ...

    @abc.abstractmethod
    async def place_order(self, order: Order) -> OrderResult:
        """Send ``order``. Raises ``InsufficientFundsError`` / ``InvalidOrderError`` when
        the venue refuses it, ``BrokerConnectionError`` / ``RateLimitError`` when a
        retry may help (look the order up by client id before re-sending)."""

    @abc.abstractmethod
    async def cancel_order(self, order_id: str, symbol: str) -> OrderResult: ...

    @abc.abstractmethod
    async def get_order_status(self, order_id: str, symbol: str) -> OrderResult: ...

    @abc.abstractmethod
    async def get_order_by_client_id(self, client_order_id: str, symbol: str) -> OrderResult | None:
        """The order bearing our client id, or None if the venue never received it."""

    @abc.abstractmethod
    async def get_positions(self) -> list[Position]: ...
