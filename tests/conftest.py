"""Shared fixtures."""

from __future__ import annotations

import asyncio
import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

# Live runs lower the priority of the ephemeral Prefect API server they started (tradpal.live
# `favour_the_steps`); under pytest that server is the suite's own: leave it as it is.
# (tests/tradpal/test_live.py tests the renicing itself.)
os.environ.setdefault("TRADPAL_API_SERVER_NICE", "0")

# -- ledger ----------------------------------------------------------------------------

LEDGER_TEST_DATABASE_ENV = "TRADPAL_TEST_DATABASE_URL"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh, empty ledger database, once per backend.

    sqlite: a file under tmp_path (in a directory that does not exist yet).
    postgresql: $TRADPAL_TEST_DATABASE_URL (skipped when unset), with every connection's
    search_path set (libpq ``options``) to a new schema of its own, dropped afterwards,
    so that tests never share state.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger' / 'ledger.db'}"
        return

    base = os.environ.get(LEDGER_TEST_DATABASE_ENV)
    if not base:
        pytest.skip(
            f"{LEDGER_TEST_DATABASE_ENV} is not set; set it to a PostgreSQL URL "
            "(e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test) to run the PostgreSQL variant"
        )
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.pool import NullPool

    schema = f"test_ledger_{uuid.uuid4().hex[:16]}"
    url = make_url(base)
    options = " ".join(filter(None, [url.query.get("options"), f"-csearch_path={schema}"]))
    admin = create_engine(url, poolclass=NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield url.update_query_dict({"options": options}).render_as_string(hide_password=False)
    finally:
        try:
            with admin.begin() as conn:
                conn.exec_driver_sql("SET LOCAL lock_timeout = '10s'")
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        except SQLAlchemyError as exc:  # a connection left open by a failed test: don't hide its error
            warnings.warn(f"could not drop test schema {schema}: {exc}", stacklevel=1)
        admin.dispose()


@pytest.fixture
def ledger(ledger_url: str):
    """A migrated, empty ledger on each backend of ``ledger_url`` (closed afterwards)."""
    from tradpal.ledger import Ledger

    led = Ledger(ledger_url)
    try:
        yield led
    finally:
        led.close()


# -- alerts ----------------------------------------------------------------------------


@pytest.fixture
def receiver():
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    """A JSON sink on a free loopback port; yields (url, received list)."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            length = int(self.headers.get("Content-Length", 0))
            received.append({"path": self.path, "json": json.loads(self.rfile.read(length))})
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"json://127.0.0.1:{server.server_port}/alerts", received
    finally:
        server.shutdown()



# -- Prefect ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A real, temporary Prefect API (ephemeral server, its own PREFECT_HOME and SQLite),
    started once per test session for the tests that run flows; heartbeats off."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, PREFECT_HOME, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect-home")
    with (temporary_settings({PREFECT_HOME: str(home), PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
          prefect_test_harness(server_startup_timeout=120)):
        yield


# -- builders --------------------------------------------------------------------------

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
SHARED_OHLCV = Path(__file__).resolve().parents[2] / "shared" / "data" / "ohlcv"


@pytest.fixture
def sample_ohlcv() -> Path:
    """Real 5-minute ETH/BTC candles shipped in data/sample (see its README)."""
    return SAMPLE / "BITTREX_ETH-BTC_5m.csv"


def make_bars(rows, start: str = "2024-01-01T00:01:00Z", freq: str = "1min"):
    """Bars from (open, high, low, close[, volume]) tuples, one per ``freq`` from ``start``."""
    import pandas as pd

    ts = pd.date_range(start, periods=len(rows), freq=freq, tz="UTC")
    return pd.DataFrame({"timestamp": ts, "open": [r[0] for r in rows], "high": [r[1] for r in rows],
                         "low": [r[2] for r in rows], "close": [r[3] for r in rows],
                         "volume": [r[4] if len(r) > 4 else 1000.0 for r in rows]})


def make_signals(rows, symbol: str = "BTC/USDT"):
    """Signals from (timestamp, side, quantity[, extra dict]) tuples, ids s1, s2, ..."""
    import pandas as pd

    out = []
    for i, r in enumerate(rows, start=1):
        rec = {"timestamp": pd.Timestamp(r[0], tz="UTC") if pd.Timestamp(r[0]).tzinfo is None else pd.Timestamp(r[0]),
               "symbol": symbol, "side": r[1], "quantity": float(r[2]), "signal_id": f"s{i}"}
        if len(r) > 3:
            rec.update(r[3])
        out.append(rec)
    return pd.DataFrame(out)


def poll(fetch, ok, timeout: float = 30.0, every: float = 0.2):
    """``fetch()`` until ``ok`` of it holds, or its last value after ``timeout`` seconds. For
    what a Prefect API records asynchronously: task runs reach it as events, recorded a
    moment after their flow run's own (direct) final state."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if ok(value) or time.monotonic() > deadline:
            return value
        time.sleep(every)


@pytest.fixture
def prefect_client(prefect_api):
    """Run a coroutine taking a Prefect client: ``prefect_client(lambda c: c.read_...)``."""
    from prefect.client.orchestration import get_client

    def call(fn):
        async def go():
            async with get_client() as client:
                return await fn(client)
        return asyncio.run(go())

    return call


async def start_live_stream(tmp_path: Path, db: str, **kwargs):
    """The `live_stream` flow started in the running loop on a free port, paper broker at
    BTC/USDT 50,000: (the flow's future, the intake's base URL) once it listens."""
    import asyncio

    from flows.live_stream import live_stream

    ready = tmp_path / "port"
    options = {"symbols": ["BTC/USDT"], "port": 0, "prices": {"BTC/USDT": 50_000.0}, "cash": 10_000.0,
               "idle_poll_s": 0.2, **kwargs}
    run = asyncio.ensure_future(live_stream(database_url=db, ready_file=str(ready), **options))
    while not (ready.exists() and ready.read_text()):
        assert not run.done(), run.result()
        await asyncio.sleep(0.05)
    return run, f"http://127.0.0.1:{ready.read_text()}"

