"""A signal's own order settings through the steps: its bracket levels (stop_loss,
take_profit as absolute prices; trailing_stop) over the strategy's, validated at intake
and audited with their source; its time in force (GTC/IOC/FOK) in a replay and on the
live paper path; a partly filled entry protected as it fills; an entry still working
(or filled) when the process restarts.

Bars are one minute apart from t(1); an entry placed at T0 fills at the t(1) open. Fees
are 0. With ``max_participation=0.1`` a bar of volume 10 fills at most 1 unit."""

from __future__ import annotations

import pandas as pd
import pytest

from risk.config import parse_risk_config
from tasks.context import Book, ExecutionContext, MarketData, PipelineConfig
from tasks.intake import intake_signals
from tasks.orders import client_order_id
from tasks.pipeline import STEPS, run_step
from tasks.recorder import LedgerRecorder
from tests.tasks.conftest import SYM, bars, build_context, ledger_context, raw_signals, run, t

PORTFOLIO = "portfolio: {max_drawdown: 1, max_daily_loss: 1, max_gross_exposure: 10}\n"
PCT = parse_risk_config(PORTFOLIO + "brackets:\n  default: {stop_loss: {percent: 0.05}, take_profit: {percent: 0.10}}")
NO_RULE = PipelineConfig(order_timeout_s=None)  # no risk configuration at all: only the signal's levels
WITH_RULE = PipelineConfig(order_timeout_s=None, risk=PCT)
ENTRY = (100, 101, 99, 100)
QUIET = (100, 101, 99.5, 100)


def leg(n: int, sid: str = "s1") -> str:
    return client_order_id(sid, n)


def run_through(raw: pd.DataFrame, ctx, frames: dict | None = None) -> pd.DataFrame:
    frame = raw
    for step in STEPS:
        frame = run(run_step(step, frame, ctx))
        if frames is not None:
            frames[step.name] = frame
    return frame


def by_order(out: pd.DataFrame) -> dict[str, list[tuple]]:
    got: dict[str, list[tuple]] = {}
    for r in out.itertuples():
        got.setdefault(r.client_order_id, []).append((r.exec_type, r.quantity, r.price, r.timestamp))
    return got


def kinds(got: dict, coid: str) -> list[str]:
    return [e[0] for e in got.get(coid, [])]


def audit(ledger, event: str) -> list[dict]:
    a = ledger.frame("audit_log")
    return a.loc[a["event"] == event, "payload"].tolist()


# -- per-signal levels ---------------------------------------------------------------------


@pytest.mark.parametrize("native", [True, False], ids=["native", "emulated"])
def test_the_signals_own_levels_make_the_bracket_without_any_rule(native) -> None:
    # stop 97 and target 105 from the signal; t(2) reaches neither, t(3)'s low 96 takes the stop at 97
    rows = [ENTRY, QUIET, (99, 100, 96, 97), (97, 98, 96, 97)]
    ctx = build_context(market={SYM: bars(rows)}, config=NO_RULE, native_brackets=native)
    ctx.monitor_until = t(4)
    got = by_order(run_through(raw_signals({"quantity": 2.0, "stop_loss": 97.0, "take_profit": 105.0}), ctx))
    assert got[leg(0)] == [("FILL", 2.0, 100.0, t(1))]
    assert got[leg(1)] == [("FILL", 2.0, 97.0, t(3))]
    assert kinds(got, leg(2)) == ["CANCELED"]
    assert ctx.book.positions[SYM] == 0.0 and ctx.book.realized_pnl == pytest.approx(-6.0)
    assert ctx.brackets == {} and ctx.signal_brackets == {}


def test_a_signal_level_replaces_the_strategys_leg_and_the_audit_says_where_each_came_from(ledger) -> None:
    # the strategy's rule: 5 % / 10 %; the signal brings its own stop (98): stop 98 (signal),
    # target 110 (strategy, 10 % above the 100 fill); t(2) reaches 110
    rows = [ENTRY, (104, 111, 103, 108), QUIET]
    ctx = ledger_context(ledger, market={SYM: bars(rows)}, config=WITH_RULE, native_brackets=False)
    ctx.monitor_until = t(3)
    got = by_order(run_through(raw_signals({"quantity": 2.0, "stop_loss": 98.0}), ctx))
    assert got[leg(2)] == [("FILL", 2.0, pytest.approx(110.0), t(2))] and kinds(got, leg(1)) == ["CANCELED"]
    orders = ledger.frame("orders").set_index("client_order_id")
    assert orders.loc[leg(1), "stop_price"] == 98.0 and orders.loc[leg(2), "price"] == pytest.approx(110.0)
    [requested] = audit(ledger, "bracket.requested")
    assert (requested["stop_loss"], requested["take_profit"], requested["trailing_stop"]) == (98.0, None, False)
    [opened] = audit(ledger, "bracket.opened")
    assert opened["levels"] == {"stop_loss": {"source": "signal", "rule": "price 98"},
                                "take_profit": {"source": "strategy", "rule": "percent 0.1"}}
    assert (opened["stop"], opened["target"]) == (98.0, pytest.approx(110.0))


