"""Step 5, placement: idempotent by client order id; refusals become rejections,
retryable errors propagate."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pandas as pd
import pytest

from brokers.base import (
    BrokerConnectionError,
    InsufficientFundsError,
    InvalidOrderError,
    OrderResult,
    OrderStatus,
    RateLimitError,
)
from tasks.contracts import PlacedFrame, validate
from tasks.orders import client_order_id
from tasks.placement import place_orders
from tests.tasks.conftest import build_context, flaky, raw_signals, run, run_through

PRICES = {"BTC/USDT": 100.0}


def checked_frame(raw: pd.DataFrame, ctx) -> pd.DataFrame:
    return run_through(raw, ctx, "pre_checks")


def place(checked: pd.DataFrame, ctx):
    result = run(place_orders(checked, ctx))
    validate(result.frame, PlacedFrame, step="placement")
    return result


def test_places_each_order_and_returns_a_placed_frame() -> None:
    ctx = build_context()  # replay: orders are accepted as NEW at their signal time
    checked = checked_frame(raw_signals({}, {"side": "buy", "quantity": 2.0}), ctx)
    result = place(checked, ctx)
    out = result.frame
    assert result.rejected.empty
    assert out["client_order_id"].tolist() == [client_order_id("s1"), client_order_id("s2")]
    assert out["broker_order_id"].tolist() == ["paper-1", "paper-2"]
    assert out["status"].tolist() == ["NEW", "NEW"]
    assert out["placed_at"].tolist() == checked["signal_time"].tolist()
    pd.testing.assert_frame_equal(out[checked.columns], checked)
    found = run(ctx.broker.get_order_by_client_id(client_order_id("s2"), "BTC/USDT"))
    assert (found.order_id, found.status) == ("paper-2", OrderStatus.NEW)


def test_placing_the_same_frame_twice_creates_one_order_per_client_id() -> None:
    ctx = build_context(broker=flaky({"place_order": 0}, BrokerConnectionError("unused")))
    checked = checked_frame(raw_signals({}, {}), ctx)
    first = place(checked, ctx).frame
    second = place(checked, ctx).frame  # a retried task, a re-delivered event
    assert ctx.broker.calls["place_order"] == 2
    assert second["broker_order_id"].tolist() == first["broker_order_id"].tolist() == ["paper-1", "paper-2"]
    assert second["client_order_id"].tolist() == first["client_order_id"].tolist()


def test_an_order_filled_before_a_retry_is_found_not_resent() -> None:
    ctx = build_context(live=True, prices=PRICES, broker=flaky({"place_order": 0}, BrokerConnectionError("x")))
    checked = checked_frame(raw_signals({}), ctx)
    assert place(checked, ctx).frame["status"].tolist() == ["FILLED"]  # live: fills at once
    again = place(checked, ctx).frame
    assert again["status"].tolist() == ["FILLED"]
    assert ctx.broker.calls["place_order"] == 1
    assert ctx.broker.inner.position("BTC/USDT") == 1.0


def test_refusals_become_rejections_and_the_rest_of_the_batch_goes() -> None:
    ctx = build_context(live=True, prices=PRICES, cash=1_000.0)
    raw = raw_signals(
        {"quantity": 50.0},  # 5,000 > 1,000: InsufficientFundsError
        {"quantity": 1.0},
        {"symbol": "ETH/EUR"},  # not this account's quote currency: InvalidOrderError
        {"side": "sell", "quantity": 0.5},
    )
    ctx.config = replace(ctx.config, check_balance=False)  # let the broker be the one to refuse
    result = place(checked_frame(raw, ctx), ctx)
    assert result.frame["signal_id"].tolist() == ["s2", "s4"]
    assert result.frame["status"].tolist() == ["FILLED", "FILLED"]
    rejected = result.rejected.set_index("signal_id")
    assert rejected.loc["s1", "client_order_id"] == client_order_id("s1")
    assert rejected.loc["s1", "reason"].startswith("InsufficientFundsError: insufficient funds: buy 50.0 BTC/USDT")
    assert rejected.loc["s3", "reason"].startswith("InvalidOrderError: quote currency EUR is not this account's USDT")
    assert sorted(rejected.index) == ["s1", "s3"]


class RejectingBroker:
    """Answers every placement with a REJECTED result (some venues do, instead of raising)."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    async def place_order(self, order):
        return OrderResult(order_id="r-1", client_order_id=order.client_order_id, status=OrderStatus.REJECTED,
                           executed_quantity=0.0, executed_price=None, timestamp=pd.Timestamp.now(tz="UTC"),
                           reason="venue says no")


