"""Brackets through the steps: stop loss and take profit as an OCO pair on each buy
entry, native on the paper broker and emulated by monitoring where a broker has no
native support; trailing stops; legs in the ledger; restart; live paper.

Bars are one minute apart from t(1); the entry (market buy 2 at T0) fills at the t(1)
open of 100; the legs are eligible from t(2). Fees are 0."""

from __future__ import annotations

import pandas as pd
import pytest

from risk.config import parse_risk_config
from tasks.context import Book, ExecutionContext, MarketData, PipelineConfig
from tasks.orders import client_order_id
from tasks.pipeline import STEPS, run_step
from tasks.recorder import LedgerRecorder
from tests.tasks.conftest import SYM, bars, build_context, ledger_context, raw_signals, run, t

PORTFOLIO = "portfolio: {max_drawdown: 1, max_daily_loss: 1, max_gross_exposure: 10}\n"
STOP, TARGET = client_order_id("s1", 1), client_order_id("s1", 2)


def risk(brackets: str):
    return parse_risk_config(PORTFOLIO + "brackets:\n  " + brackets)


PCT = risk("default: {stop_loss: {percent: 0.05}, take_profit: {percent: 0.10}}")
CONFIG = PipelineConfig(order_timeout_s=None, risk=PCT)
ENTRY = (100, 101, 99, 100)


def run_through(raw: pd.DataFrame, ctx, last: str = "analysis", frames: dict | None = None) -> pd.DataFrame:
    """Every step in order; ``frames`` collects each step's output (monitoring's has the reasons)."""
    frame = raw
    for step in STEPS:
        frame = run(run_step(step, frame, ctx))
        if frames is not None:
            frames[step.name] = frame
        if step.name == last:
            break
    return frame


def reasons(frames: dict) -> dict[str, str]:
    m = frames["monitoring"]
    return dict(zip(m["client_order_id"], m["reason"], strict=True))


def replay(rows, *, config=CONFIG, signals=None, native=True, ledger=None, until=None, frames=None):
    kw = dict(market={SYM: bars(rows)}, config=config, native_brackets=native)
    ctx = ledger_context(ledger, **kw) if ledger is not None else build_context(**kw)
    ctx.monitor_until = until or t(len(rows))
    out = run_through(signals if signals is not None else raw_signals({"quantity": 2.0}), ctx, "analysis", frames)
    return ctx, out


def by_order(out: pd.DataFrame) -> dict[str, list[tuple]]:
    got: dict[str, list[tuple]] = {}
    for r in out.itertuples():
        got.setdefault(r.client_order_id, []).append((r.exec_type, r.quantity, r.price, r.timestamp))
    return got


@pytest.mark.parametrize("native", [True, False], ids=["native", "emulated"])
def test_the_stop_is_hit_and_the_target_cancelled(native) -> None:
    frames: dict = {}
    ctx, out = replay([ENTRY, (100, 102, 98, 99), (99, 100, 94, 96), (96, 97, 95, 96)], native=native, frames=frames)
    got = by_order(out)
    assert got[client_order_id("s1")] == [("FILL", 2.0, 100.0, t(1))]
    assert got[STOP] == [("FILL", 2.0, 95.0, t(3))]
    assert [e[0] for e in got[TARGET]] == ["CANCELED"]
    reason = reasons(frames)[TARGET]
    assert "OCO" in reason and STOP in reason
    assert ctx.book.positions[SYM] == 0.0 and ctx.book.cash == pytest.approx(10_000 - 200 + 190)
    assert ctx.book.realized_pnl == pytest.approx(-10.0)
    assert out.set_index("client_order_id").loc[STOP, "slippage_bps"] == pytest.approx(0.0)  # against the stop level
    assert ctx.brackets == {} and ctx.open_orders == {}


