"""Venue profiles are data, checked against the ccxt classes they name, and the requests
ccxt builds from them offline (markets set by hand, nothing sent). The futures profiles
are also driven over HTTP against the emulator: tests/brokers/ccxt/test_futures.py."""

from __future__ import annotations

from typing import Any

import ccxt.async_support as ccxt
import pytest

from brokers.base import InvalidOrderError, Order, OrderType, Side
from brokers.ccxt import DERIVATIVE_PROFILES, PROFILES, CcxtBroker, profile_for
from brokers.ccxt.broker import check_leverage, order_params

OUR_CLIENT_ID = "tp-0123456789abcdef01234567-1"  # tasks/orders.py: tp-<sha256[:24]>-<leg>


def test_the_five_venues_are_described() -> None:
    assert set(PROFILES) == {"binance", "kraken", "bybit", "kucoin", "okx"}
    assert [p.exchange_id for p in PROFILES.values() if p.verified] == ["binance", "bybit"]


ALL = [(e, "spot") for e in sorted(PROFILES)] + sorted(DERIVATIVE_PROFILES)


@pytest.mark.parametrize(("exchange_id", "market_type"), ALL, ids=[f"{e}-{t}" for e, t in ALL])
def test_each_profile_builds_its_ccxt_class_for_its_market_type(exchange_id: str, market_type: str) -> None:
    profile = profile_for(exchange_id, market_type)
    assert profile.market_type == market_type and profile.client_order_id_param and profile.lookup_param
    exchange = CcxtBroker(exchange_id, api_key="k", secret="s", market_type=market_type)._build()  # no request
    assert isinstance(exchange, getattr(ccxt, exchange_id))
    assert exchange.options["defaultType"] == market_type and exchange.enableRateLimit


def linear_market(market_id: str = "BTCUSDT") -> dict[str, Any]:
    """A USDT-margined perpetual as ccxt describes one after load_markets."""
    return {"id": market_id, "symbol": "BTC/USDT:USDT", "base": "BTC", "quote": "USDT", "settle": "USDT",
            "baseId": "BTC", "quoteId": "USDT", "settleId": "USDT", "type": "swap", "spot": False, "margin": False,
            "swap": True, "future": False, "option": False, "active": True, "linear": True, "inverse": False,
            "contract": True, "contractSize": 1.0, "precision": {"amount": 0.001, "price": 0.1},
            "limits": {"amount": {"min": 0.001, "max": 1000}, "price": {}, "cost": {"min": 5}, "leverage": {}},
            "info": {"symbol": market_id, "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET"]}}


CLOSE = Order("BTC/USDT:USDT", Side.SELL, OrderType.MARKET, 0.01, "tp-0123456789abcdef01234567-1", reduce_only=True)


@pytest.mark.parametrize(("exchange_id", "expected"), [
    ("binance", {"symbol": "BTCUSDT", "side": "SELL", "type": "MARKET", "quantity": "0.01",
                 "newClientOrderId": CLOSE.client_order_id, "reduceOnly": True}),
    ("bybit", {"symbol": "BTCUSDT", "side": "Sell", "orderType": "Market", "category": "linear", "qty": "0.01",
               "orderLinkId": CLOSE.client_order_id, "reduceOnly": True}),
])
def test_a_reduce_only_close_on_usdt_perpetuals_is_built_as_the_venue_expects(
    exchange_id: str, expected: dict[str, Any]
) -> None:
    broker = CcxtBroker(exchange_id, api_key="k", secret="s", market_type="swap", leverage=5)
    exchange = broker._build()
    exchange.set_markets([linear_market()])
    params = order_params(broker.profile, CLOSE, action="close")
    extra = (True,) if exchange_id == "bybit" else ()  # bybit: unified trading account
    request = exchange.create_order_request(CLOSE.symbol, "market", "sell", 0.01, None, params, *extra)
    assert expected.items() <= request.items()
    assert exchange.has["setLeverage"] and broker.leverage == 5


def test_reduce_only_and_leverage_are_refused_where_they_do_not_exist() -> None:
    with pytest.raises(InvalidOrderError, match="reduce-only needs a derivatives market"):
        order_params(profile_for("binance"), CLOSE, action="close")
    with pytest.raises(ValueError, match="no leverage"):
        CcxtBroker("binance", api_key="k", secret="s", leverage=3)
    with pytest.raises(ValueError, match="leverage must be 1..100"):
        check_leverage(profile_for("bybit", "swap"), 101)
    assert check_leverage(profile_for("binance", "swap"), 125) == 125


def test_binance_takes_our_client_ids_and_okx_does_not() -> None:
    assert profile_for("binance").accepts_client_order_id(OUR_CLIENT_ID)
    assert profile_for("bybit").accepts_client_order_id(OUR_CLIENT_ID)
    assert not profile_for("okx").accepts_client_order_id(OUR_CLIENT_ID)
    assert profile_for("binance").is_duplicate('binance {"code":-2010,"msg":"Duplicate order sent."}')
    assert not profile_for("binance").is_duplicate("Account has insufficient balance for requested action.")


def test_unknown_venue_or_market_type_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="known: binance"):
        CcxtBroker("nosuchvenue", api_key="k", secret="s")
    with pytest.raises(ValueError, match=r"market type 'swap' not supported here \(supported: spot\)"):
        CcxtBroker("okx", api_key="k", secret="s", market_type="swap")
    with pytest.raises(ValueError, match=r"market type 'future'.*supported: spot, swap"):
        CcxtBroker("binance", api_key="k", secret="s", market_type="future")