def test_a_rejected_result_becomes_a_rejection() -> None:
    ctx = build_context(broker=RejectingBroker)
    result = place(checked_frame(raw_signals({}), ctx), ctx)
    assert result.frame.empty
    assert result.rejected.to_numpy().tolist() == [["s1", client_order_id("s1"), "venue says no"]]


@pytest.mark.parametrize("concurrency", [1, 8])
@pytest.mark.parametrize("error", [BrokerConnectionError("connection reset"), RateLimitError("slow down")])
def test_a_retryable_error_propagates_and_a_retry_places_nothing_twice(error: Exception, concurrency: int) -> None:
    ctx = build_context(broker=flaky({"place_order": {2}}, error))  # the 2nd send fails
    ctx.config = replace(ctx.config, placement_concurrency=concurrency)
    checked = checked_frame(raw_signals({}, {}, {}), ctx)
    with pytest.raises(type(error), match=str(error)):  # the error itself, not an exception group
        run(place_orders(checked, ctx))
    # one at a time: s1 placed, s2 failed, s3 never tried; concurrently: s3 was already sent
    assert ctx.broker.calls["place_order"] == (2 if concurrency == 1 else 3)

    retried = place(checked, ctx).frame  # what the task's retry does
    # each signal has exactly one order (concurrently, s3 was placed before the retry placed s2)
    assert retried["broker_order_id"].tolist() == (["paper-1", "paper-2", "paper-3"] if concurrency == 1
                                                   else ["paper-1", "paper-3", "paper-2"])
    assert ctx.broker.calls["place_order"] == 4  # s1 found by its client id: only s2 and s3 sent


def test_a_retryable_error_on_the_lookup_propagates_before_anything_is_sent() -> None:
    ctx = build_context(broker=flaky({"get_order_by_client_id": 1, "place_order": 0}, BrokerConnectionError("timeout")))
    with pytest.raises(BrokerConnectionError):
        run(place_orders(checked_frame(raw_signals({}), ctx), ctx))
    assert ctx.broker.calls == {"get_order_by_client_id": 1, "place_order": 0}


def test_an_empty_frame_places_nothing() -> None:
    ctx = build_context(broker=flaky({"place_order": 0}, BrokerConnectionError("unused")))
    checked = checked_frame(raw_signals({"side": "hold"}), ctx)
    result = place(checked, ctx)
    assert result.frame.empty and result.rejected.empty
    assert ctx.broker.calls["place_order"] == 0


@pytest.mark.parametrize("error", [InvalidOrderError("order tp-1 refused", broker_message="LOT_SIZE"),
                                   InsufficientFundsError("no money", broker_message="balance 0")])
def test_a_refusal_is_recorded_with_the_brokers_own_message(error: Exception) -> None:
    ctx = build_context(broker=flaky({"place_order": 1}, error))
    result = place(checked_frame(raw_signals({}, {}), ctx), ctx)
    assert result.frame["signal_id"].tolist() == ["s2"]
    assert result.rejected["reason"].tolist() == [f"{type(error).__name__}: {error.broker_message}"]


def _claimed_context(ledger):
    from tests.tasks.conftest import ledger_context

    return ledger_context(ledger, broker=flaky({"get_order_by_client_id": 0, "place_order": 0},
                                               BrokerConnectionError("unused")))


