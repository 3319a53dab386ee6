"""The replay engine without Prefect: it agrees with the reference implementation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import SAMPLE, SHARED_OHLCV
from tests.reference import reference_next_open
from tradpal.io import load_ohlcv
from tradpal.ledger import Ledger
from tradpal.replay import ReplayParams, load_inputs, max_drawdown, plan_batches, run_replay
from tradpal.strategies import sma_crossover, write_signals_csv


def replay(tmp_path: Path, ohlcv: Path, symbol: str, quantity: float, *, cash: float, fee: float = 0.001,
           bps: float = 5.0, chunk: int = 50):
    bars = load_ohlcv(ohlcv)
    signals = sma_crossover(bars, symbol=symbol, quantity=quantity)
    sig_path = tmp_path / "signals.csv"
    write_signals_csv(signals, sig_path)
    params = ReplayParams(str(ohlcv), str(sig_path), symbol, cash, fee, bps, None, chunk)
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    result = asyncio.run(run_replay(params, load_inputs(params), ledger))
    ref = reference_next_open(bars, load_inputs(params).signals, cash=cash, fee_rate=fee, slippage_bps=bps)
    return result, ref, ledger


def assert_agrees(result, ref) -> None:
    fills = result.reports[result.reports["quantity"] > 0].reset_index(drop=True)
    assert fills["signal_id"].tolist() == ref["fills"]["signal_id"].tolist()
    np.testing.assert_allclose(fills["price"], ref["fills"]["price"], rtol=1e-9)
    np.testing.assert_allclose(fills["fee"], ref["fills"]["fee"], rtol=1e-9)
    assert result.summary["final_equity"] == pytest.approx(ref["final_equity"], rel=1e-9)
    assert result.summary["final_cash"] == pytest.approx(ref["final_cash"], rel=1e-9, abs=1e-12)
    assert result.summary["rejected"] == ref["rejected"]
    assert result.summary["unfilled"] == ref["unfilled"]


def test_sample_replay_matches_reference(tmp_path):
    result, ref, ledger = replay(tmp_path, SAMPLE / "BITTREX_ETH-BTC_5m.csv", "ETH/BTC", 1.0, cash=1.0)
    assert result.summary["n_fills"] == len(ref["fills"]) > 100
    assert_agrees(result, ref)
    run = result.summary["run_id"]
    assert len(ledger.frame("fills", run_id=run)) == result.summary["n_fills"]
    assert len(ledger.frame("signals", run_id=run)) == result.summary["signals"]


def test_cash_runs_out_and_rejections_agree(tmp_path):
    """With cash for about two lots, buys that cannot be paid are rejected, and so are the sells that follow them."""
    result, ref, _ = replay(tmp_path, SAMPLE / "BITTREX_LTC-BTC_5m.csv", "LTC/BTC", 10.0, cash=0.2, chunk=7)
    assert ref["rejected"] > 0
    assert_agrees(result, ref)


@pytest.mark.parametrize("path", sorted(SHARED_OHLCV.glob("*.csv")) or [None], ids=lambda p: p.name if p else "none")
def test_every_shared_file_matches_reference(tmp_path, path):
    if path is None:
        pytest.skip(f"{SHARED_OHLCV} not found")
    bars = load_ohlcv(path)
    base, quote = path.stem.split("_")[1].replace("-PERP", "").split("-")
    quantity = 0.5 / float(bars["close"].iloc[0])
    result, ref, _ = replay(tmp_path, path, f"{base}/{quote}", quantity, cash=1.0, chunk=200)
    assert_agrees(result, ref)


def test_signal_after_the_last_bar_stays_unfilled(tmp_path):
    bars = load_ohlcv(SAMPLE / "BITTREX_ETH-BTC_5m.csv").head(10)
    bars_path = tmp_path / "bars.csv"
    bars.assign(timestamp=bars["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(bars_path, index=False)
    last = bars["timestamp"].iloc[-1]
    sig = pd.DataFrame({"timestamp": [bars["timestamp"].iloc[2], last], "symbol": "ETH/BTC", "side": "buy",
                        "quantity": 1.0, "signal_id": ["early", "late"]})
    sig_path = tmp_path / "sig.csv"
    write_signals_csv(sig, sig_path)
    params = ReplayParams(str(bars_path), str(sig_path), "ETH/BTC", 1.0, 0.0, 0.0, None, 500)
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    result = asyncio.run(run_replay(params, load_inputs(params), ledger))
    assert result.summary["n_fills"] == 1 and result.summary["unfilled"] == 1
    orders = ledger.frame("orders", run_id=result.summary["run_id"]).set_index("client_order_id")
    assert sorted(orders["status"]) == ["CANCELED", "FILLED"]
    assert "market data ended" in orders.loc[orders["status"] == "CANCELED", "reason"].iloc[0]


def test_plan_batches_never_split_a_timestamp():
    ts = pd.to_datetime(["2024-01-01T00:00Z"] * 3 + ["2024-01-01T00:01Z"] * 3 + ["2024-01-01T00:02Z"], utc=True)
    sig = pd.DataFrame({"timestamp": ts, "signal_id": [str(i) for i in range(7)]})
    bars = pd.DataFrame({"timestamp": pd.date_range("2024-01-01", periods=5, freq="1min", tz="UTC")})
    from tradpal.replay import ReplayInputs

    batches = plan_batches(ReplayInputs(bars, sig), 2)
    sizes = [len(b.signals) for b in batches]
    assert sum(sizes) == 7 and sizes == [3, 3, 1]
    assert [b.final for b in batches] == [False, False, True]
    assert batches[0].monitor_until < ts[3] and batches[0].monitor_until > ts[2]


def test_max_drawdown():
    assert max_drawdown(np.array([100.0, 120.0, 90.0, 130.0, 117.0])) == pytest.approx(0.25)
    assert max_drawdown(np.array([1.0, 2.0, 3.0])) == 0.0
    assert max_drawdown(np.array([])) == 0.0


def _risk_replay(tmp_path, rows, risk_yaml, monkeypatch=None, receiver_url=None):
    sig = tmp_path / "sig.csv"
    sig.write_text("timestamp,symbol,side,quantity,signal_id,strategy\n" + "\n".join(rows) + "\n")
    risk = tmp_path / "risk.yaml"
    risk.write_text(risk_yaml + (f"alerts: {{urls: ['{receiver_url}'], throttle_s: 0}}\n" if receiver_url else ""))
    params = ReplayParams(str(SAMPLE / "BITTREX_ETH-BTC_5m.csv"), str(sig), "ETH/BTC", 1.0, 0.001, 0.0, None,
                          None, str(risk))
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    return asyncio.run(run_replay(params, load_inputs(params), ledger)), ledger


def test_replay_trips_a_limit_records_it_and_alerts(tmp_path, receiver):
    url, received = receiver
    result, ledger = _risk_replay(tmp_path, [
        "2018-01-10T05:00:00Z,ETH/BTC,buy,1,a,s", "2018-01-10T06:00:00Z,ETH/BTC,buy,1,b,s",
        "2018-01-10T07:00:00Z,ETH/BTC,sell,1,c,s"],
        "portfolio: {max_drawdown: 0.5, max_daily_loss: 0.5, max_gross_exposure: 5}\n"
        "assets: {ETH/BTC: {max_position: 1.5}}\n", receiver_url=url)
    s = result.summary
    assert s["n_fills"] == 2 and s["rejected"] == 1 and s["halted"] is False
    assert s["breaches"] == [{"time": "2018-01-10 06:00:00+00:00", "rule": "max_position", "symbol": "ETH/BTC",
                              "value": 2.0, "threshold": 1.5}]
    rej = ledger.frame("rejections", run_id=s["run_id"])
    assert rej[["signal_id", "step"]].values.tolist() == [["b", "pre_checks"]]
    assert [r["json"]["title"] for r in received] == ["TradPal risk breach at pre_checks: max_position ETH/BTC"]


def test_replay_halts_new_risk_after_the_drawdown_limit(tmp_path):
    # buy 8 ETH (~0.8 BTC of 1 BTC) at 05:05; ETH/BTC falls ~5% by 06:00, equity falls ~4% > 1%
    result, _ = _risk_replay(tmp_path, [
        "2018-01-10T05:00:00Z,ETH/BTC,buy,8,a,s", "2018-01-10T06:00:00Z,ETH/BTC,buy,0.5,b,s",
        "2018-01-10T06:00:00Z,ETH/BTC,sell,8,c,s"],
        "portfolio: {max_drawdown: 0.01, max_daily_loss: 0.5, max_gross_exposure: 5}\n")
    s = result.summary
    assert s["halted"] is True and [b["rule"] for b in s["breaches"]] == ["max_drawdown"]
    assert s["n_fills"] == 2  # the buy was refused; the reducing sell was allowed


def test_loss_limit_breaker_trips_persists_and_is_reset_audited(tmp_path, receiver, capsys):
    from tradpal.cli import main

    url, received = receiver
    result, ledger = _risk_replay(tmp_path, [
        "2018-01-10T05:00:00Z,ETH/BTC,buy,9,a,s", "2018-01-10T06:00:00Z,ETH/BTC,buy,0.1,b,s",
        "2018-01-10T06:00:00Z,ETH/BTC,sell,9,c,s"],
        "portfolio: {max_drawdown: 0.9, max_daily_loss: 0.9, max_gross_exposure: 5}\n"
        "breakers: {loss_limit: {threshold: 0.02}}\n", receiver_url=url)
    s = result.summary
    assert s["halted"] is True and "loss_limit" in [b["rule"] for b in s["breaches"]]
    rej = ledger.frame("rejections", run_id=s["run_id"]).set_index("signal_id")
    assert rej.loc["b", "reason"].startswith("breaker loss_limit (portfolio): equity")
    assert "c" not in rej.index  # selling to reduce risk stays allowed
    assert any(r["json"]["title"] == "TradPal breaker tripped: loss_limit" for r in received)
    # the state is in the ledger: a later process sees it, and a person resets it with a reason
    db = str(ledger.engine.url)
    assert main(["risk", "status", "--database-url", db]) == 0
    assert "TRIPPED loss_limit [replay:" in capsys.readouterr().out
    assert main(["risk", "reset", "--reason", "reviewed the replay", "--database-url", db]) == 0
    assert "reset 1 breaker(s)" in capsys.readouterr().out
    assert ledger.active_breakers() == []
    audit = ledger.frame("audit_log")
    reset = audit[audit["event"] == "breaker.reset"]
    assert reset["payload"].iloc[0] == {"reason": "reviewed the replay"}


def test_kelly_sizing_uses_the_recorded_round_trips(tmp_path):
    rows = []
    for i, (buy, sell) in enumerate([("05:00", "05:30"), ("06:00", "06:30"), ("07:00", "07:30")]):
        rows += [f"2018-01-10T{buy}:00Z,ETH/BTC,buy,1,b{i},k", f"2018-01-10T{sell}:00Z,ETH/BTC,sell,1,s{i},k"]
    result, ledger = _risk_replay(tmp_path, rows,
        "portfolio: {max_drawdown: 0.9, max_daily_loss: 0.9, max_gross_exposure: 5}\n"
        "sizing: {default: {method: signal}, strategies: {k: {method: kelly, min_trades: 2, fallback_fraction: 0.05,"
        " kelly_cap: 0.3}}}\n")
    audit = ledger.frame("audit_log", run_id=result.summary["run_id"])
    sized = audit[audit["event"] == "signal.sized"].set_index("entity_id")["payload"]
    assert sized["b0"]["inputs"]["fallback_fraction"] == 0.05 and sized["b0"]["inputs"]["trades"] == 0
    assert sized["b2"]["inputs"]["trades"] == 2 and "kelly" in sized["b2"]["inputs"]
    assert all(p["method"] == "kelly" for p in sized)


# -- equity.csv written while the replay runs ----------------------------------------------


def _curve(n: int, start: str = "2024-01-01") -> pd.DataFrame:
    rng = np.random.default_rng(5)
    cash = 1000 + rng.normal(size=n).cumsum()
    value = np.abs(rng.normal(size=n)) * 1e-7 + rng.integers(0, 3, n) * 0.1  # awkward floats: round-trip text
    return pd.DataFrame({"timestamp": pd.date_range(start, periods=n, freq="1min", tz="UTC"), "cash": cash,
                         "position_value": value, "equity": cash + value})


def test_equity_writer_writes_the_bytes_of_the_whole_curve(tmp_path):
    from tradpal.replay import EquityWriter, write_numeric_csv

    curve = _curve(1000)
    write_numeric_csv(curve, tmp_path / "whole.csv")
    writer = EquityWriter(tmp_path / "out")
    writer.add([curve.iloc[:1], curve.iloc[1:1]])  # an empty segment writes nothing
    writer.add([curve.iloc[1:400], curve.iloc[400:]])
    path = writer.finish()
    assert path.name.startswith(".equity.csv.") and path.parent == (tmp_path / "out").resolve()
    assert path.read_bytes() == (tmp_path / "whole.csv").read_bytes()
    first = (tmp_path / "whole.csv").read_text().splitlines()[:2]
    assert first[0] == "timestamp,cash,position_value,equity" and first[1].startswith("2024-01-01T00:00:00Z,")
    assert pd.read_csv(path, float_precision="round_trip")["position_value"].tolist() == curve["position_value"].tolist()  # exact round trip


def test_equity_writer_pieces_formatted_at_once_are_written_in_order(tmp_path, monkeypatch):
    """Segments are cut into pieces that two threads format at once: the file still has
    every row once, in order, as one whole-curve write has them."""
    from tradpal.replay import EquityWriter, write_numeric_csv

    monkeypatch.setattr(EquityWriter, "PIECE_ROWS", 7)
    curve = _curve(2000)
    write_numeric_csv(curve, tmp_path / "whole.csv")
    writer = EquityWriter(tmp_path / "out")
    writer.add([curve.iloc[:13], curve.iloc[13:14], curve.iloc[14:1500]])
    writer.add([curve.iloc[1500:]])
    assert writer.finish().read_bytes() == (tmp_path / "whole.csv").read_bytes()


def test_equity_writer_failure_and_abort_leave_no_file(tmp_path):
    from tradpal.replay import EquityWriter

    writer = EquityWriter(tmp_path)
    writer.add([_curve(10).drop(columns="cash")])  # fails in the background thread
    with pytest.raises(KeyError, match="cash"):
        writer.finish()
    assert list(tmp_path.iterdir()) == []
    writer = EquityWriter(tmp_path)
    writer.add([_curve(10)])
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_write_outputs_moves_the_streamed_equity_file_into_place(tmp_path):
    from tradpal.replay import EquityWriter, write_numeric_csv, write_outputs

    curve = _curve(50)
    reports = pd.DataFrame(columns=["timestamp", "signal_id", "side", "quantity", "price", "fee"])
    for where in ("out", "elsewhere"):  # written in the output directory or another on the same disk: renamed
        writer = EquityWriter(tmp_path / where)
        writer.add([curve.iloc[:20], curve.iloc[20:]])
        write_outputs(tmp_path / "out", reports, {"n_fills": 0}, curve, writer.finish())
        write_numeric_csv(curve, tmp_path / "expected.csv")
        assert (tmp_path / "out" / "equity.csv").read_bytes() == (tmp_path / "expected.csv").read_bytes()
        assert sorted(p.name for p in (tmp_path / where).iterdir() if p.name.startswith(".")) == []
    writer = EquityWriter(tmp_path / "out")  # fills.csv cannot be written: the streamed file goes too
    writer.add([curve])
    with pytest.raises(KeyError):
        write_outputs(tmp_path / "out", reports.drop(columns="fee"), {"n_fills": 0}, curve, writer.finish())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["equity.csv", "fills.csv", "summary.json"]


def test_replay_streams_equity_and_a_failed_replay_leaves_none(tmp_path, monkeypatch):
    from tradpal.replay import write_numeric_csv

    ohlcv = SAMPLE / "BITTREX_ETH-BTC_5m.csv"
    signals = sma_crossover(load_ohlcv(ohlcv), symbol="ETH/BTC", quantity=1.0)
    write_signals_csv(signals, tmp_path / "signals.csv")
    params = ReplayParams(str(ohlcv), str(tmp_path / "signals.csv"), "ETH/BTC", 1.0, 0.001, 5.0, None, 50)
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    out = tmp_path / "out"
    result = asyncio.run(run_replay(params, load_inputs(params), ledger, equity_to=out))
    assert len(plan_batches(load_inputs(params), 50)) > 3  # several segments, appended in order
    write_numeric_csv(result.equity, tmp_path / "expected.csv")
    assert result.equity_file.read_bytes() == (tmp_path / "expected.csv").read_bytes()
    result.equity_file.unlink()

    import tasks.pipeline

    calls = {"n": 0}
    real = tasks.pipeline.run_step

    async def failing(step, frame, ctx):  # the third batch fails: two segments were handed over already
        calls["n"] += 1
        if calls["n"] > 16:
            raise RuntimeError("the venue went away")
        return await real(step, frame, ctx)

    monkeypatch.setattr(tasks.pipeline, "run_step", failing)
    with pytest.raises(RuntimeError, match="venue"):
        asyncio.run(run_replay(params, load_inputs(params), ledger, equity_to=out))
    assert list(out.iterdir()) == []
    assert ledger.frame("runs")["status"].tolist() == ["running", "failed"]  # the first: its caller finishes it
