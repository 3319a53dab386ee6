"""An exchange emulator on 127.0.0.1: the real ccxt client trades against it over real
HTTP with real request signing. ``engine`` matches orders against a replayed OHLCV
path, ``futures`` a USDT-margined futures account over the same matching (positions,
leverage, margin); ``app`` speaks a venue's REST dialect (Binance spot; ``binance_futures``:
Binance USDⓈ-M ``/fapi``; ``bybit``: Bybit v5 spot and linear; what they share:
``dialect``); ``faults`` injects
faults (latency, 5xx, 429, IP ban, lost answers, dropped connections: its docstring lists
the ``engine.faults`` keys); ``server`` runs it in a background thread."""

from brokers.emulator.engine import Engine, MarketSpec, VenueError
from brokers.emulator.server import EmulatorHandle, serve

__all__ = ["EmulatorHandle", "Engine", "MarketSpec", "VenueError", "serve"]