def test_a_signals_trailing_stop_trails_the_strategys_fixed_stop() -> None:
    # strategy: stop 5 % (95, distance 5), not trailing; the signal asks for a trailing stop:
    # t(2)'s high 108 -> 103 from t(3), whose low 102 takes it at 103
    rows = [ENTRY, (101, 108, 100, 107), (104, 105, 102, 103)]
    ctx = build_context(market={SYM: bars(rows)}, config=WITH_RULE)
    ctx.monitor_until = t(3)
    got = by_order(run_through(raw_signals({"quantity": 2.0, "trailing_stop": True}), ctx))
    assert got[leg(1)] == [("FILL", 2.0, pytest.approx(103.0), t(3))]


def rejected(raw: pd.DataFrame, config: PipelineConfig = NO_RULE, **kw) -> dict[str, str]:
    ctx = build_context(config=config, **kw)
    result = intake_signals(raw, ctx)
    return dict(zip(result.rejected["signal_id"], result.rejected["reason"], strict=True))


def test_intake_refuses_levels_on_the_wrong_side_with_the_reason() -> None:
    raw = raw_signals(
        {"reference_price": 100.0, "stop_loss": 101.0},  # a buy's stop above its reference
        {"reference_price": 100.0, "take_profit": 100.0},  # a target at the reference: not above
        {"reference_price": 100.0, "stop_loss": 95.0, "take_profit": 94.0},
        {"side": "sell", "stop_loss": 90.0},  # a sell entry gets no bracket
        {"stop_loss": -1.0},
        {"stop_loss": "abc"},
        {"trailing_stop": True},  # no stop anywhere to trail
        {"stop_loss": 100.0, "timestamp": t(2)},  # no reference given: the last close (100) is the reference
        {"reference_price": 100.0, "stop_loss": 95.0, "take_profit": 110.0, "trailing_stop": True},  # fine
    )
    assert rejected(raw) == {
        "s1": "stop_loss: the stop loss 101 of a buy must be below its reference price 100",
        "s2": "take_profit: the take profit 100 of a buy must be above its reference price 100",
        "s3": "take_profit: take_profit 94 must be above stop_loss 95",
        "s4": "stop_loss: a bracket protects a buy entry: a sell signal cannot carry stop_loss, take_profit or "
              "trailing_stop",
        "s5": "stop_loss: stop_loss must be a price > 0, got -1.0",
        "s6": "stop_loss: stop_loss must be a price > 0, got 'abc'",
        "s7": "trailing_stop: a trailing stop needs a stop_loss (in the signal or the strategy's bracket rule)",
        "s8": "stop_loss: the stop loss 100 of a buy must be below its reference price 100",
    }
    # with the strategy's stop to trail, trailing_stop alone is fine
    assert rejected(raw_signals({"trailing_stop": "true"}), WITH_RULE) == {}


def test_intake_refuses_an_unknown_time_in_force_and_normalises_a_known_one() -> None:
    ctx = build_context()
    result = intake_signals(raw_signals({"time_in_force": "day"}, {"time_in_force": " ioc "}, {}), ctx)
    assert result.rejected["reason"].tolist() == ["time_in_force: unknown time_in_force 'day' (expected GTC, IOC, FOK)"]
    assert result.frame["time_in_force"].tolist() == ["IOC", None]


# -- time in force -------------------------------------------------------------------------


