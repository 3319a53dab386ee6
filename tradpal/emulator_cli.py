"""`tradpal exchange-emulator`: run the exchange emulator on 127.0.0.1 until Ctrl-C,
so a live run (TRADPAL_BROKER=ccxt, TRADPAL_EXCHANGE_URL=<printed URL>) can rehearse
against it with the real ccxt client."""

from __future__ import annotations

import argparse
import os
import threading

from tradpal.errors import InputError

SECRET_ENV = "TRADPAL_EMULATOR_SECRET"
DIALECTS = ("binance", "bybit")
MARKET_TYPES = ("spot", "swap")


def add_parser(sub) -> None:
    e = sub.add_parser("exchange-emulator", help="run the exchange emulator on 127.0.0.1 until Ctrl-C")
    e.add_argument("--venue", default="binance", help="venue dialect: binance or bybit (v5, unified account)")
    e.add_argument("--market-type", default="spot", choices=MARKET_TYPES,
                   help="spot (default), or swap: a USDT-margined perpetual futures account (Binance /fapi, "
                        "Bybit category linear; symbols BASE/USDT, balance in USDT)")
    e.add_argument("--leverage", type=int, help="swap: each symbol's leverage until set (default: the venue's)")
    e.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: a free one; default 8765)")
    e.add_argument("--api-key", required=True, help="the API key the emulator accepts")
    e.add_argument("--secret", help=f"the API secret it accepts (default: ${SECRET_ENV})")
    e.add_argument("--ohlcv", required=True, action="append", metavar="SYMBOL=FILE",
                   help="OHLCV CSV/Parquet replayed as the market of SYMBOL (repeat per symbol)")
    e.add_argument("--balance", action="append", default=[], metavar="ASSET=AMOUNT",
                   help="the account's starting balance of ASSET (repeat per asset)")


def _pairs(values: list[str], option: str) -> list[tuple[str, str]]:
    out = []
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key.strip() or not rest.strip():
            raise InputError(f"{option} {value!r}: expected KEY=VALUE")
        out.append((key.strip(), rest.strip()))
    return out


def _options(args: argparse.Namespace) -> dict:
    from tradpal.io import load_ohlcv

    secret = args.secret or os.environ.get(SECRET_ENV)
    if not secret:
        raise InputError(f"--secret: required (or set {SECRET_ENV})")
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port {args.port}: expected 0..65535")
    if args.venue not in DIALECTS:
        raise InputError(f"--venue {args.venue!r}: the emulator speaks {' and '.join(DIALECTS)}")
    bars = {symbol.upper(): load_ohlcv(path) for symbol, path in _pairs(args.ohlcv, "--ohlcv")}
    for symbol in bars:
        if "/" not in symbol:
            raise InputError(f"--ohlcv {symbol}: expected a BASE/QUOTE symbol, e.g. BTC/USDT")
    balances = {}
    for asset, amount in _pairs(args.balance, "--balance"):
        try:
            balances[asset.upper()] = float(amount)
        except ValueError:
            raise InputError(f"--balance {asset}={amount}: not a number") from None
    market_type = getattr(args, "market_type", "spot")
    leverage = getattr(args, "leverage", None)
    if leverage is not None and (market_type != "swap" or not 1 <= leverage <= 125):
        raise InputError(f"--leverage {leverage}: needs --market-type swap and 1..125")
    return {"venue": args.venue, "port": args.port, "api_key": args.api_key, "secret": secret,
            "bars": bars, "balances": balances, "market_type": market_type, "default_leverage": leverage,
            "commission": "received" if args.venue == "bybit" else "quote"}  # as each venue charges spot fees


def cmd_exchange_emulator(args: argparse.Namespace, stop: threading.Event | None = None) -> int:
    """Start the emulator, print its base URL, serve until Ctrl-C (or ``stop`` is set)."""
    from brokers.emulator import serve

    options = _options(args)
    try:
        handle = serve(options.pop("venue"), **options)
    except (OSError, RuntimeError, ValueError) as exc:
        raise InputError(f"exchange-emulator: cannot start on 127.0.0.1:{args.port}: {exc}") from None
    kind = "" if options["market_type"] == "spot" else " USDT perpetuals"
    print(f"exchange emulator ({args.venue}{kind}) at {handle.base_url} — Ctrl-C to stop", flush=True)
    print(f"  TRADPAL_BROKER=ccxt TRADPAL_EXCHANGE={args.venue} TRADPAL_EXCHANGE_URL={handle.base_url}", flush=True)
    try:
        (stop or threading.Event()).wait()
    except KeyboardInterrupt:
        pass
    finally:
        handle.stop()
    return 0
