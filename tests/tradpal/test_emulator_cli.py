"""`tradpal exchange-emulator`: bad values end in one line and exit 2; good ones serve."""

from __future__ import annotations

import threading
import urllib.request

import pytest

from tradpal.cli import build_parser, main
from tradpal.emulator_cli import cmd_exchange_emulator

SAMPLE = "data/sample/BITTREX_ETH-BTC_5m.csv"


@pytest.mark.parametrize(("argv", "message"), [
    (["--ohlcv", f"ETH/BTC={SAMPLE}"], "--secret: required"),
    (["--secret", "s", "--ohlcv", SAMPLE], "--ohlcv"),
    (["--secret", "s", "--ohlcv", f"ETH/BTC={SAMPLE}", "--balance", "BTC=lots"], "not a number"),
    (["--secret", "s", "--ohlcv", f"ETH/BTC={SAMPLE}", "--venue", "kraken"], "--venue"),
])
def test_bad_values_are_one_line_exit_2(argv, message, capsys, monkeypatch):
    monkeypatch.delenv("TRADPAL_EMULATOR_SECRET", raising=False)
    assert main(["exchange-emulator", "--api-key", "k", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize(("venue", "probe"), [("binance", "/api/v3/ping"), ("bybit", "/v5/market/time")])
def test_serves_until_stopped(capsys, monkeypatch, venue, probe):
    monkeypatch.setenv("TRADPAL_EMULATOR_SECRET", "env-secret")
    args = build_parser().parse_args(["exchange-emulator", "--api-key", "k", "--port", "0", "--venue", venue,
                                      "--ohlcv", f"ETH/BTC={SAMPLE}", "--balance", "BTC=1"])
    stop = threading.Event()
    done: list[int] = []
    thread = threading.Thread(target=lambda: done.append(cmd_exchange_emulator(args, stop)))
    thread.start()
    try:
        for _ in range(200):
            out = capsys.readouterr().out
            if "http://" in out:
                break
            threading.Event().wait(0.05)
        url = out.split(" at ")[1].split()[0]
        with urllib.request.urlopen(f"{url}{probe}", timeout=5) as answer:
            assert answer.status == 200
    finally:
        stop.set()
        thread.join(10)
    assert done == [0] and "env-secret" not in out