def test_time_in_force_per_signal_in_a_replay(ledger) -> None:
    # 2.5 to buy, at most 1 per bar (volume 10, 10 % participation), one order per replay:
    # GTC fills 1, 1, 0.5 over three bars; IOC fills 1 on its first bar and cancels the
    # rest; FOK cannot fill it all on its first bar: expired untouched
    got, why = {}, {}
    for tif in ("GTC", "IOC", "FOK", None):
        ctx = ledger_context(ledger, market={SYM: bars([(100, 101, 99, 100, 10)] * 3)}, config=NO_RULE,
                             max_participation=0.1)
        ctx.monitor_until = t(3)
        frames: dict = {}
        sid = tif or "default"
        got.update(by_order(run_through(raw_signals({"signal_id": sid, "quantity": 2.5, "time_in_force": tif}), ctx,
                                        frames)))
        why.update(frames["monitoring"].groupby("client_order_id")["reason"].last().to_dict())
    fills = {sid: [(e[0], e[1], e[3]) for e in got[leg(0, sid)]] for sid in ("GTC", "IOC", "FOK", "default")}
    assert fills["GTC"] == fills["default"] == [("PARTIAL_FILL", 1.0, t(1)), ("PARTIAL_FILL", 1.0, t(2)),
                                                 ("FILL", 0.5, t(3))]
    assert fills["IOC"] == [("PARTIAL_FILL", 1.0, t(1)), ("CANCELED", 0.0, t(1))]
    assert why[leg(0, "IOC")].startswith("IOC remainder 1.5 canceled after its first eligible bar")
    assert fills["FOK"] == [("EXPIRED", 0.0, t(1))]
    assert why[leg(0, "FOK")].startswith("FOK order could not fill entirely on its first eligible bar")
    orders = ledger.frame("orders").set_index("client_order_id")
    assert orders.loc[[leg(0, s) for s in ("GTC", "IOC", "FOK", "default")], "time_in_force"].tolist() == [
        "GTC", "IOC", "FOK", "GTC"]


def test_time_in_force_per_signal_on_the_live_paper_path() -> None:
    # the last price is 100: a limit buy at 99 does not cross. IOC and FOK end at once
    # (expired untouched); GTC rests and fills when the price comes down
    ctx = build_context(live=True, prices={SYM: 100.0}, config=PipelineConfig(order_timeout_s=0.3))
    raw = raw_signals(*({"signal_id": tif, "order_type": "limit", "limit_price": 99.0, "reference_price": 100.0,
                         **({"time_in_force": tif} if tif != "gtc" else {})} for tif in ("IOC", "FOK", "gtc")))
    frames: dict = {}
    got = by_order(run_through(raw, ctx, frames))
    assert kinds(got, leg(0, "IOC")) == ["EXPIRED"] and kinds(got, leg(0, "FOK")) == ["EXPIRED"]
    reason = frames["monitoring"].set_index("client_order_id")["reason"]
    assert reason[leg(0, "IOC")].startswith("IOC order not filled on its first eligible bar")
    assert kinds(got, leg(0, "gtc")) == ["CANCELED"]  # rested until the 0.3 s order timeout
    assert frames["order_creation"]["time_in_force"].tolist() == ["IOC", "FOK", "GTC"]


# -- a partly filled entry -----------------------------------------------------------------


@pytest.mark.parametrize("native", [True, False], ids=["native-broker", "emulating-broker"])
def test_a_partly_filled_entry_is_protected_as_it_fills_and_the_bracket_grows(ledger, native) -> None:
    # 3 to buy at 1 per bar (t1, t2, t3 at 100): the emulated bracket (stop 95, target 110)
    # covers 1 after t(1), 2 after t(2) (legs 3 / 500), 3 after t(3) (legs 4 / 501). t(4)
    # (volume 1000) takes the stop for all 3 at 95. A participation cap makes monitoring
    # emulate the bracket even on a broker with native brackets (those wait for the end)
    rows = [(100, 101, 99, 100, 10)] * 3 + [(99, 100, 94, 96, 1000)]
    ctx = ledger_context(ledger, market={SYM: bars(rows)}, config=WITH_RULE, native_brackets=native,
                         max_participation=0.1)
    ctx.monitor_until = t(4)
    frames: dict = {}
    got = by_order(run_through(raw_signals({"quantity": 3.0}), ctx, frames))
    assert [(e[0], e[1]) for e in got[leg(0)]] == [("PARTIAL_FILL", 1.0), ("PARTIAL_FILL", 1.0), ("FILL", 1.0)]
    assert got[leg(4)] == [("FILL", 3.0, 95.0, t(4))]
    for n in (1, 2, 3, 500):
        assert kinds(got, leg(n)) == ["CANCELED"], n
    assert kinds(got, leg(501)) == ["CANCELED"]
    reason = frames["monitoring"].set_index("client_order_id")["reason"]
    assert reason[leg(1)] == f"the bracket grows to 2: the entry {leg(0)} filled more"
    orders = ledger.frame("orders").set_index("client_order_id")
    assert orders.loc[[leg(1), leg(3), leg(4)], "quantity"].tolist() == [1.0, 2.0, 3.0]
    assert orders.loc[[leg(2), leg(500), leg(501)], "order_type"].tolist() == ["limit"] * 3
    [opened] = audit(ledger, "bracket.opened")
    assert (opened["quantity"], opened["entry_status"]) == (1.0, "PARTIALLY_FILLED")
    grown = audit(ledger, "bracket.grown")
    assert [(g["quantity"], g["entry_filled_before"], g["legs"]) for g in grown] == [
        (2.0, 1.0, {"stop": leg(3), "target": leg(500)}), (3.0, 2.0, {"stop": leg(4), "target": leg(501)})]
    assert ctx.book.positions[SYM] == 0.0 and ctx.brackets == {}