def test_an_order_for_a_signal_this_run_claimed_is_sent_without_a_lookup(ledger) -> None:
    ctx = _claimed_context(ledger)
    checked = run_through(raw_signals({}, {}), ctx, "pre_checks")  # intake claimed s1, s2 in the ledger
    assert ctx.recorder.claimed_here("s1") and ctx.recorder.claimed_here("s2")
    first = place(checked, ctx).frame
    assert ctx.broker.calls == {"get_order_by_client_id": 0, "place_order": 2}
    again = place(checked, ctx).frame  # the same orders again (a retry): each is looked up and found
    assert ctx.broker.calls == {"get_order_by_client_id": 2, "place_order": 2}
    assert again["broker_order_id"].tolist() == first["broker_order_id"].tolist()


def test_every_order_is_looked_up_when_asked_or_when_the_signal_was_not_claimed_here(ledger, monkeypatch) -> None:
    monkeypatch.setenv("TRADPAL_PLACEMENT_LOOKUP", "always")
    ctx = _claimed_context(ledger)
    place(run_through(raw_signals({}), ctx, "pre_checks"), ctx)
    assert ctx.broker.calls == {"get_order_by_client_id": 1, "place_order": 1}
    monkeypatch.delenv("TRADPAL_PLACEMENT_LOOKUP")
    ctx = build_context(broker=flaky({"get_order_by_client_id": 0, "place_order": 0}, BrokerConnectionError("x")))
    place(checked_frame(raw_signals({}), ctx), ctx)  # no ledger claim (a recorder that claims nothing)
    assert ctx.broker.calls == {"get_order_by_client_id": 1, "place_order": 1}


def test_a_broker_in_memory_is_sent_one_order_at_a_time() -> None:
    """The paper broker answers at once: a batch is placed one by one (no task per order),
    with the same outcome as concurrently; each ack time is when its answer came."""
    ctx = build_context()
    assert ctx.broker.waits_on_network is False
    in_flight, most = {"n": 0}, {"n": 0}
    real = ctx.broker.place_order

    async def watched(order):
        in_flight["n"] += 1
        most["n"] = max(most["n"], in_flight["n"])
        await asyncio.sleep(0)  # a task switch: concurrent sends would overlap here
        try:
            return await real(order)
        finally:
            in_flight["n"] -= 1

    ctx.broker.place_order = watched
    before = pd.Timestamp.now(tz="UTC")
    frame = place(checked_frame(raw_signals({}, {}, {}), ctx), ctx).frame
    assert most["n"] == 1 and frame["broker_order_id"].tolist() == ["paper-1", "paper-2", "paper-3"]
    acked = frame["acked_at"]
    assert acked.is_monotonic_increasing and before <= acked.iloc[0] <= pd.Timestamp.now(tz="UTC")


def test_a_long_run_remembers_one_batch_of_claims_and_sends(ledger) -> None:
    """A stream runs for days: what placement remembers to skip look-ups (the claims, the
    ids sent) is the running batch's, not every signal's; an earlier batch's order sent
    again is looked up and found, never placed twice."""
    ctx = _claimed_context(ledger)
    checked = run_through(raw_signals({}, {}), ctx, "pre_checks")
    first = place(checked, ctx).frame
    for n in range(3):  # three more batches of two signals
        batch = raw_signals({}, {}).assign(signal_id=[f"b{n}-1", f"b{n}-2"])
        place(run_through(batch, ctx, "pre_checks"), ctx)
        assert ctx.sent_client_ids == {client_order_id(f"b{n}-1"), client_order_id(f"b{n}-2")}
        assert not ctx.recorder.claimed_here("s1") and ctx.recorder.claimed_here(f"b{n}-1")
        assert len(ctx.recorder._claimed) == 2
    assert ctx.broker.calls == {"get_order_by_client_id": 0, "place_order": 8}
    again = place(checked, ctx).frame  # the first batch's orders once more
    assert ctx.broker.calls == {"get_order_by_client_id": 2, "place_order": 8}
    assert again["broker_order_id"].tolist() == first["broker_order_id"].tolist()