@pytest.mark.parametrize("native", [True, False], ids=["native", "emulated"])
def test_the_target_is_hit_and_the_stop_cancelled(native) -> None:
    ctx, out = replay([ENTRY, (104, 111, 103, 108), (90, 90, 80, 85)], native=native)
    got = by_order(out)
    assert got[TARGET] == [("FILL", 2.0, pytest.approx(110.0), t(2))]
    assert [e[0] for e in got[STOP]] == ["CANCELED"]
    assert ctx.book.positions[SYM] == 0.0 and ctx.book.realized_pnl == pytest.approx(20.0)


def test_both_reached_on_one_bar_native_the_stop_wins() -> None:
    ctx, out = replay([ENTRY, (100, 120, 80, 100)])
    got = by_order(out)
    assert got[STOP] == [("FILL", 2.0, 95.0, t(2))] and [e[0] for e in got[TARGET]] == ["CANCELED"]
    assert out["exec_type"].tolist().count("REJECTED") == 0


def test_both_reached_on_one_bar_emulated_the_venue_refuses_the_second_sell() -> None:
    # emulated legs are two plain orders: the simulator fills the stop (placed first) and
    # refuses the target at fill time (no position left); the refusal is reported, not lost
    ctx, out = replay([ENTRY, (100, 120, 80, 100)], native=False)
    got = by_order(out)
    assert got[STOP] == [("FILL", 2.0, 95.0, t(2))]
    assert [e[0] for e in got[TARGET]] == ["REJECTED"]
    assert ctx.book.positions[SYM] == 0.0


def test_atr_and_absolute_levels_and_a_trailing_stop() -> None:
    # ATR(2) at the signal's time (T0 has no bar: the bars before the entry are t(-1), t(0))
    cfg = PipelineConfig(order_timeout_s=None, risk=risk(
        "default: {stop_loss: {atr_multiple: 2, atr_period: 2}, take_profit: {price: 130}, trailing: true}"))
    rows = [(100, 102, 98, 100), (100, 102, 98, 100), ENTRY, (101, 108, 100, 107), (107, 112, 104, 111),
            (110, 111, 108, 109), (109, 110, 100, 101)]
    ctx = build_context(market={SYM: bars(rows, first=-1)}, config=cfg)
    ctx.monitor_until = t(5)
    out = run_through(raw_signals({"quantity": 2.0}), ctx, "analysis")
    # true ranges 4, 4 -> ATR 4: stop 100 - 8 = 92 (distance 8), target 130. The stop
    # trails the highs: 108 -> 100 from t(3), 112 -> 104 from t(4); t(5)'s low 100 reaches 104
    got = by_order(out)
    assert got[STOP] == [("FILL", 2.0, pytest.approx(104.0), t(5))]
    assert [e[0] for e in got[TARGET]] == ["CANCELED"]


def test_an_emulated_trailing_stop_is_replaced_as_it_moves(ledger) -> None:
    # the same bars and levels as the native case above: stop 92 (distance 8) from t(2);
    # t(2)'s high 108 -> leg 3 at 100 from t(3); t(3)'s high 112 -> leg 4 at 104 from t(4);
    # t(5)'s low 100 reaches it: 104, as natively
    cfg = PipelineConfig(order_timeout_s=None, risk=risk(
        "default: {stop_loss: {atr_multiple: 2, atr_period: 2}, take_profit: {price: 130}, trailing: true}"))
    rows = [(100, 102, 98, 100), (100, 102, 98, 100), ENTRY, (101, 108, 100, 107), (107, 112, 104, 111),
            (110, 111, 108, 109), (109, 110, 100, 101)]
    ctx = ledger_context(ledger, market={SYM: bars(rows, first=-1)}, config=cfg, native_brackets=False)
    ctx.monitor_until = t(5)
    frames: dict = {}
    got = by_order(run_through(raw_signals({"quantity": 2.0}), ctx, "analysis", frames))
    leg3, leg4 = client_order_id("s1", 3), client_order_id("s1", 4)
    assert got[leg4] == [("FILL", 2.0, pytest.approx(104.0), t(5))]
    assert [e[0] for e in got[STOP]] == [e[0] for e in got[leg3]] == [e[0] for e in got[TARGET]] == ["CANCELED"]
    why = reasons(frames)
    assert why[STOP] == f"trailing stop moved to 100: replaced by {leg3}"
    assert why[leg3] == f"trailing stop moved to 104: replaced by {leg4}"
    assert ctx.book.positions[SYM] == 0.0 and ctx.brackets == {}
    orders = ledger.frame("orders").set_index("client_order_id")
    assert orders.loc[[STOP, leg3, leg4], "stop_price"].tolist() == [92.0, 100.0, 104.0]
    moved = ledger.frame("audit_log").query("event == 'bracket.stop_moved'")["payload"].tolist()
    assert [(m["from"], m["to"]) for m in moved] == [(92.0, 100.0), (100.0, 104.0)]


