"""What every live flow run opens before the eight steps, as plain functions: the
configuration, the ledger, the broker (behind the connectivity breaker), the run's record;
then, connected, the reconciliation, the reference prices and the opening book.
`flows/live_execution.py` (a batch) and `flows/live_stream.py` (a stream) share it."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import uuid
from dataclasses import dataclass
from typing import Any

import pandas as pd

from brokers.base import AccountInfo, BaseBroker
from brokers.base.clock import WallClock
from brokers.base.retry import retrying
from brokers.factory import guarded, make_broker
from risk.alerts import alerter_from_env
from risk.config import load_risk_config
from tasks.context import Book, ExecutionContext, MarketData, PipelineConfig
from tasks.reconcile import at_work, off_work
from tasks.recorder import LedgerRecorder
from tradpal.config import Settings, load_settings
from tradpal.ledger import Ledger
from tradpal.processes import EPHEMERAL_API_MARK, child_pids, lower_priority, process_started

NAMESPACE = "live"


async def reference_prices(broker: BaseBroker, given: dict[str, float], symbols: list[str]) -> dict[str, float]:
    """The venue's last prices of ``symbols`` when the broker can tell them
    (``get_last_prices``), else the prices given to the flow."""
    get_last_prices = getattr(broker, "get_last_prices", None)
    if get_last_prices is None:
        return given
    return await get_last_prices(sorted({s.upper() for s in symbols} - {""}))


def opening_book(account: AccountInfo, quote: str, prices: dict[str, float]) -> Book:
    """The book as the broker's account stands: the quote balance as cash, and what is
    held of each traded symbol's base currency (valued at its reference price)."""
    book = Book(cash=account.balances.get(quote, 0.0), quote_currency=quote)
    for symbol, price in prices.items():
        base, _, symbol_quote = symbol.partition("/")
        held = account.balances.get(base, 0.0)
        if symbol_quote == quote and held > 0:
            book.positions[symbol] = held
            book.cost_basis[symbol] = held * price
            book.last_price[symbol] = price
    book.start_equity = book.equity()
    return book


def last_prices(prices: dict[str, float], now: pd.Timestamp) -> MarketData:
    """Market data of one flat bar per symbol at its last price (reference prices, marks)."""
    return MarketData({s: pd.DataFrame({"timestamp": [now - pd.Timedelta(days=1)], "open": [p], "high": [p],
                                        "low": [p], "close": [p], "volume": [0.0]}) for s, p in prices.items()})


@dataclass
class LiveSession:
    """One live run's parts, before anything talks to the broker."""

    settings: Settings
    risk: Any  # risk.config.RiskConfig | None (TRADPAL_RISK_CONFIG)
    ledger: Ledger
    clock: WallClock
    run_id: str
    alerter: Any
    broker: BaseBroker
    quote: str

    def fail(self, exc: BaseException) -> None:
        """The run failed: say so in the ledger, unless the ledger is what failed (the
        run's own error must come first)."""
        off_work(self.run_id)
        with contextlib.suppress(Exception):
            self.ledger.finish_run(self.run_id, "failed", {"error": f"{type(exc).__name__}: {exc}"})

    def stopped(self) -> None:
        """The run no longer places or monitors: a later reconciliation may take its orders."""
        off_work(self.run_id)


def favour_the_steps(settings: Settings, api_marker: str = EPHEMERAL_API_MARK) -> dict[str, Any]:
    """A live process serves the steps first (measured in `benchmarks.latency`):

    * the interpreter's switch interval drops to ``gil_switch_ms``: Prefect's event threads
      take the interpreter whenever a step releases it (a system call, SQLite), and with
      Python's 5 ms they keep it that long;
    * the ephemeral Prefect API server this process started (a child process) runs at nice
      ``api_server_nice``: on a busy machine the task runs' bookkeeping waits, not the
      orders; its events queue meanwhile and are recorded when the CPU frees;
    * the client's events worker takes the task runs' queued events ``events_burst`` at a
      time (`tradpal.prefect_events`): one wake-up of its threads per burst, not per event.

    Returns what it did (for the run's record)."""
    from tradpal.prefect_events import drain_in_bulk

    done: dict[str, Any] = {}
    if drain_in_bulk(settings.events_burst):
        done["events_burst"] = settings.events_burst
    if settings.gil_switch_ms > 0:
        sys.setswitchinterval(settings.gil_switch_ms / 1e3)
        done["gil_switch_ms"] = settings.gil_switch_ms
    if settings.api_server_nice > 0:
        reniced = lower_priority(child_pids(api_marker), settings.api_server_nice)
        if reniced:
            done["api_server_nice"] = {"pids": reniced, "nice": settings.api_server_nice}
    return done


def start_session(*, cash: float, quote: str, prices: dict[str, float], database_url: str | None,
                  params: dict[str, Any], flow_run_id: str | None) -> LiveSession:
    """Configuration (validated), the ledger, the guarded broker and the run's record."""
    settings = load_settings()
    risk = load_risk_config(settings.risk_config) if settings.risk_config else None
    tuned = favour_the_steps(settings)
    ledger = Ledger(database_url or settings.ledger_url())
    clock, run_id = WallClock(), uuid.uuid4().hex
    alerter = alerter_from_env(risk)
    broker = guarded(make_broker(settings, cash=cash, quote=quote, prices=prices, clock=clock), settings, risk,
                     ledger=ledger, namespace=NAMESPACE, alerter=alerter, run_id=run_id, quote=quote)
    # host and pid: how a later reconciliation tells a crashed run from one still working
    # (with the process's start time: a pid the kernel gives again later is not this run)
    ledger.start_run("live", {**params, "venue": broker.name, "host": socket.gethostname(), "pid": os.getpid(),
                              "pid_started": process_started(os.getpid()), **({"tuned": tuned} if tuned else {})},
                     run_id=run_id, flow_run_id=flow_run_id)
    at_work(run_id)
    return LiveSession(settings, risk, ledger, clock, run_id, alerter, broker, quote)


async def open_context(session: LiveSession, prices: dict[str, float], symbols: list[str], *,
                       verify_book: bool = True) -> ExecutionContext:
    """Connect (retried), reconcile the ledger with the broker, take the reference prices
    and the account: the context the eight steps run in."""
    from tasks.prefect_tasks import result_storage
    from tasks.reconcile import reconcile_task  # a Prefect task: run inside the flow

    broker, clock = session.broker, session.clock
    await result_storage()  # saved now, not by the first signal's task runs (~2 s under load: measured)
    await retrying(broker.connect)
    await reconcile_task(session.ledger, broker, session.run_id)
    prices = await retrying(lambda: reference_prices(broker, prices, symbols))
    book = opening_book(await retrying(broker.get_account_info), session.quote, prices)
    ctx = ExecutionContext(broker=broker, clock=clock, config=PipelineConfig(), market=last_prices(prices, clock.now()),
                           book=book, recorder=LedgerRecorder(session.ledger, run_id=session.run_id,
                                                              namespace=NAMESPACE, venue=broker.name),
                           run_id=session.run_id, namespace=NAMESPACE, strategy="live")
    ctx.alerter = session.alerter
    ctx.config = PipelineConfig(rules={s: ctx.config.default_rules for s in prices}, risk=session.risk,
                                verify_book=verify_book)
    return ctx
