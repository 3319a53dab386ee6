"""A venue's "server busy" that ccxt raises as a plain ExchangeError (Bybit retCode 10016,
answered with HTTP 200) is retried like a 5xx, and a placement under it ends in exactly
one order, whether or not the busy request was executed."""

from __future__ import annotations

import ccxt
import pytest

from brokers.base import BrokerConnectionError, BrokerError, Order, OrderStatus, OrderType, Side
from brokers.ccxt import CcxtBroker, profile_for
from brokers.ccxt.errors import translate
from brokers.emulator import EmulatorHandle
from tests.brokers.ccxt.conftest import SYMBOL
from tests.brokers.ccxt.test_faults import place_retrying

pytestmark = pytest.mark.anyio
BUSY = 'bybit {"retCode":10016,"retMsg":"System error. Please try again later.","result":{},"retExtInfo":{},"time":1}'


def test_ccxt_raises_bybit_10016_as_a_plain_exchange_error_and_we_retry_it() -> None:
    # ccxt's own table: 10016 is an ExchangeError (neither a NetworkError nor retried by ccxt)
    assert ccxt.bybit().exceptions["exact"]["10016"] is ccxt.ExchangeError
    bybit = profile_for("bybit")
    mapped = translate(ccxt.ExchangeError(BUSY), "place buy 1.0 ETH/BTC, order tp-1",
                       is_duplicate=bybit.is_duplicate, is_busy=bybit.is_busy)
    assert type(mapped) is BrokerConnectionError and mapped.retryable
    assert "look the order up by client id" in str(mapped) and "System error" in str(mapped)
    # without the profile's words, or another ExchangeError, it stays final
    assert type(translate(ccxt.ExchangeError(BUSY), "x")) is BrokerError
    other = translate(ccxt.ExchangeError('bybit {"retCode":10024,"retMsg":"compliance rules"}'), "x",
                      is_busy=bybit.is_busy)
    assert type(other) is BrokerError and not other.retryable


@pytest.mark.parametrize("venue", ["bybit"])
@pytest.mark.parametrize("executed", [False, True], ids=["not-executed", "executed"])
async def test_a_placement_under_10016_ends_in_exactly_one_order(
    broker: CcxtBroker, emulator: EmulatorHandle, executed: bool
) -> None:
    emulator.engine.faults.update(busy_next=1, busy_executes=executed, fault_on="POST /v5/order/create")
    market = Order(SYMBOL, Side.BUY, OrderType.MARKET, 1.0, "tp-busy-1")

    result, errors = await place_retrying(broker, market)

    assert [type(e) for e in errors] == [BrokerConnectionError] and "10016" in str(errors[0])
    assert result.status is OrderStatus.FILLED and result.client_order_id == "tp-busy-1"
    [order] = emulator.engine.orders.values()
    assert order.client_order_id == "tp-busy-1" and str(order.order_id) == result.order_id
    posts = [p for _, m, p in emulator.engine.requests if m == "POST"]
    assert posts == ["/v5/order/create"] * (1 if executed else 2)  # executed: found by client id, not re-sent
