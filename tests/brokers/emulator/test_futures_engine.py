"""The futures engine's money, checked by hand: margin = notional / leverage, fees in the
quote currency, realised profit on closing, shorts, flips through zero, reduce-only, and
an order cut to the margin left; and the CLI serving a futures account."""

from __future__ import annotations

import threading
import urllib.request
from decimal import Decimal as D

import pandas as pd
import pytest

from brokers.base.types import Side
from brokers.emulator import MarketSpec, VenueError
from brokers.emulator.futures import FuturesEngine
from tradpal.cli import build_parser, main
from tradpal.emulator_cli import cmd_exchange_emulator

SYMBOL = "BTC/USDT"
SPEC = MarketSpec(SYMBOL, tick_size="0.1", step_size="0.001", min_qty="0.001", max_qty="1000")


def engine(usdt: str = "1000", volume: float = 1000.0, **kw) -> FuturesEngine:
    ts = pd.date_range("2024-01-01", periods=5, freq="1min", tz="UTC")
    bars = pd.DataFrame({"timestamp": ts, "open": 100.0, "high": 101.0, "low": 99.0, "close": 100.0,
                         "volume": volume})
    return FuturesEngine({SYMBOL: bars}, {"USDT": usdt}, specs=[SPEC], taker_fee=0.0005, maker_fee=0.0002, **kw)


def test_a_long_locks_its_margin_and_closing_it_realises_the_profit() -> None:
    e = engine()
    e.set_leverage(SYMBOL, 5)
    e.place(SYMBOL, Side.BUY, "MARKET", D("10"), client_order_id="a")
    pos = e.position(SYMBOL)
    assert (pos.qty, pos.entry, pos.margin) == (D(10), D(100), D(200))
    assert e.free("USDT") == D("799.5") and e.locked("USDT") == D(200)  # 0.5 of fee
    e.set_price(SYMBOL, 110)
    assert e.unrealized(SYMBOL) == D(100) and e.wallet() == D("999.5")
    e.place(SYMBOL, Side.SELL, "MARKET", D("15"), client_order_id="b")  # close 10, open a short of 5
    pos = e.position(SYMBOL)
    assert (pos.qty, pos.entry, pos.margin, pos.realized) == (D(-5), D(110), D(110), D(100))
    assert e.wallet() == D("999.5") + 100 - D("0.825")
    [_, flip] = e.trades
    assert flip.realized_pnl == D(100) and flip.commission == D("0.825")


def test_reduce_only_is_checked_at_placement_and_cut_at_the_fill() -> None:
    e = engine()
    with pytest.raises(VenueError, match="-2022 ReduceOnly Order is rejected"):
        e.place(SYMBOL, Side.SELL, "MARKET", D(1), client_order_id="flat", reduce_only=True)
    e.place(SYMBOL, Side.SELL, "MARKET", D(2), client_order_id="short")
    resting = e.place(SYMBOL, Side.BUY, "LIMIT", D(2), client_order_id="cover", price=D(95), reduce_only=True)
    assert resting.reserved == (D(2) * 95 * D("0.0005")).quantize(D("0.00000001"))  # its fee only: no margin
    e.place(SYMBOL, Side.BUY, "MARKET", D("1.5"), client_order_id="part")  # the short is now 0.5
    e.set_price(SYMBOL, 95)
    assert resting.executed == D("0.5") and e.position(SYMBOL).qty == 0  # cut to what was left, never long
    with pytest.raises(VenueError, match="-2022"):
        e.place(SYMBOL, Side.BUY, "MARKET", D(1), client_order_id="again", reduce_only=True)


def test_an_order_beyond_the_margin_is_refused_and_a_fill_is_cut_to_it() -> None:
    e = engine(usdt="100")  # 20x default: 2000 of notional
    with pytest.raises(VenueError, match="-2019 Margin is insufficient"):
        e.place(SYMBOL, Side.BUY, "MARKET", D(20), client_order_id="big")
    assert not e.orders and e.free("USDT") == D(100)
    resting = e.place(SYMBOL, Side.BUY, "LIMIT", D(19), client_order_id="lim", price=D(100))
    assert resting.status == "FILLED"
    e2 = engine(usdt="100")
    sell = e2.place(SYMBOL, Side.SELL, "LIMIT", D(15), client_order_id="s", price=D(105))  # rests
    e2.deposit("USDT", -20)  # the account shrinks under the resting order (a withdrawal)
    e2.set_price(SYMBOL, 106)
    assert D(0) < sell.executed < D(15) and e2.free("USDT") >= 0  # filled only as far as the margin goes


def test_spot_refuses_reduce_only() -> None:
    from brokers.emulator import Engine

    ts = pd.date_range("2024-01-01", periods=2, freq="1min", tz="UTC")
    bars = pd.DataFrame({"timestamp": ts, "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 10.0})
    spot = Engine({"ETH/BTC": bars}, {"BTC": 1})
    with pytest.raises(VenueError, match="-1106"):
        spot.place("ETH/BTC", Side.SELL, "MARKET", D(1), client_order_id="x", reduce_only=True)


def test_the_cli_serves_a_futures_account(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    csv = tmp_path / "btc.csv"
    ts = pd.date_range("2024-01-01", periods=5, freq="1min", tz="UTC")
    pd.DataFrame({"timestamp": ts, "open": 100.0, "high": 101.0, "low": 99.0, "close": 100.0,
                  "volume": 10.0}).to_csv(csv, index=False)
    assert main(["exchange-emulator", "--api-key", "k", "--secret", "s", "--ohlcv", f"BTC/USDT={csv}",
                 "--leverage", "5"]) == 2
    assert "--leverage 5: needs --market-type swap" in capsys.readouterr().err
    args = build_parser().parse_args(["exchange-emulator", "--api-key", "k", "--secret", "s", "--port", "0",
                                      "--market-type", "swap", "--leverage", "3", "--ohlcv", f"BTC/USDT={csv}",
                                      "--balance", "USDT=500"])
    stop = threading.Event()
    done: list[int] = []
    thread = threading.Thread(target=lambda: done.append(cmd_exchange_emulator(args, stop)))
    thread.start()
    try:
        out = ""
        for _ in range(200):
            out += capsys.readouterr().out
            if "http://" in out:
                break
            threading.Event().wait(0.05)
        assert "USDT perpetuals" in out
        url = out.split(" at ")[1].split()[0]
        with urllib.request.urlopen(f"{url}/fapi/v1/exchangeInfo", timeout=5) as answer:
            body = answer.read().decode()
        assert '"contractType":"PERPETUAL"' in body and '"symbol":"BTCUSDT"' in body
    finally:
        stop.set()
        thread.join(10)
    assert done == [0]


def test_a_market_order_beyond_the_bars_liquidity_fills_partly_and_margins_only_that() -> None:
    e = engine(volume=3.0)  # 3 BTC offered by the bar
    order = e.place(SYMBOL, Side.SELL, "MARKET", D(5), client_order_id="big")
    assert (order.status, order.executed, order.reserved) == ("EXPIRED", D(3), D(0))
    pos = e.position(SYMBOL)
    assert (pos.qty, pos.margin) == (D(-3), D(300) / 20)  # the rest released, never margined
    assert e.free("USDT") == D(1000) - D(15) - D("0.15") and e.order_margin() == 0
