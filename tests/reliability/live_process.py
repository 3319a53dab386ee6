"""The live process of the crash trials, and the exchange emulator it trades with, each a
separate OS process that a test can SIGKILL.

* ``start_emulator_process``: ``tradpal exchange-emulator`` as a subprocess on a free
  port (it outlives every crash of the live process: the venue does not crash with us).
* ``LiveProcesses``: runs ``tradpal live ...`` (``tradpal.cli.main``, the command's own
  entry point) in a child process forked from a *forkserver* that imported TradPal,
  Prefect, pandas and ccxt once (~10 s here); every run is a fresh process, killed for
  real with SIGKILL, without paying those imports each time. ``exec_live`` runs the
  real ``.venv/bin/tradpal`` executable instead (the long campaign does some of those).
* ``crash_rig``: both, one SQLite ledger and a work folder, for the crash tests (the
  module-scoped ``rig`` fixture of tests/reliability/conftest.py); ``run_live`` starts one
  live process of it.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample" / "BITTREX_ETH-BTC_5m.csv"
SYMBOL = "ETH/BTC"
API_KEY = "crash-key-5c2e"
SECRET = "crash-secret-never-printed-9d1f"
BALANCES = {"BTC": "10", "ETH": "20"}
TRADPAL = Path(sys.executable).with_name("tradpal")
PRELOAD = ["pandas", "ccxt.async_support", "prefect", "flows.live_execution", "brokers.ccxt.broker", "tradpal.cli"]


class EmulatorProcess:
    """A ``tradpal exchange-emulator`` subprocess; ``base_url`` once it answers."""

    def __init__(self, proc: subprocess.Popen, base_url: str) -> None:
        self.proc, self.base_url = proc, base_url

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_emulator_process(ohlcv: Path, api_key: str, secret: str, balances: Mapping[str, str],
                           symbol: str = "ETH/BTC") -> EmulatorProcess:
    args = [str(TRADPAL), "exchange-emulator", "--port", "0", "--api-key", api_key,
            "--ohlcv", f"{symbol}={ohlcv}", *[f"--balance={a}={v}" for a, v in balances.items()]]
    env = {**os.environ, "TRADPAL_EMULATOR_SECRET": secret}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    line = proc.stdout.readline()  # "exchange emulator (binance) at http://127.0.0.1:PORT — Ctrl-C to stop"
    if " at http://" not in line:
        proc.kill()
        raise RuntimeError(f"the emulator did not start: {line!r} {proc.stderr.read()}")
    return EmulatorProcess(proc, line.split(" at ", 1)[1].split()[0])


def _child(argv: list[str], env: dict[str, str], log: str, prefect: dict[str, str]) -> None:
    """In the forked child: the environment of this run, output to ``log``, then the CLI."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update(env)
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_HOME,
        PREFECT_LOGGING_LEVEL,
        temporary_settings,
    )

    from tradpal.cli import main

    with temporary_settings({PREFECT_API_URL: prefect["api_url"], PREFECT_HOME: prefect["home"],
                             PREFECT_LOGGING_LEVEL: "WARNING", PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class LiveProcesses:
    """Starts live processes from one forkserver (see the module docstring)."""

    def __init__(self, prefect_api_url: str, prefect_home: str) -> None:
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(PRELOAD)
        self.prefect = {"api_url": prefect_api_url, "home": prefect_home}

    def start(self, argv: list[str], env: Mapping[str, str], log: Path):
        proc = self.ctx.Process(target=_child, args=(argv, dict(env), str(log), self.prefect), daemon=True)
        proc.start()
        return proc


def exec_live(argv: list[str], env: Mapping[str, str], log: Path, prefect_api_url: str) -> subprocess.Popen:
    """``.venv/bin/tradpal live ...`` as a fresh executable (imports paid every time)."""
    full = {**os.environ, **env, "PREFECT_API_URL": prefect_api_url, "PREFECT_LOGGING_LEVEL": "WARNING"}
    with open(log, "ab") as out:
        return subprocess.Popen([str(TRADPAL), *argv], stdout=out, stderr=out, env=full, cwd=ROOT)


def wait_exit(proc, timeout: float) -> int | None:
    """The exit code (negative: killed by that signal) of a Process or Popen, None if still running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = proc.poll() if isinstance(proc, subprocess.Popen) else proc.exitcode
        if code is not None:
            return code
        time.sleep(0.05)
    return None


def crash_rig(work: Path):
    """The emulator process, the forkserver of live processes, one ledger, in ``work``
    (under a running Prefect API); a generator: the emulator stops when it resumes."""
    import pandas as pd
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME

    from tradpal.faults import CRASH_ENV

    ohlcv = work / "bars.csv"
    pd.read_csv(SAMPLE).head(200).to_csv(ohlcv, index=False)
    emulator = start_emulator_process(ohlcv, API_KEY, SECRET, BALANCES)
    env = {"TRADPAL_BROKER": "ccxt", "TRADPAL_EXCHANGE": "binance", "TRADPAL_EXCHANGE_URL": emulator.base_url,
           "TRADPAL_API_KEY": API_KEY, "TRADPAL_API_SECRET": SECRET, CRASH_ENV: ""}
    rig = {"work": work, "emulator": emulator, "env": env, "db": f"sqlite:///{work / 'ledger.db'}",
           "procs": LiveProcesses(PREFECT_API_URL.value(), str(PREFECT_HOME.value())),
           "api_url": PREFECT_API_URL.value(), "signals": set(), "totals": {}}
    try:
        yield rig
    finally:
        emulator.stop()


def run_live(rig, argv, env, log, *, real_exec: bool):
    """``tradpal ARGV`` against the rig's emulator: a forked Process, or the real executable."""
    if real_exec:
        return exec_live(argv, {**rig["env"], **env}, log, rig["api_url"])
    return rig["procs"].start(argv, {**rig["env"], **env}, log)