def test_a_sell_signal_closes_the_open_bracket() -> None:
    rows = [ENTRY, (100, 101, 99, 100), (100, 101, 99, 100), (100, 101, 99, 100)]
    ctx = build_context(market={SYM: bars(rows)}, config=CONFIG)
    ctx.monitor_until = t(2) - pd.Timedelta(1, "ns")
    run_through(raw_signals({"quantity": 2.0}), ctx, "analysis")
    assert set(ctx.open_orders) == {STOP, TARGET}
    ctx.monitor_until = t(4)
    frames: dict = {}
    out = run_through(raw_signals({"signal_id": "x", "side": "sell", "quantity": 2.0, "timestamp": t(2)}), ctx,
                      "analysis", frames)
    got = by_order(out)
    assert [e[0] for e in got[STOP]] == ["CANCELED"] and [e[0] for e in got[TARGET]] == ["CANCELED"]
    assert "closed by the sell signal x" in reasons(frames)[STOP]
    assert got[client_order_id("x")] == [("FILL", 2.0, 100.0, t(3))]
    assert ctx.book.positions[SYM] == 0.0 and ctx.brackets == {}


def test_no_bracket_for_a_strategy_without_a_rule_and_none_without_risk_config() -> None:
    cfg = PipelineConfig(order_timeout_s=None, risk=risk("strategies: {other: {stop_loss: {percent: 0.05}}}"))
    for config in (cfg, PipelineConfig(order_timeout_s=None)):
        ctx, out = replay([ENTRY, (90, 90, 80, 85)], config=config)
        assert out["client_order_id"].tolist() == [client_order_id("s1")]
        assert ctx.brackets == {}


def test_a_leg_on_the_wrong_side_is_skipped_and_said(receiver) -> None:
    from risk.alerts import Alerter

    cfg = PipelineConfig(order_timeout_s=None, risk=risk("default: {stop_loss: {price: 120}, take_profit: {price: 130}}"))
    ctx = build_context(market={SYM: bars([ENTRY, (104, 131, 103, 108)])}, config=cfg)
    url, received = receiver
    ctx.alerter = Alerter([url])
    ctx.monitor_until = t(2)
    got = by_order(run_through(raw_signals({"quantity": 2.0}), ctx, "analysis"))
    assert STOP not in got and got[TARGET] == [("FILL", 2.0, 130.0, t(2))]
    [alert] = received
    assert "stop_loss (price 120) gives no price below the entry 100" in alert["json"]["message"]


def test_legs_are_in_the_ledger_with_the_bracket_audited(ledger) -> None:
    ctx, _ = replay([ENTRY, (100, 102, 98, 99), (99, 100, 94, 96)], ledger=ledger)
    orders = ledger.frame("orders").set_index("client_order_id")
    assert orders.loc[STOP, ["order_type", "side", "quantity", "stop_price", "status", "filled_quantity"]].tolist() \
        == ["stop", "sell", 2.0, 95.0, "FILLED", 2.0]
    assert orders.loc[TARGET, ["order_type", "price", "status"]].tolist() == ["limit", pytest.approx(110.0), "CANCELED"]
    assert orders.loc[STOP, "signal_pk"] == orders.loc[client_order_id("s1"), "signal_pk"]
    fills = ledger.frame("fills")
    assert len(fills) == 2 and fills["price"].tolist() == [100.0, 95.0]
    audit = ledger.frame("audit_log")
    opened = audit[audit["event"] == "bracket.opened"]["payload"].iloc[0]
    assert (opened["stop"], opened["target"], opened["native"]) == (95.0, pytest.approx(110.0), True)
    closed = audit[audit["event"] == "bracket.closed"]["payload"].iloc[0]
    assert (closed["outcome"], closed["leg"], closed["price"]) == ("stop", STOP, 95.0)


