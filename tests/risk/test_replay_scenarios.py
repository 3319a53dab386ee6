"""Replay scenarios with a risk configuration (no Prefect): a bracket's stop hit in a
replay, and a volatility halt that trips on a crafted spike, refuses new risk for its
cooldown with the breaker's name as the reason (alerted), and lets trading resume."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pandas as pd
import pytest

from tradpal.ledger import Ledger
from tradpal.replay import ReplayParams, load_inputs, run_replay, write_outputs

PORTFOLIO = "portfolio: {max_drawdown: 1, max_daily_loss: 1, max_gross_exposure: 10}\n"


def write_bars(path: Path, closes: list[float], spread: float = 0.001) -> Path:
    """One-minute bars from 00:01: open = the previous close, high/low around both."""
    ts = pd.date_range("2024-01-01T00:01:00Z", periods=len(closes), freq="1min", tz="UTC")
    opens = [closes[0], *closes[:-1]]
    pd.DataFrame({"timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"), "open": opens,
                  "high": [max(o, c) * (1 + spread) for o, c in zip(opens, closes, strict=True)],
                  "low": [min(o, c) * (1 - spread) for o, c in zip(opens, closes, strict=True)],
                  "close": closes, "volume": 1000.0}).to_csv(path, index=False)
    return path


def write_signals(path: Path, rows: list[str]) -> Path:
    path.write_text("timestamp,symbol,side,quantity,signal_id\n" + "\n".join(rows) + "\n")
    return path


def replay(tmp_path: Path, bars: Path, signals: Path, risk_text: str):
    risk = tmp_path / "risk.yaml"
    risk.write_text(risk_text)
    params = ReplayParams(str(bars), str(signals), "BTC/USDT", 10_000.0, fee_rate=0.0, risk_config=str(risk))
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        result = asyncio.run(run_replay(params, load_inputs(params), ledger))
        write_outputs(tmp_path / "out", result.reports, result.summary, result.equity)
        return result, ledger.frame("rejections"), ledger.frame("orders"), ledger.frame("audit_log")
    finally:
        ledger.close()


def test_a_bracket_stop_in_a_replay(tmp_path) -> None:
    # entry at the 00:02 open (100); stop 3 % = 97: the 00:05 bar (close 96) reaches it
    bars = write_bars(tmp_path / "b.csv", [100, 100, 101, 99, 96, 95], spread=0.0)
    sigs = write_signals(tmp_path / "s.csv", ["2024-01-01T00:01:00Z,BTC/USDT,buy,2,e1"])
    result, rejections, orders, audit = replay(tmp_path, bars, sigs, PORTFOLIO + (
        "brackets:\n  default: {stop_loss: {percent: 0.03}, take_profit: {percent: 0.05}}\n"))
    fills = (tmp_path / "out" / "fills.csv").read_text().splitlines()
    assert fills[1:] == ["2024-01-01T00:02:00Z,e1,buy,2.0,100.0,0.0", "2024-01-01T00:05:00Z,e1,sell,2.0,97.0,0.0"]
    s = result.summary
    assert (s["n_fills"], s["unfilled"], s["rejected"], s["final_position"]) == (2, 0, 0, 0.0)
    assert s["realized_pnl"] == pytest.approx(-6.0) and s["final_equity"] == pytest.approx(9_994.0)
    assert sorted(orders["status"]) == ["CANCELED", "FILLED", "FILLED"] and rejections.empty
    assert {"bracket.opened", "bracket.closed"} <= set(audit["event"])


def test_volatility_halt_trips_blocks_for_its_cooldown_and_resumes(tmp_path, receiver) -> None:
    url, received = receiver
    # calm bars alternating +-0.1 %, a +10 % spike closing at 00:20, calm again after
    closes = [100.0 * (1.001 if i % 2 else 1.0) for i in range(19)]
    closes += [closes[-1] * 1.10] + [closes[-1] * 1.10 * (1.001 if i % 2 else 1.0) for i in range(20)]
    bars = write_bars(tmp_path / "b.csv", closes, spread=0.0)
    sigs = write_signals(tmp_path / "s.csv", [
        "2024-01-01T00:05:00Z,BTC/USDT,buy,1,before",    # before the spike: filled
        "2024-01-01T00:22:00Z,BTC/USDT,buy,1,during",    # 2 minutes into the 10-minute halt: refused
        "2024-01-01T00:29:00Z,BTC/USDT,sell,1,reduce",   # a halt on the symbol refuses every order of it
        "2024-01-01T00:31:00Z,BTC/USDT,buy,1,after",     # the halt ended at 00:30: filled
    ])
    result, rejections, orders, audit = replay(tmp_path, bars, sigs, PORTFOLIO + (
        "breakers:\n  volatility: {lookback: 10, z_threshold: 5, cooldown_minutes: 10}\n"
        f"alerts: {{urls: ['{url}'], throttle_s: 0}}\n"))
    why = dict(zip(rejections["signal_id"], rejections["reason"], strict=True))
    assert set(why) == {"during", "reduce"}
    assert all(r.startswith("breaker volatility_halt (BTC/USDT): bar return z-score") for r in why.values())
    assert "2024-01-01 00:20:00+00:00" in why["during"]
    fills = [line.split(",")[1] for line in (tmp_path / "out" / "fills.csv").read_text().splitlines()[1:]]
    assert fills == ["before", "after"]
    [trip] = [b for b in result.summary["breaches"] if b["rule"] == "volatility_halt"]
    assert (trip["symbol"], trip["time"], trip["threshold"]) == ("BTC/USDT", "2024-01-01 00:20:00+00:00", 5.0)
    assert trip["value"] > 5 and result.summary["rejected"] == 2 and result.summary["halted"] is False
    tripped = audit[audit["event"] == "breaker.tripped"]
    assert len(tripped) == 1 and tripped["entity_id"].iloc[0].startswith("volatility_halt:replay:")
    messages = [m["json"] for m in received]
    assert any(m["title"] == "TradPal breaker tripped: volatility_halt" and "BTC/USDT" in m["message"]
               for m in messages)
    assert any("breaker volatility_halt" in m["message"] and "during" in m["message"] for m in messages)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["breaches"][0]["rule"] == "volatility_halt"


def test_loss_limit_with_flatten_closes_the_position_through_the_steps(tmp_path, receiver) -> None:
    url, received = receiver
    # buy 50 at the 00:02 open (100): 5,000 of 10,000 in the position. The price falls to
    # 70 by 00:05: equity 8,500, 15 % below the start > 10 %. The trip at the end of that
    # batch (just before the next signal, 00:05:59.999999) queues a market sell of 50, run
    # through the eight steps at once and filled at the 00:06 open (70); the later buy is
    # refused by the halt (a sell that reduces risk is not).
    bars = write_bars(tmp_path / "b.csv", [100, 100, 90, 80, 70, 70, 72, 75, 75], spread=0.0)
    sigs = write_signals(tmp_path / "s.csv", ["2024-01-01T00:01:00Z,BTC/USDT,buy,50,entry",
                                              "2024-01-01T00:06:00Z,BTC/USDT,buy,1,later"])
    result, rejections, orders, audit = replay(tmp_path, bars, sigs, PORTFOLIO + (
        "breakers:\n  loss_limit: {threshold: 0.10, flatten: true}\n"
        f"alerts: {{urls: ['{url}'], throttle_s: 0}}\n"))
    fills = [line.split(",") for line in (tmp_path / "out" / "fills.csv").read_text().splitlines()[1:]]
    flatten_id = "flatten:BTC/USDT:20240101T000559.999999Z"
    assert [(f[0], f[1], f[2], f[3], f[4]) for f in fills] == [
        ("2024-01-01T00:02:00Z", "entry", "buy", "50.0", "100.0"),
        ("2024-01-01T00:06:00Z", flatten_id, "sell", "50.0", "70.0")]
    assert rejections["signal_id"].tolist() == ["later"]
    assert rejections["reason"].iloc[0].startswith("breaker loss_limit (portfolio): equity")
    s = result.summary
    assert s["halted"] is True and s["final_position"] == 0.0 and s["final_cash"] == pytest.approx(8_500.0)
    flat = audit[audit["event"] == "risk.flatten"]
    assert flat["entity_id"].tolist() == [flatten_id] and flat["payload"].iloc[0]["quantity"] == 50.0
    assert orders.set_index("client_order_id")["status"].value_counts().to_dict() == {"FILLED": 2, "REJECTED": 1}
    titles = [m["json"]["title"] for m in received]
    assert "TradPal loss limit: flattening positions" in titles and "TradPal breaker tripped: loss_limit" in titles
