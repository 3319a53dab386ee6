"""A signal's own time in force and bracket levels at every door: `validate_signal`
(`tradpal signal submit`, `submit_signal`), the HTTP intake, and a replay's signals file."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tradpal.cli import main
from tradpal.errors import InputError
from tradpal.intake_server import start_intake
from tradpal.signals import validate_signal

BUY = {"symbol": "BTC/USDT", "side": "buy", "quantity": 1, "reference_price": 100}


def test_levels_and_time_in_force_are_normalised():
    s = validate_signal({**BUY, "stop_loss": 95, "take_profit": "110", "trailing_stop": True, "time_in_force": "ioc"})
    assert (s["stop_loss"], s["take_profit"], s["trailing_stop"], s["time_in_force"]) == (95.0, 110.0, True, "IOC")
    plain = validate_signal(BUY)
    assert not {"stop_loss", "take_profit", "trailing_stop", "time_in_force"} & set(plain)
    # without a reference price the door cannot place the levels: step 1 checks them against the market
    assert validate_signal({**BUY, "reference_price": None, "stop_loss": 150})["stop_loss"] == 150.0
    # the strategy may have the stop to trail: not refused at the door
    assert validate_signal({**BUY, "trailing_stop": True})["trailing_stop"] is True


@pytest.mark.parametrize(("extra", "message"), [
    ({"stop_loss": 100}, "field 'stop_loss': the stop loss 100 of a buy must be below its reference price 100"),
    ({"take_profit": 99.5}, "field 'take_profit': the take profit 99.5 of a buy must be above its reference price 100"),
    ({"side": "sell", "take_profit": 90}, "field 'take_profit': a bracket protects a buy entry"),
    ({"stop_loss": 0}, "field 'stop_loss': stop_loss must be a price > 0"),
    ({"stop_loss": "low"}, "field 'stop_loss': must be a number, got 'low'"),
    ({"stop_loss": float("nan")}, "field 'stop_loss': must be a finite number"),
    ({"time_in_force": "DAY"}, "field 'time_in_force': unknown 'DAY' (expected GTC, IOC, FOK)"),
    ({"time_in_force": 1}, "field 'time_in_force': must be a string"),
    ({"trailing_stop": "yes"}, "field 'trailing_stop': must be true or false"),
])
def test_bad_levels_are_refused_with_one_line(extra, message):
    with pytest.raises(InputError) as err:
        validate_signal({**BUY, **extra})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_cli_submit_refuses_a_stop_above_the_price_and_passes_good_levels_on(monkeypatch, capsys):
    assert main(["signal", "submit", "--symbol", "BTC/USDT", "--side", "buy", "--quantity", "1", "--price", "100",
                 "--stop-loss", "101"]) == 2
    assert capsys.readouterr().err.strip() == ("tradpal: error: signal, field 'stop_loss': the stop loss 101 of a "
                                               "buy must be below its reference price 100")
    sent: list[dict] = []
    monkeypatch.setattr("tradpal.signals.emit_signal", lambda s: sent.append(s) or s["signal_id"])
    monkeypatch.setattr("tradpal.signals.flush_events", lambda timeout=10.0: None)
    assert main(["signal", "submit", "--symbol", "BTC/USDT", "--side", "buy", "--quantity", "1", "--price", "100",
                 "--stop-loss", "95", "--take-profit", "120", "--trailing-stop", "--time-in-force", "fok",
                 "--signal-id", "cli-1"]) == 0
    [s] = sent
    assert (s["signal_id"], s["stop_loss"], s["take_profit"], s["trailing_stop"], s["time_in_force"]) == (
        "cli-1", 95.0, 120.0, True, "FOK")


def test_the_http_intake_takes_levels_and_refuses_bad_ones():
    got: list[dict] = []

    async def handler(signals):
        got.extend(signals)
        return [{"signal_id": s["signal_id"], "accepted": True} for s in signals]

    async def go():
        server = await start_intake("127.0.0.1", 0, handler)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
                ok = await client.post("/signals", json={**BUY, "signal_id": "h1", "stop_loss": 97.5,
                                                         "time_in_force": "GTC"})
                bad = await client.post("/signals", json=[{**BUY, "signal_id": "h2"},
                                                          {**BUY, "signal_id": "h3", "take_profit": 90}])
                return ok, bad
        finally:
            await server.stop()

    ok, bad = asyncio.run(go())
    assert ok.status_code == 202 and [(s["signal_id"], s["stop_loss"], s["time_in_force"]) for s in got] == [
        ("h1", 97.5, "GTC")]
    assert bad.status_code == 400 and bad.json()["error"] == (
        "signals[1], field 'take_profit': the take profit 90 of a buy must be above its reference price 100")


def test_a_replay_signals_file_carries_time_in_force_and_levels(tmp_path):
    """Minute bars of volume 100 and a 10 % participation cap: at most 10 per bar. An IOC
    buy of 25 fills 10 and cancels the rest; a GTC buy of 5 with its own stop 97 and
    target 130 fills at the 100 open and is stopped out at 97 when the bars fall."""
    from tradpal.ledger import Ledger
    from tradpal.replay import ReplayParams, load_inputs, run_replay

    ohlcv = tmp_path / "bars.csv"
    rows = [(100, 101, 99.5, 100)] * 3 + [(99, 99, 96, 96), (96, 97, 95, 96)]
    ohlcv.write_text("timestamp,open,high,low,close,volume\n" + "".join(
        f"2024-01-01T00:{i:02d}:00Z,{o},{h},{lo},{c},100\n" for i, (o, h, lo, c) in enumerate(rows)))
    sig = tmp_path / "signals.csv"
    sig.write_text("timestamp,symbol,side,quantity,signal_id,time_in_force,stop_loss,take_profit,trailing_stop\n"
                   "2024-01-01T00:00:00Z,BTC/USDT,buy,25,ioc,IOC,,,\n"
                   "2024-01-01T00:01:00Z,BTC/USDT,buy,5,bracketed,,97,130,false\n")
    params = ReplayParams(str(ohlcv), str(sig), "BTC/USDT", 10_000.0, 0.0, 0.0, None, None, None,
                          participation=0.1)
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    result = asyncio.run(run_replay(params, load_inputs(params), ledger))
    r = result.reports
    ioc = r[r["signal_id"] == "ioc"]
    assert ioc[["exec_type", "quantity"]].values.tolist() == [["PARTIAL_FILL", 10.0], ["CANCELED", 0.0]]
    legs = r[(r["signal_id"] == "bracketed") & (r["side"] == "sell")]
    assert legs[["exec_type", "quantity"]].values.tolist() == [["FILL", 5.0], ["CANCELED", 0.0]]
    assert legs.loc[legs["exec_type"] == "FILL", "price"].tolist() == [97.0]
    orders = ledger.frame("orders", run_id=result.summary["run_id"]).set_index("client_order_id")
    assert sorted(orders["time_in_force"].tolist()) == ["GTC", "GTC", "GTC", "IOC"]
    audit = ledger.frame("audit_log", run_id=result.summary["run_id"])
    [opened] = audit.loc[audit["event"] == "bracket.opened", "payload"].tolist()
    assert opened["levels"] == {"stop_loss": {"source": "signal", "rule": "price 97"},
                                "take_profit": {"source": "signal", "rule": "price 130"}}