@pytest.mark.parametrize("native", [True, False], ids=["native", "emulated"])
def test_open_legs_survive_a_restart(ledger, native) -> None:
    rows = [ENTRY, (100, 101, 99, 100), (104, 111, 103, 108)]
    first = ledger_context(ledger, market={SYM: bars(rows)}, config=CONFIG, native_brackets=native)
    first.monitor_until = t(2)
    run_through(raw_signals({"quantity": 2.0}), first, "analysis")
    assert set(first.open_orders) == {STOP, TARGET}
    # a new process: new context and recorder over the same ledger, namespace and venue
    broker, clock = first.broker, first.clock
    ctx = ExecutionContext(broker=broker, clock=clock, config=CONFIG, market=MarketData({SYM: bars(rows)}),
                           book=Book(cash=broker.cash, quote_currency="USDT", positions={SYM: 2.0},
                                     cost_basis={SYM: 200.0}), recorder=None, run_id=first.run_id,
                           namespace=first.namespace)
    ctx.recorder = LedgerRecorder(ledger, run_id=first.run_id, namespace=ctx.namespace, venue=ctx.venue)
    ctx.monitor_until = t(3)
    frames: dict = {}
    got = by_order(run_through(raw_signals({}).iloc[0:0], ctx, "analysis", frames))  # no new signal this time
    assert frames["placement"].empty
    assert got[TARGET] == [("FILL", 2.0, pytest.approx(110.0), t(3))] and [e[0] for e in got[STOP]] == ["CANCELED"]
    orders = ledger.frame("orders").set_index("client_order_id")
    assert orders.loc[[STOP, TARGET], "status"].tolist() == ["CANCELED", "FILLED"]
    assert (ledger.frame("audit_log")["event"] == "bracket.resumed").sum() == 2


def test_live_paper_bracket_target_fills_on_a_later_price() -> None:
    ctx = build_context(live=True, prices={SYM: 100.0}, config=PipelineConfig(order_timeout_s=0.5, risk=PCT))
    out = run_through(raw_signals({"quantity": 2.0, "reference_price": 100.0}), ctx, "analysis")
    assert by_order(out) == {client_order_id("s1"): [("FILL", 2.0, 100.0, out["timestamp"].iloc[0])]}
    assert set(ctx.open_orders) == {STOP, TARGET}  # protective: not timed out, not waited for
    ctx.broker.set_price(SYM, 111.0)
    out = run_through(raw_signals({}).iloc[0:0], ctx, "analysis")
    got = by_order(out)
    # a new last price of 111 is a flat bar through the 110 limit: filled at 111 (fill rules)
    assert [(e[0], e[1], e[2]) for e in got[TARGET]] == [("FILL", 2.0, 111.0)]
    assert [e[0] for e in got[STOP]] == ["CANCELED"]
    assert ctx.book.positions[SYM] == 0.0 and ctx.open_orders == {}