@pytest.mark.parametrize("native", [True, False], ids=["native", "emulated"])
def test_an_entrys_rest_cancelled_leaves_the_bracket_on_what_filled(native) -> None:
    # IOC 2.5 at 1 per bar: 1 fills at t(1), the rest is cancelled at once; the bracket
    # protects that 1 (native: placed when the entry ends; emulated: as it fills)
    rows = [(100, 101, 99, 100, 10), (99, 100, 94, 96, 1000)]
    ctx = build_context(market={SYM: bars(rows)}, config=WITH_RULE, native_brackets=native, max_participation=0.1)
    ctx.monitor_until = t(2)
    got = by_order(run_through(raw_signals({"quantity": 2.5, "time_in_force": "IOC"}), ctx))
    assert [(e[0], e[1]) for e in got[leg(0)]] == [("PARTIAL_FILL", 1.0), ("CANCELED", 0.0)]
    assert got[leg(1)] == [("FILL", 1.0, 95.0, t(2))] and kinds(got, leg(2)) == ["CANCELED"]
    assert ctx.book.positions[SYM] == 0.0


def test_a_leg_filling_while_the_entry_still_works_cancels_the_entrys_rest() -> None:
    # a limit buy of 3 at 100, at 1 per bar: 1 at t(1). t(2) rises to 111 without coming
    # back to 100: the entry does not fill, the target (110) sells the 1 held; the trade is
    # over, so the entry's rest is cancelled (no new position behind a closed bracket)
    rows = [(100, 101, 99.5, 100, 10), (104, 111, 103, 108, 10), (100, 101, 99, 100, 10)]
    ctx = build_context(market={SYM: bars(rows)}, config=WITH_RULE, native_brackets=False, max_participation=0.1)
    ctx.monitor_until = t(3)
    frames: dict = {}
    got = by_order(run_through(raw_signals({"quantity": 3.0, "order_type": "limit", "limit_price": 100.0}), ctx,
                               frames))
    assert [(e[0], e[1]) for e in got[leg(0)]] == [("PARTIAL_FILL", 1.0), ("CANCELED", 0.0)]
    assert got[leg(2)] == [("FILL", 1.0, pytest.approx(110.0), t(2))] and kinds(got, leg(1)) == ["CANCELED"]
    reason = frames["monitoring"].groupby("client_order_id")["reason"].last()
    assert reason[leg(0)] == f"the bracket's target leg {leg(2)} filled: the rest of the entry is cancelled"
    assert ctx.book.positions[SYM] == 0.0 and ctx.open_orders == {} and ctx.brackets == {}


# -- restart ---------------------------------------------------------------------------------


def restarted(first, ledger, config, rows, *, run_id: str | None = None) -> ExecutionContext:
    """A new process over the same broker, clock, ledger and namespace (new run id)."""
    broker = first.broker
    ctx = ExecutionContext(broker=broker, clock=first.clock, config=config, market=MarketData({SYM: bars(rows)}),
                           book=Book(cash=broker.cash, quote_currency="USDT"),
                           recorder=None, run_id=run_id or ledger.start_run("replay", {"restart": True}),
                           namespace=first.namespace)
    ctx.recorder = LedgerRecorder(ledger, run_id=ctx.run_id, namespace=ctx.namespace, venue=ctx.venue)
    if broker.position(SYM):
        ctx.book.positions[SYM] = broker.position(SYM)
    return ctx


