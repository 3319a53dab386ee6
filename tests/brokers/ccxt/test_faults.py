"""Every emulator fault under a placement, through the real ccxt client: the error each
raises (retryable or not), and, retried as step 5 retries (look up by client id, then
place), exactly one order in the emulator's own book."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from brokers.base import (
    BrokerConnectionError,
    BrokerError,
    InvalidOrderError,
    Order,
    OrderResult,
    OrderStatus,
    OrderType,
    RateLimitError,
    Side,
)
from brokers.ccxt import CcxtBroker, VenueBannedError
from brokers.emulator import EmulatorHandle
from tasks.placement import place_one
from tasks.prefect_tasks import RETRY_DELAYS
from tests.brokers.ccxt.conftest import SYMBOL

pytestmark = pytest.mark.anyio
PLACE = {"binance": "POST /api/v3/order", "bybit": "POST /v5/order/create"}  # each dialect's order placement
ON_ORDERS = {"fault_on": "<placement>"}
RECEIVED_FEE = {"binance": 0.0, "bybit": 0.001}  # Bybit charges the bought ETH
# Bybit's ban is HTTP 403, which ccxt raises as RateLimitExceeded (Binance's 418 as DDoSProtection)
BAN_ERROR = {"binance": VenueBannedError, "bybit": RateLimitError}


async def place_retrying(broker: CcxtBroker, order: Order) -> tuple[OrderResult, list[BrokerError]]:
    """Step 5's placement with the Prefect task's retry policy: retryable errors are
    retried after 0.5 / 1 / 2 s, each attempt looking the client id up first."""
    errors: list[BrokerError] = []
    ctx = SimpleNamespace(broker=broker, sent_client_ids=set())  # what place_one reads of the context
    for delay in [*RETRY_DELAYS, None]:
        try:
            return await place_one(ctx, order), errors  # type: ignore[arg-type]
        except BrokerError as exc:
            errors.append(exc)
            if not exc.retryable or delay is None:
                raise
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    ("faults", "first_error", "executed_by_the_fault"),
    [
        ({"fail_next": 1, **ON_ORDERS}, BrokerConnectionError, False),
        ({"lose_next": 1, **ON_ORDERS}, BrokerConnectionError, True),
        ({"rate_limit_next": 1, **ON_ORDERS}, RateLimitError, False),
        ({"drop_next": 1, **ON_ORDERS}, BrokerConnectionError, True),
        ({"drop_mid_response_next": 1, **ON_ORDERS}, BrokerConnectionError, True),
        ({"ban_s": 1.0}, VenueBannedError, False),
        ({"rate_limit_next": 1, "retry_after_s": 1, "ban_on_abuse_s": 1.0, **ON_ORDERS}, RateLimitError, False),
    ],
    ids=["503", "lost-answer", "429", "dropped", "dropped-mid-answer", "ip-ban", "429-then-ban"],
)
async def test_each_fault_ends_in_exactly_one_order(
    broker: CcxtBroker, emulator: EmulatorHandle, venue: str, faults: dict[str, Any], first_error: type,
    executed_by_the_fault: bool,
) -> None:
    emulator.engine.faults.update({k: PLACE[venue] if v == "<placement>" else v for k, v in faults.items()})
    if first_error is VenueBannedError:
        first_error = BAN_ERROR[venue]
    market = Order(SYMBOL, Side.BUY, OrderType.MARKET, 1.0, "tp-fault-1")

    result, errors = await place_retrying(broker, market)

    assert type(errors[0]) is first_error and errors[0].retryable
    assert "tp-fault-1" in str(errors[0]) or "ban_s" in faults
    assert result.status is OrderStatus.FILLED and result.client_order_id == "tp-fault-1"
    [order] = emulator.engine.orders.values()
    assert order.client_order_id == "tp-fault-1" and str(order.order_id) == result.order_id
    if executed_by_the_fault:  # found by client id on the retry: never sent twice
        sent = [f"{m} {p}" for _, m, p in emulator.engine.requests if m == "POST"]
        assert sent == [PLACE[venue]]
    assert (await broker.get_account_info()).balances["ETH"] == pytest.approx(6.0 - RECEIVED_FEE[venue])


@pytest.mark.parametrize("venue", ["binance"])
async def test_a_ban_says_until_when(broker: CcxtBroker, emulator: EmulatorHandle) -> None:
    emulator.engine.faults["ban_s"] = 30
    with pytest.raises(VenueBannedError) as caught:
        await broker.get_account_info()
    until = caught.value.banned_until
    assert until is not None and round(until.timestamp() * 1000) == emulator.engine.faults["banned_until_ms"]
    assert "banned until" in str(caught.value) and caught.value.retryable
    emulator.engine.faults["banned_until_ms"] = 0


@pytest.mark.parametrize("venue", ["binance"])
async def test_a_dropped_cancel_is_replayed_by_the_http_client_and_the_order_ends_canceled(
    broker: CcxtBroker, emulator: EmulatorHandle
) -> None:
    """aiohttp sends an idempotent request (DELETE) once more when a kept-alive
    connection closes without an answer: the venue sees the cancel twice, the second
    answers "unknown order", and the broker reports the order's terminal state as the
    reason it cannot cancel (as for any cancel of a terminal order)."""
    resting = await broker.place_order(Order(SYMBOL, Side.BUY, OrderType.LIMIT, 1.0, "tp-fault-2", price=0.09))
    emulator.engine.faults.update(drop_next=1, fault_on="DELETE /api/v3/order")
    with pytest.raises(InvalidOrderError, match="it is CANCELED"):
        await broker.cancel_order(resting.order_id, SYMBOL)
    assert [m for _, m, p in emulator.engine.requests if p == "/api/v3/order"].count("DELETE") == 2
    assert (await broker.get_order_status(resting.order_id, SYMBOL)).status is OrderStatus.CANCELED
    assert len(emulator.engine.orders) == 1