def test_a_leg_filled_while_down_cancels_the_other_after_reconciliation(ledger) -> None:
    from tasks.reconcile import reconcile

    rows = [ENTRY, (100, 101, 99, 100), (104, 111, 103, 108), (100, 101, 99, 100)]
    first = ledger_context(ledger, market={SYM: bars(rows)}, config=CONFIG, native_brackets=False)
    first.monitor_until = t(2)
    run_through(raw_signals({"quantity": 2.0}), first, "analysis")
    broker, clock = first.broker, first.clock
    run(clock.sleep_until(t(3)))  # the process is down: the emulated target fills, the stop stays at the venue
    run(reconcile(ledger, broker, namespace=first.namespace))
    assert ledger.find_order(first.venue, TARGET)["status"] == "FILLED"
    ctx = ExecutionContext(broker=broker, clock=clock, config=CONFIG, market=MarketData({SYM: bars(rows)}),
                           book=Book(cash=broker.cash, quote_currency="USDT"), recorder=None, run_id=first.run_id,
                           namespace=first.namespace)
    ctx.recorder = LedgerRecorder(ledger, run_id=first.run_id, namespace=ctx.namespace, venue=ctx.venue)
    ctx.monitor_until = t(4)
    frames: dict = {}
    got = by_order(run_through(raw_signals({}).iloc[0:0], ctx, "analysis", frames))
    assert list(got) == [STOP] and [e[0] for e in got[STOP]] == ["CANCELED"]
    assert reasons(frames)[STOP] == f"OCO: the other leg {TARGET} filled while the process was down"
    assert broker.position(SYM) == 0.0 and ctx.open_orders == {} and ctx.brackets == {}
    assert ledger.find_order(ctx.venue, STOP)["status"] == "CANCELED"


def test_leg_prices_are_rounded_to_the_tick() -> None:
    from tasks.context import SymbolRules

    cfg = PipelineConfig(order_timeout_s=None, rules={SYM: SymbolRules(tick_size=0.5)},
                         risk=risk("default: {stop_loss: {percent: 0.033}, take_profit: {percent: 0.077}}"))
    ctx, out = replay([ENTRY, (100, 101, 96.4, 97)], config=cfg)
    # 96.7 -> 96.5 and 107.7 -> 107.5 on a 0.5 tick; the 96.4 low reaches the stop at 96.5
    assert by_order(out)[STOP] == [("FILL", 2.0, 96.5, t(2))]


def test_an_emulated_leg_the_venue_refuses_is_alerted_and_the_run_goes_on(receiver) -> None:
    from brokers.base import InvalidOrderError
    from risk.alerts import Alerter
    from tests.tasks.conftest import flaky

    url, received = receiver
    ctx = build_context(market={SYM: bars([ENTRY, (104, 111, 103, 108)])}, config=CONFIG, native_brackets=False,
                        broker=flaky({"place_order": {2}}, InvalidOrderError("x", broker_message="MIN_NOTIONAL")))
    ctx.alerter = Alerter([url])
    ctx.monitor_until = t(2)
    got = by_order(run_through(raw_signals({"quantity": 2.0}), ctx, "analysis"))
    assert STOP not in got and got[TARGET] == [("FILL", 2.0, pytest.approx(110.0), t(2))]
    [alert] = [m["json"] for m in received]
    assert "the stop leg was refused by the venue: InvalidOrderError: MIN_NOTIONAL" in alert["message"]


def test_emulated_legs_sell_what_the_entry_received_net_of_a_base_asset_fee() -> None:
    from dataclasses import replace as dc_replace

    class BaseAssetFees:  # a venue that takes the buy's fee in the asset bought (0.1 %)
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        async def get_order_by_client_id(self, coid, symbol):
            result = await self.inner.get_order_by_client_id(coid, symbol)
            if result is not None and coid == client_order_id("s1"):
                result = dc_replace(result, fees=0.002, fee_currency="BTC")
            return result

    ctx = build_context(market={SYM: bars([ENTRY, (100, 101, 99, 100)])}, config=CONFIG, native_brackets=False,
                        broker=BaseAssetFees)
    ctx.monitor_until = t(2)
    run_through(raw_signals({"quantity": 2.0}), ctx, "analysis")
    assert {c: oo.row["quantity"] for c, oo in ctx.open_orders.items()} == {STOP: pytest.approx(1.998),
                                                                           TARGET: pytest.approx(1.998)}
