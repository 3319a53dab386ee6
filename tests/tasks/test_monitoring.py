"""Step 6, monitoring: fills and terminal states reported once each, partial fills,
carried-over orders, end of data, timeouts and refusals at fill time."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from brokers.base import BrokerConnectionError
from tasks.context import PipelineConfig
from tasks.contracts import ExecutionFrame, validate
from tasks.monitoring import END_OF_DATA, monitor_executions
from tasks.orders import client_order_id
from tests.tasks.conftest import SYM, T0, bars, build_context, flaky, raw_signals, run, run_through, t

RISING = [(100, 101, 99, 100), (110, 111, 109, 110), (120, 121, 119, 120), (130, 131, 129, 130)]
NO_TIMEOUT = PipelineConfig(order_timeout_s=None)


def placed(raw: pd.DataFrame, ctx) -> pd.DataFrame:
    return run_through(raw, ctx, "placement")


def monitor(frame: pd.DataFrame, ctx, until: pd.Timestamp | None = None, final: bool = False):
    ctx.monitor_until, ctx.final = until, final
    result = run(monitor_executions(frame, ctx))
    validate(result.frame, ExecutionFrame, step="monitoring")
    return result


def test_a_market_order_fills_at_the_next_bars_open() -> None:
    ctx = build_context(market={SYM: bars(RISING)}, config=NO_TIMEOUT, taker_fee=0.001)
    frame = placed(raw_signals({"timestamp": t(1)}), ctx)  # placed at t(1): the t(2) bar is next
    result = monitor(frame, ctx, until=t(3))
    [r] = result.frame.to_dict("records")
    assert (r["exec_type"], r["status"], r["timestamp"]) == ("FILL", "FILLED", t(2))
    assert (r["last_qty"], r["last_px"], r["last_fee"]) == (1.0, 110.0, pytest.approx(0.11))
    assert (r["cum_qty"], r["avg_px"], r["cum_fee"]) == (1.0, 110.0, pytest.approx(0.11))
    assert (r["reference_price"], r["model_price"], r["is_maker"]) == (100.0, 110.0, False)
    assert (r["signal_id"], r["client_order_id"], r["broker_order_id"]) == ("s1", client_order_id("s1"), "paper-1")
    assert (r["trade_id"], r["fee_currency"], r["order_qty"], r["reason"]) == ("paper-1-1", "USDT", 1.0, None)
    assert (r["signal_time"], r["placed_at"]) == (t(1), t(1))
    assert result.rejected.empty
    assert ctx.open_orders == {}


def test_nothing_is_reported_for_an_order_that_has_not_filled_yet() -> None:
    ctx = build_context(market={SYM: bars(RISING)}, config=NO_TIMEOUT)
    frame = placed(raw_signals({"order_type": "limit", "limit_price": 95.0}), ctx)
    result = monitor(frame, ctx, until=t(4))
    assert result.frame.empty
    assert list(ctx.open_orders) == [client_order_id("s1")]


PARTIAL = [(100, 100, 100, 100, 10), (101, 101, 101, 101, 10), (102, 102, 102, 102, 10)]


def partial_context():
    """1 unit per bar (10% of a volume of 10), taker fee 0.1%."""
    return build_context(market={SYM: bars(PARTIAL)}, config=NO_TIMEOUT, max_participation=0.1, taker_fee=0.001)


def test_partial_fills_then_a_fill_with_running_totals() -> None:
    ctx = partial_context()
    result = monitor(placed(raw_signals({"quantity": 2.5}), ctx), ctx, until=t(3))
    out = result.frame
    assert out["exec_type"].tolist() == ["PARTIAL_FILL", "PARTIAL_FILL", "FILL"]
    assert out["status"].tolist() == ["PARTIALLY_FILLED", "PARTIALLY_FILLED", "FILLED"]
    assert out["timestamp"].tolist() == [t(1), t(2), t(3)]
    assert out["last_qty"].tolist() == pytest.approx([1.0, 1.0, 0.5])
    assert out["last_px"].tolist() == [100.0, 101.0, 102.0]
    assert out["cum_qty"].tolist() == pytest.approx([1.0, 2.0, 2.5])
    # (100 + 101) / 2 = 100.5; (100 + 101 + 0.5 x 102) / 2.5 = 252 / 2.5 = 100.8
    assert out["avg_px"].tolist() == pytest.approx([100.0, 100.5, 100.8])
    assert out["cum_fee"].tolist() == pytest.approx([0.1, 0.201, 0.252])
    assert out["trade_id"].tolist() == ["paper-1-1", "paper-1-2", "paper-1-3"]
    assert out["trade_id"].is_unique


def test_an_order_carried_over_is_reported_once_per_fill_across_calls() -> None:
    ctx = partial_context()
    frame = placed(raw_signals({"quantity": 2.5}), ctx)
    first = monitor(frame, ctx, until=t(1)).frame
    assert first["exec_type"].tolist() == ["PARTIAL_FILL"]
    assert list(ctx.open_orders) == [client_order_id("s1")]

    second = monitor(frame.iloc[0:0], ctx, until=t(3)).frame  # the next batch placed nothing
    assert second["exec_type"].tolist() == ["PARTIAL_FILL", "FILL"]
    assert second["last_qty"].tolist() == pytest.approx([1.0, 0.5])
    assert second["cum_qty"].tolist() == pytest.approx([2.0, 2.5])
    assert second["avg_px"].tolist() == pytest.approx([100.5, 100.8])
    assert second["cum_fee"].tolist() == pytest.approx([0.201, 0.252])
    both = pd.concat([first, second])
    assert both["trade_id"].tolist() == ["paper-1-1", "paper-1-2", "paper-1-3"]
    assert both["last_qty"].sum() == pytest.approx(2.5)
    assert ctx.open_orders == {}
    assert monitor(frame.iloc[0:0], ctx, until=t(3)).frame.empty  # and nothing again


def test_a_failed_pass_commits_nothing_so_its_retry_reports_each_fill_once() -> None:
    # polls: 1, 2 before the wait; 3 after it (s1 filled), 4 fails (s2)
    ctx = build_context(market={SYM: bars(RISING)}, config=NO_TIMEOUT,
                        broker=flaky({"get_order_status": {4}}, BrokerConnectionError("reset")))
    frame = placed(raw_signals({}, {}), ctx)
    ctx.monitor_until = t(2)
    with pytest.raises(BrokerConnectionError):
        run(monitor_executions(frame, ctx))
    assert ctx.open_orders == {}

    out = monitor(frame, ctx, until=t(2)).frame  # the task's retry
    assert out["signal_id"].tolist() == ["s1", "s2"]
    assert out["exec_type"].tolist() == ["FILL", "FILL"]


def test_at_the_end_of_the_data_what_is_open_is_canceled() -> None:
    ctx = build_context(market={SYM: bars(RISING)}, config=NO_TIMEOUT)
    frame = placed(raw_signals({"order_type": "limit", "limit_price": 95.0}, {}), ctx)
    result = monitor(frame, ctx, until=t(4), final=True)
    out = result.frame.set_index("signal_id")
    assert out.loc["s2", "exec_type"] == "FILL"
    canceled = out.loc["s1"]
    assert (canceled["exec_type"], canceled["status"], canceled["reason"]) == ("CANCELED", "CANCELED", END_OF_DATA)
    assert (canceled["last_qty"], canceled["cum_qty"], canceled["trade_id"]) == (0.0, 0.0, None)
    assert np.isnan(canceled["avg_px"]) and np.isnan(canceled["last_px"])
    assert canceled["timestamp"] == t(4)
    assert result.rejected.empty  # an unfilled order is an outcome, not a refusal
    assert ctx.open_orders == {}


def test_a_partly_filled_order_canceled_at_the_end_keeps_its_fills() -> None:
    ctx = partial_context()
    out = monitor(placed(raw_signals({"quantity": 5.0}), ctx), ctx, until=t(3), final=True).frame
    assert out["exec_type"].tolist() == ["PARTIAL_FILL"] * 3 + ["CANCELED"]
    last = out.iloc[-1]
    assert (last["cum_qty"], last["avg_px"], last["reason"]) == (pytest.approx(3.0), pytest.approx(101.0),
                                                                 END_OF_DATA)


def test_the_order_timeout_cancels_a_resting_limit_order_on_the_wall_clock() -> None:
    config = PipelineConfig(order_timeout_s=0.05, poll_interval_s=0.01)
    ctx = build_context(live=True, prices={SYM: 100.0}, config=config)
    frame = placed(raw_signals({"order_type": "limit", "limit_price": 90.0, "reference_price": 100.0}), ctx)
    assert frame["status"].tolist() == ["NEW"]
    result = monitor(frame, ctx)
    [r] = result.frame.to_dict("records")
    assert (r["exec_type"], r["status"]) == ("CANCELED", "CANCELED")
    assert r["reason"] == "canceled: still open after the 0.05s timeout"
    assert r["timestamp"] - r["placed_at"] >= pd.Timedelta(seconds=0.05)
    broker_side = run(ctx.broker.get_order_status(r["broker_order_id"], SYM))
    assert broker_side.status.value == "CANCELED"


def test_an_order_filled_at_once_on_the_wall_clock_is_reported_without_waiting() -> None:
    ctx = build_context(live=True, prices={SYM: 100.0}, config=PipelineConfig(order_timeout_s=30.0))
    frame = placed(raw_signals({}), ctx)
    started = time.perf_counter()
    out = monitor(frame, ctx).frame
    assert time.perf_counter() - started < 5.0  # not the 30 s timeout
    assert out["exec_type"].tolist() == ["FILL"]
    assert out.loc[0, "last_px"] == 100.0


def test_the_order_timeout_in_simulated_time_cancels_only_stale_orders() -> None:
    ctx = build_context(market={SYM: bars(RISING + [(140, 141, 139, 140)])},
                        config=PipelineConfig(order_timeout_s=120.0))
    raw = raw_signals({"order_type": "limit", "limit_price": 50.0},  # placed at T0: 300 s old at t(5)
                      {"order_type": "limit", "limit_price": 100.0, "timestamp": t(4)})  # 60 s old
    out = monitor(placed(raw, ctx), ctx, until=t(5)).frame
    assert out["signal_id"].tolist() == ["s1"]
    assert out.loc[0, "reason"] == "canceled: still open after the 120s timeout"
    assert list(ctx.open_orders) == [client_order_id("s2")]


def test_a_fill_the_account_cannot_pay_is_a_rejection() -> None:
    ctx = build_context(market={SYM: bars(RISING)}, config=PipelineConfig(order_timeout_s=None, check_balance=False),
                        cash=50.0)
    frame = placed(raw_signals({}), ctx)
    result = monitor(frame, ctx, until=t(2))
    [r] = result.frame.to_dict("records")
    assert (r["exec_type"], r["status"], r["last_qty"], r["timestamp"]) == ("REJECTED", "REJECTED", 0.0, t(1))
    assert r["reason"].startswith("insufficient funds: buy 1.0 BTC/USDT at 100.0 needs 100.0 USDT")
    assert result.rejected.to_numpy().tolist() == [["s1", client_order_id("s1"), r["reason"]]]
    assert ctx.open_orders == {}


def test_a_replay_chunk_advances_the_market_to_its_end_even_with_nothing_open() -> None:
    ctx = build_context(config=NO_TIMEOUT)
    frame = placed(raw_signals({"side": "hold"}), ctx)
    result = monitor(frame, ctx, until=t(3))
    assert result.frame.empty and result.rejected.empty
    assert ctx.clock.now() == t(3)


def test_reports_are_in_time_order_across_orders() -> None:
    ctx = build_context(market={SYM: bars(RISING)}, config=NO_TIMEOUT)
    raw = raw_signals({"timestamp": t(2)}, {"timestamp": T0})
    out = monitor(placed(raw, ctx), ctx, until=t(4)).frame
    assert out["signal_id"].tolist() == ["s2", "s1"]
    assert out["timestamp"].tolist() == [t(1), t(3)]


def test_a_cancel_that_finds_the_order_already_filled_reports_the_fill_not_an_error() -> None:
    """The order filled between the last poll and the timeout's cancel: the broker refuses
    the cancel (the order is over); monitoring takes its final state instead of failing."""
    from brokers.base import Order, OrderStatus, OrderType, Side
    from brokers.base.clock import WallClock
    from brokers.paper import PaperBroker
    from tasks.monitoring import cancel_or_final

    broker = PaperBroker(cash=10_000.0, quote_currency="USDT", clock=WallClock(), name="paper-race")
    broker.set_price(SYM, 100.0)
    ctx = build_context(market={SYM: bars(RISING)})
    ctx.broker = broker

    async def go():
        filled = await broker.place_order(Order(symbol=SYM, side=Side.BUY, order_type=OrderType.LIMIT,
                                                quantity=1.0, price=95.0, client_order_id="tp-race-0"))
        resting = await broker.place_order(Order(symbol=SYM, side=Side.BUY, order_type=OrderType.LIMIT,
                                                 quantity=1.0, price=90.0, client_order_id="tp-race2-0"))
        broker.set_price(SYM, 94.0)  # the first fills now, the second still rests
        return (await cancel_or_final(ctx, filled.order_id, SYM),
                await cancel_or_final(ctx, resting.order_id, SYM))

    first, second = run(go())
    assert first.status == OrderStatus.FILLED and first.executed_quantity == 1.0
    assert second.status == OrderStatus.CANCELED


def test_an_order_already_final_at_placement_is_not_polled_and_reported_once() -> None:
    # live paper: a market order fills as it is placed; its answer carries the fill
    ctx = build_context(live=True, prices={SYM: 100.0}, broker=flaky({"get_order_status": 0}, BrokerConnectionError("unused")))
    frame = placed(raw_signals({"timestamp": pd.Timestamp.now(tz="UTC")}), ctx)
    assert set(ctx.placement_results) == {client_order_id("s1")}
    result = monitor(frame, ctx, until=ctx.clock.now())
    assert ctx.broker.calls["get_order_status"] == 0  # the broker was not asked again
    [r] = result.frame.to_dict("records")
    assert (r["exec_type"], r["status"], r["last_qty"], r["last_px"]) == ("FILL", "FILLED", 1.0, 100.0)
    assert ctx.placement_results == {} and ctx.open_orders == {}
    again = monitor(frame.iloc[:0], ctx, until=ctx.clock.now())  # a later pass reports nothing twice
    assert again.frame.empty


def test_an_answer_without_its_fills_or_still_open_is_polled() -> None:
    from dataclasses import replace as with_

    ctx = build_context(live=True, prices={SYM: 100.0}, broker=flaky({"get_order_status": 0}, BrokerConnectionError("unused")))
    frame = placed(raw_signals({"timestamp": pd.Timestamp.now(tz="UTC")}), ctx)
    coid = client_order_id("s1")
    ctx.placement_results[coid] = with_(ctx.placement_results[coid], fills=())  # an acknowledgement only
    result = monitor(frame, ctx, until=ctx.clock.now())
    assert ctx.broker.calls["get_order_status"] == 1
    assert result.frame["exec_type"].tolist() == ["FILL"]
