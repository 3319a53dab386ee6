"""`tradpal signal submit` and `tradpal intake`: signals in, as Prefect events."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def add_parsers(sub) -> None:
    s = sub.add_parser("signal", help="submit a signal: validated, then emitted as tradpal.signal.received")
    s_sub = s.add_subparsers(dest="signal_command", required=True, metavar="ACTION", parser_class=sub._parser_class)
    sm = s_sub.add_parser("submit", help="validate one signal and emit the event (triggers live-execution)")
    sm.add_argument("--symbol", required=True, help="BASE/QUOTE, e.g. BTC/USDT")
    sm.add_argument("--side", required=True, help="buy or sell")
    sm.add_argument("--quantity", required=True, type=_float, help="base units, > 0")
    sm.add_argument("--strategy", help="strategy name (sizing rules, attribution)")
    sm.add_argument("--price", type=_float, help="reference price (sizing, checks, slippage; the paper broker's price)")
    sm.add_argument("--signal-id", help="your id (default: generated); the same id yields one order")
    sm.add_argument("--order-type", help="market (default), limit, stop, stop_limit")
    sm.add_argument("--limit-price", type=_float)
    sm.add_argument("--stop-price", type=_float)
    sm.add_argument("--time-in-force", help="GTC, IOC or FOK (default: the configuration's, GTC)")
    sm.add_argument("--stop-loss", type=_float, help="this entry's protective stop (absolute price, below a buy's)")
    sm.add_argument("--take-profit", type=_float, help="this entry's target (absolute price, above a buy's)")
    sm.add_argument("--trailing-stop", action="store_true", help="the stop trails the highest price since the fill")

    i = sub.add_parser("intake", help="HTTP intake: POST /signals emits tradpal.signal.received per signal")
    i.add_argument("--port", type=int, required=True, help="port to listen on (0: a free one)")
    i.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    i.add_argument("--max-body", type=int, default=1 << 20, help="largest request body in bytes (default 1 MiB)")


def cmd_signal(args) -> int:
    import logging

    from tradpal.signals import submit_signal

    logging.getLogger("EventsWorker").setLevel(logging.ERROR)  # its exit-time "Still processing items" notice

    signal_id = submit_signal(args.symbol, args.side, args.quantity, strategy=args.strategy, price=args.price,
                              signal_id=args.signal_id, order_type=args.order_type, limit_price=args.limit_price,
                              stop_price=args.stop_price, time_in_force=args.time_in_force,
                              stop_loss=args.stop_loss, take_profit=args.take_profit,
                              trailing_stop=args.trailing_stop)
    print(signal_id)
    return 0


def cmd_intake(args) -> int:
    from prefect.settings import PREFECT_API_URL

    from tradpal.errors import InputError
    from tradpal.intake_server import serve_intake

    if not PREFECT_API_URL.value():
        raise InputError("intake: no Prefect API to send events to: set PREFECT_API_URL (e.g. `make up`)")

    def started(port: int) -> None:
        print(f"intake: listening on http://{args.host}:{port}/signals (events to {PREFECT_API_URL.value()})",
              file=sys.stderr, flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_intake(args.host, args.port, max_body=args.max_body, started=started))
    return 0
