"""Unmodified ccxt futures clients trade on the emulator's futures account: ccxt's own
``binanceusdm`` class and ``binance`` with ``defaultType`` future (both ``/fapi``), and
``bybit`` on category linear, each with only ``urls['api']`` pointed at the emulator."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import ccxt.async_support as ccxt
import pytest

from brokers.ccxt import rebase_api_urls
from brokers.emulator import EmulatorHandle, serve
from tests.brokers.ccxt.conftest import API_KEY, SECRET
from tests.brokers.ccxt.test_futures import ENGINE_SYMBOL, SPEC, SYMBOL, flat_bars

pytestmark = pytest.mark.anyio
# id -> (emulated venue, ccxt class, settings): no currencies (a wallet endpoint the emulator lacks)
CLIENTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "binanceusdm": ("binance", "binanceusdm", {"options": {"fetchCurrencies": False}}),
    "binance-future": ("binance", "binance", {"options": {"defaultType": "future", "fetchCurrencies": False,
                                                          "fetchMarkets": {"types": ["linear"]}}}),
    "bybit-linear": ("bybit", "bybit", {"options": {"defaultType": "swap", "defaultSubType": "linear",
                                                    "fetchMarkets": {"types": ["linear"]},
                                                    "enableUnifiedAccount": True, "enableUnifiedMargin": False},
                                        "has": {"fetchCurrencies": False}}),
}


@pytest.fixture(params=list(CLIENTS))
def client(request: pytest.FixtureRequest) -> Iterator[tuple[str, EmulatorHandle, Any]]:
    venue, class_name, settings = CLIENTS[request.param]
    with serve(venue, api_key=API_KEY, secret=SECRET, bars={ENGINE_SYMBOL: flat_bars()}, balances={"USDT": 1000},
               specs=[SPEC], market_type="swap") as handle:
        exchange = getattr(ccxt, class_name)({"apiKey": API_KEY, "secret": SECRET, **settings})
        exchange.urls["api"] = rebase_api_urls(exchange.urls["api"], handle.base_url)
        yield venue, handle, exchange


async def test_a_stock_futures_client_opens_and_closes_a_short(client: tuple[str, EmulatorHandle, Any]) -> None:
    venue, handle, exchange = client
    try:
        markets = await exchange.load_markets()
        assert list(markets) == [SYMBOL] and markets[SYMBOL]["swap"] and markets[SYMBOL]["linear"]
        await exchange.set_leverage(4, SYMBOL)
        assert handle.engine.leverage(ENGINE_SYMBOL) == 4  # type: ignore[attr-defined]

        link = "orderLinkId" if venue == "bybit" else "newClientOrderId"
        sold = await exchange.create_order(SYMBOL, "market", "sell", 3.0, None, {link: "stock-f-1"})
        [position] = await exchange.fetch_positions([SYMBOL])
        assert (position["side"], position["contracts"], position["entryPrice"]) == ("short", 3.0, 100.0)
        balance = await exchange.fetch_balance()
        assert balance["used"]["USDT"] == pytest.approx(300 / 4)  # the position's margin

        resting = await exchange.create_order(SYMBOL, "limit", "buy", 1.0, 90.0, {link: "stock-f-2",
                                                                                 "reduceOnly": True})
        assert [o["id"] for o in await exchange.fetch_open_orders(SYMBOL)] == [resting["id"]]
        await exchange.cancel_order(resting["id"], SYMBOL)
        assert await exchange.fetch_open_orders(SYMBOL) == []
        if venue == "binance":  # DELETE /fapi/v1/allOpenOrders
            await exchange.create_order(SYMBOL, "limit", "sell", 1.0, 120.0, {link: "stock-f-5"})
            await exchange.cancel_all_orders(SYMBOL)
            assert await exchange.fetch_open_orders(SYMBOL) == []

        with pytest.raises(ccxt.ExchangeError, match="[Rr]educe"):  # would open a long
            await exchange.create_order(SYMBOL, "market", "buy", 4.0, None, {link: "stock-f-3", "reduceOnly": True})
        await exchange.create_order(SYMBOL, "market", "buy", 3.0, None, {link: "stock-f-4", "reduceOnly": True})
        assert [p["contracts"] for p in await exchange.fetch_positions([SYMBOL]) if p["contracts"]] == []
        trades = await exchange.fetch_my_trades(SYMBOL)
        assert sorted((t["side"], t["amount"]) for t in trades) == [("buy", 3.0), ("sell", 3.0)]
        assert sold["id"] in {t["order"] for t in trades}
    finally:
        await exchange.close()
