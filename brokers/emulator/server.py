"""Run the emulator: uvicorn in a background thread on 127.0.0.1, on a free port.

    handle = serve(api_key="k", secret="s", bars={"ETH/BTC": frame}, balances={"BTC": 10})
    handle.base_url      # http://127.0.0.1:<port>, the prefix of every API path
    handle.engine        # the Engine: balances, orders, faults, advance(), set_price()
    handle.stop()        # or use the handle as a context manager
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import pandas as pd
import uvicorn

from brokers.emulator.app import create_app
from brokers.emulator.engine import Engine, MarketSpec
from brokers.emulator.futures import FuturesEngine

# each venue's leverage for a symbol never set, and its highest (USDT perpetuals)
DEFAULT_LEVERAGE = {"binance": 20, "bybit": 10}
MAX_LEVERAGE = {"binance": 125, "bybit": 100}

HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0


class EmulatorHandle:
    """A running emulator. ``stop()`` shuts the server down and joins its thread."""

    def __init__(self, engine: Engine, server: uvicorn.Server, thread: threading.Thread, port: int) -> None:
        self.engine = engine
        self.port = port
        self.base_url = f"http://{HOST}:{port}"
        self._server = server
        self._thread = thread

    def stop(self, timeout: float = 5.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout)

    def __enter__(self) -> EmulatorHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmulatorHandle({self.base_url})"


def serve(
    venue: str = "binance",
    *,
    api_key: str,
    secret: str,
    bars: Mapping[str, pd.DataFrame],
    balances: Mapping[str, float | str | Decimal],
    port: int = 0,
    specs: Iterable[MarketSpec] = (),
    maker_fee: float = 0.001,
    taker_fee: float = 0.001,
    liquidity_fraction: float | None = 1.0,
    commission: str = "quote",
    log_level: str = "warning",
    market_type: str = "spot",
    default_leverage: int | None = None,
) -> EmulatorHandle:
    """Start an emulated ``venue`` on 127.0.0.1:``port`` (0: a free port) trading
    ``bars`` (unified symbol -> OHLCV frame) for one account holding ``balances``,
    accepting only ``api_key`` signed with ``secret``. Returns once it answers.

    ``market_type="swap"``: a USDT-margined perpetual futures account instead of a spot
    one (``brokers.emulator.futures``; Binance ``/fapi``, Bybit category linear), each
    symbol at ``default_leverage`` until set (default: the venue's, 20 / 10); fees are
    then always charged in the quote currency."""
    settings: dict[str, Any] = {"specs": specs, "maker_fee": maker_fee, "taker_fee": taker_fee,
                                "liquidity_fraction": liquidity_fraction}
    if market_type == "spot":
        engine: Engine = Engine(bars, balances, commission=commission, **settings)
    elif market_type == "swap":
        leverage = default_leverage or DEFAULT_LEVERAGE.get(venue, 20)
        engine = FuturesEngine(bars, balances, default_leverage=leverage,
                               max_leverage=MAX_LEVERAGE.get(venue, 125), **settings)
    else:
        raise ValueError(f"market_type must be 'spot' or 'swap', got {market_type!r}")
    app = create_app(engine, api_key=api_key, secret=secret, venue=venue)
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP,
    # and without it every answer waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        loop="asyncio",
        timeout_keep_alive=30,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"emulator-{venue}-{bound_port}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"the {venue} emulator did not start on {HOST}:{bound_port}")
        time.sleep(0.005)
    return EmulatorHandle(engine, server, thread, bound_port)

