"""Unmodified ccxt clients, configured as DESIGN.md says, trade on the emulator: binance, and
bybit (v5 spot, unified account) against the second dialect."""

from __future__ import annotations

import ccxt.async_support as ccxt
import pytest

from brokers.ccxt import rebase_api_urls
from brokers.emulator import EmulatorHandle
from tests.brokers.ccxt.conftest import API_KEY, BINANCE_OPTIONS, SECRET, SYMBOL

pytestmark = pytest.mark.anyio


def stock_binance(base_url: str, api_key: str = API_KEY, secret: str = SECRET) -> ccxt.binance:
    """The snippet a user needs (README): options, then urls['api'] pointed at the emulator."""
    exchange = ccxt.binance({"apiKey": api_key, "secret": secret, "options": BINANCE_OPTIONS})
    exchange.urls["api"] = {k: v.replace("https://api.binance.com", base_url)
                            for k, v in exchange.urls["api"].items()}
    return exchange


@pytest.mark.parametrize("venue", ["binance"])
async def test_stock_client_trades_on_the_emulator(emulator: EmulatorHandle) -> None:
    exchange = stock_binance(emulator.base_url)
    try:
        markets = await exchange.load_markets()
        assert list(markets) == [SYMBOL]
        assert markets[SYMBOL]["precision"]["amount"] == 0.001
        assert markets[SYMBOL]["limits"]["cost"]["min"] == 0.001

        balance = await exchange.fetch_balance()
        assert balance["total"] == {"BTC": 10.0, "ETH": 5.0}

        ticker = await exchange.fetch_ticker(SYMBOL)
        assert ticker["last"] == float(emulator.engine.price(SYMBOL))

        bought = await exchange.create_order(SYMBOL, "market", "buy", 1.0, None, {"newClientOrderId": "stock-1"})
        assert (bought["status"], bought["clientOrderId"], bought["filled"]) == ("closed", "stock-1", 1.0)
        assert bought["trades"][0]["id"]

        resting = await exchange.create_order(SYMBOL, "limit", "buy", 2.0, 0.05, {"newClientOrderId": "stock-2"})
        assert resting["status"] == "open"
        found = await exchange.fetch_order(None, SYMBOL, {"origClientOrderId": "stock-2"})
        assert found["id"] == resting["id"]
        assert (await exchange.fetch_order(resting["id"], SYMBOL))["clientOrderId"] == "stock-2"
        assert [o["id"] for o in await exchange.fetch_open_orders(SYMBOL)] == [resting["id"]]
        assert (await exchange.fetch_balance())["used"]["BTC"] == pytest.approx(2.0 * 0.05 * 1.001)

        canceled = await exchange.cancel_order(resting["id"], SYMBOL)
        assert canceled["status"] == "canceled"
        assert await exchange.fetch_open_orders(SYMBOL) == []

        trades = await exchange.fetch_my_trades(SYMBOL)
        assert [(t["order"], t["side"], t["amount"]) for t in trades] == [(bought["id"], "buy", 1.0)]
        with pytest.raises(ccxt.OrderNotFound):
            await exchange.fetch_order(None, SYMBOL, {"origClientOrderId": "never-sent"})
    finally:
        await exchange.close()


@pytest.mark.parametrize("venue", ["binance"])
@pytest.mark.parametrize(("api_key", "secret"), [(API_KEY, "wrong-secret"), ("wrong-key", SECRET)],
                         ids=["wrong-secret", "wrong-key"])
async def test_wrong_credentials_raise_authentication_error(
    emulator: EmulatorHandle, api_key: str, secret: str
) -> None:
    exchange = stock_binance(emulator.base_url, api_key, secret)
    try:
        await exchange.load_markets()  # public: works
        with pytest.raises(ccxt.AuthenticationError):
            await exchange.fetch_balance()
        with pytest.raises(ccxt.AuthenticationError):
            await exchange.create_order(SYMBOL, "market", "buy", 1.0)
    finally:
        await exchange.close()
    assert emulator.engine.orders == {}


def test_rebase_api_urls_keeps_paths() -> None:
    api = {"public": "https://api.binance.com/api/v3", "nested": {"x": "https://fapi.binance.com/fapi/v1"},
           "template": "https://api.{hostname}/v5"}
    assert rebase_api_urls(api, "http://127.0.0.1:9") == {
        "public": "http://127.0.0.1:9/api/v3", "nested": {"x": "http://127.0.0.1:9/fapi/v1"},
        "template": "http://127.0.0.1:9/v5"}


BYBIT_OPTIONS = {"defaultType": "spot", "fetchMarkets": {"types": ["spot"]}, "enableUnifiedAccount": True,
                 "enableUnifiedMargin": False, "fetchOrder": {"acknowledged": True}}


def stock_bybit(base_url: str, api_key: str = API_KEY, secret: str = SECRET) -> ccxt.bybit:
    exchange = ccxt.bybit({"apiKey": api_key, "secret": secret, "options": BYBIT_OPTIONS,
                           "has": {"fetchCurrencies": False}})
    exchange.urls["api"] = rebase_api_urls(exchange.urls["api"], base_url)
    return exchange


@pytest.mark.parametrize("venue", ["bybit"])
async def test_stock_bybit_client_trades_on_the_bybit_dialect(emulator: EmulatorHandle) -> None:
    exchange = stock_bybit(emulator.base_url)
    try:
        markets = await exchange.load_markets()
        assert list(markets) == [SYMBOL]
        assert (markets[SYMBOL]["precision"]["amount"], markets[SYMBOL]["limits"]["cost"]["min"]) == (0.001, 0.001)
        assert (await exchange.fetch_balance())["total"] == {"BTC": 10.0, "ETH": 5.0}
        assert (await exchange.fetch_ticker(SYMBOL))["last"] == float(emulator.engine.price(SYMBOL))

        bought = await exchange.create_order(SYMBOL, "market", "buy", 1.0, None, {"orderLinkId": "stock-1"})
        assert bought["clientOrderId"] == "stock-1" and bought["status"] is None  # Bybit acknowledges only
        fetched = await exchange.fetch_order(bought["id"], SYMBOL)
        assert (fetched["status"], fetched["filled"], fetched["clientOrderId"]) == ("closed", 1.0, "stock-1")

        resting = await exchange.create_order(SYMBOL, "limit", "buy", 2.0, 0.05, {"orderLinkId": "stock-2"})
        by_link = await exchange.fetch_open_orders(SYMBOL, None, None, {"orderLinkId": "stock-1"})
        assert [o["id"] for o in by_link] == [bought["id"]]  # any recent order, by its link id
        assert [o["id"] for o in await exchange.fetch_open_orders(SYMBOL)] == [resting["id"]]
        await exchange.cancel_order(resting["id"], SYMBOL)
        assert (await exchange.fetch_order(resting["id"], SYMBOL))["status"] == "canceled"

        [trade] = await exchange.fetch_my_trades(SYMBOL)
        assert (trade["order"], trade["side"], trade["amount"]) == (bought["id"], "buy", 1.0)
        with pytest.raises(ccxt.InsufficientFunds):
            await exchange.create_order(SYMBOL, "market", "buy", 500.0, None, {"orderLinkId": "stock-3"})
        with pytest.raises(ccxt.OrderNotFound):
            await exchange.fetch_order("999", SYMBOL)
    finally:
        await exchange.close()
    wrong = stock_bybit(emulator.base_url, secret="wrong-secret")
    try:
        await wrong.load_markets()  # public: works
        with pytest.raises(ccxt.AuthenticationError):
            await wrong.fetch_balance()
    finally:
        await wrong.close()