@pytest.mark.parametrize("native", [True, False], ids=["native", "emulated"])
def test_an_entry_still_working_at_a_restart_gets_its_bracket_when_it_fills(ledger, native) -> None:
    # a limit buy at 99 (GTC) rests over t(1)-t(2); the process stops. The new process
    # finds it working, takes it into monitoring; t(3) trades through 99: it fills at 99,
    # and its bracket comes from the signal's stop (96) and the strategy's target (10 %:
    # 108.9). t(4) falls to 95: the stop at 96
    rows = [QUIET, QUIET, (99, 100, 98, 99), (97, 98, 95, 96)]
    first = ledger_context(ledger, market={SYM: bars(rows)}, config=WITH_RULE, native_brackets=native)
    first.monitor_until = t(2)
    raw = raw_signals({"quantity": 2.0, "order_type": "limit", "limit_price": 99.0, "stop_loss": 96.0})
    run_through(raw, first)
    assert ledger.find_order(first.venue, leg(0))["status"] == "NEW"
    ctx = restarted(first, ledger, WITH_RULE, rows)
    ctx.monitor_until = t(4)
    got = by_order(run_through(raw_signals({}).iloc[0:0], ctx))
    assert got[leg(0)] == [("FILL", 2.0, 99.0, t(3))]
    assert got[leg(1)] == [("FILL", 2.0, 96.0, t(4))] and kinds(got, leg(2)) == ["CANCELED"]
    orders = ledger.frame("orders").set_index("client_order_id")
    assert orders.loc[leg(2), "price"] == pytest.approx(108.9)
    [resumed] = audit(ledger, "bracket.resumed")
    assert (resumed["entry"], resumed["entry_status"], resumed["sources"]) == (
        leg(0), "NEW", {"stop_loss": "signal", "take_profit": "strategy"})
    assert ctx.book.positions[SYM] == 0.0 and ctx.book.realized_pnl == pytest.approx(-6.0)


def test_an_entry_filled_while_down_gets_its_bracket_after_reconciliation(ledger) -> None:
    from tasks.reconcile import reconcile
    from tradpal.ledger import Provenance

    rows = [QUIET, QUIET, (99, 100, 98, 99), QUIET, (97, 98, 95, 96)]
    first = ledger_context(ledger, market={SYM: bars(rows)}, config=WITH_RULE, native_brackets=False)
    first.monitor_until = t(2)
    run_through(raw_signals({"quantity": 2.0, "order_type": "limit", "limit_price": 99.0, "stop_loss": 96.0}), first)
    run(first.clock.sleep_until(t(3)))  # down: the entry fills at 99
    ctx = restarted(first, ledger, WITH_RULE, rows)
    run(reconcile(ledger, first.broker, namespace=first.namespace, prov=Provenance(run_id=ctx.run_id)))
    assert ledger.find_order(first.venue, leg(0))["status"] == "FILLED"
    ctx.monitor_until = t(5)
    got = by_order(run_through(raw_signals({}).iloc[0:0], ctx))
    assert leg(0) not in got  # its fill was booked by the reconciliation
    assert got[leg(1)] == [("FILL", 2.0, 96.0, t(5))] and kinds(got, leg(2)) == ["CANCELED"]
    # a second restart finds the bracket over: nothing is resumed again
    again = restarted(first, ledger, WITH_RULE, rows)
    again.monitor_until = t(5)
    run_through(raw_signals({}).iloc[0:0], again)
    assert [r["entry"] for r in audit(ledger, "bracket.resumed") if "entry" in r] == [leg(0)]


def test_levels_of_a_signal_refused_after_intake_are_not_kept() -> None:
    # 1e6 units cannot be paid: refused at step 4; its levels (kept from step 1 for the
    # monitoring step) are dropped with the batch, as are those of the one that traded
    ctx = build_context(market={SYM: bars([ENTRY, QUIET])}, config=NO_RULE)
    ctx.monitor_until = t(2)
    run_through(raw_signals({"signal_id": "big", "quantity": 1e6, "stop_loss": 90.0},
                            {"signal_id": "ok", "stop_loss": 90.0}), ctx)
    assert ctx.signal_brackets == {} and set(ctx.brackets) == {leg(0, "ok")}
