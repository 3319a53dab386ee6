"""The Prefect shell on a real temporary Prefect API: broker steps retry retryable
errors only; what still fails is recorded as rejections before the error stops the flow."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator

import pandas as pd
import pytest
from prefect import flow
from prefect.states import Completed, Failed

from brokers.base import (
    BrokerConnectionError,
    InsufficientFundsError,
    InvalidOrderError,
    OrderNotFoundError,
    RateLimitError,
)
from tasks import prefect_tasks
from tasks.context import PipelineConfig
from tasks.orders import client_order_id
from tasks.pipeline import STEPS, run_batch
from tasks.prefect_tasks import RETRIES, STEP_TASKS, retry_only_retryable, task_caller
from tests.tasks.conftest import FLAT_100, SYM, bars, flaky, ledger_context, raw_signals, t
from tradpal.ledger import Ledger
from tradpal.streaming import empty_signals


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (BrokerConnectionError("down"), True),
        (RateLimitError("slow down"), True),
        (InvalidOrderError("bad lot"), False),
        (InsufficientFundsError("no cash"), False),
        (OrderNotFoundError("who?"), False),
        (ValueError("a bug"), False),
    ],
)
def test_retry_only_retryable(error: Exception, retry: bool) -> None:
    assert retry_only_retryable(None, None, Failed(data=error)) is retry


def test_retry_only_retryable_inside_an_event_loop() -> None:
    async def check() -> bool:  # where Prefect's async engine calls it
        return retry_only_retryable(None, None, Failed(data=BrokerConnectionError("down")))

    assert asyncio.run(check()) is True


def test_a_completed_state_is_not_retried() -> None:
    assert retry_only_retryable(None, None, Completed(data=1)) is False


def test_only_the_broker_steps_retry() -> None:
    retrying = {name for name, task in STEP_TASKS.items() if task.retries}
    assert retrying == {"placement", "monitoring", "positions"}
    for name in retrying:
        assert STEP_TASKS[name].retries == RETRIES
        assert STEP_TASKS[name].retry_condition_fn is retry_only_retryable
    assert [STEP_TASKS[s.name].name for s in STEPS][4] == "5-placement"


# ---------------------------------------------------------------- in a flow


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The broker steps' tasks without the backoff delays."""
    for name, task in list(STEP_TASKS.items()):
        if task.retries:
            monkeypatch.setitem(prefect_tasks.STEP_TASKS, name, task.with_options(retry_delay_seconds=0))
    yield


@pytest.fixture
def ledger(tmp_path) -> Iterator[Ledger]:
    """A SQLite ledger (the Prefect tests run once, not per backend)."""
    led = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield led
    led.close()


def flaky_context(ledger: Ledger, fail: dict, error: Exception):
    ctx = ledger_context(ledger, market={SYM: bars([FLAT_100] * 3)}, config=PipelineConfig(order_timeout_s=None),
                         broker=flaky(fail, error))
    ctx.monitor_until = t(3)
    return ctx


def run_flow(raw: pd.DataFrame, ctx) -> pd.DataFrame:
    @flow(name="test-batch", persist_result=False, validate_parameters=False)
    async def batch() -> pd.DataFrame:
        return await run_batch(raw, ctx, call=task_caller("test"))

    return asyncio.run(batch())


RAW = raw_signals({"timestamp": t(1)}, {"timestamp": t(1), "quantity": 2.0})


@pytest.mark.usefixtures("prefect_api", "fast_retries")
def test_a_connection_error_is_retried_and_places_each_order_once(ledger: Ledger) -> None:
    ctx = flaky_context(ledger, {"place_order": {2, 3}}, BrokerConnectionError("connection reset"))
    report = run_flow(RAW, ctx)
    assert report["exec_type"].tolist() == ["FILL", "FILL"]
    # s1 sent (1), s2 failed twice (2, 3) and went on the 3rd try (4); s1 was found, not resent
    assert ctx.broker.calls["place_order"] == 4
    inner = ctx.broker.inner
    assert inner.position(SYM) == 3.0
    ids = [asyncio.run(inner.get_order_by_client_id(client_order_id(s), SYM)).order_id for s in ("s1", "s2")]
    assert ids == ["paper-1", "paper-2"]
    orders = ledger.frame("orders", run_id=ctx.run_id)
    assert orders["status"].tolist() == ["FILLED", "FILLED"]
    assert orders["flow_run_id"].notna().all() and orders["task_run_id"].notna().all()
    assert ledger.frame("rejections", run_id=ctx.run_id).empty


@pytest.mark.usefixtures("prefect_api", "fast_retries")
def test_an_invalid_order_is_not_retried_and_becomes_a_rejection(ledger: Ledger) -> None:
    ctx = flaky_context(ledger, {"place_order": {1}}, InvalidOrderError("bad lot", broker_message="LOT_SIZE"))
    report = run_flow(RAW, ctx)
    assert report["signal_id"].tolist() == ["s2"]
    assert ctx.broker.calls["place_order"] == 2  # once each: no retry
    rows = ledger.frame("rejections", run_id=ctx.run_id)
    assert rows[["signal_id", "step", "reason"]].to_numpy().tolist() == [
        ["s1", "placement", "InvalidOrderError: LOT_SIZE"]]
    assert rows["task_run_id"].notna().all()


@pytest.mark.usefixtures("prefect_api", "fast_retries")
def test_when_retries_run_out_the_batch_fails_unknown_and_the_error_propagates(ledger: Ledger) -> None:
    ctx = flaky_context(ledger, {"place_order": 99}, BrokerConnectionError("exchange unreachable"))
    with pytest.raises(BrokerConnectionError, match="exchange unreachable"):
        run_flow(RAW, ctx)
    assert ctx.broker.calls["place_order"] == (1 + RETRIES) * 2  # both orders are in flight on every attempt
    reason = f"placement failed after {RETRIES} retries: BrokerConnectionError: exchange unreachable"
    rows = ledger.frame("rejections", run_id=ctx.run_id)
    assert rows[["signal_id", "client_order_id", "step", "reason"]].to_numpy().tolist() == [
        [sid, client_order_id(sid), "placement", reason] for sid in ("s1", "s2")]
    # the broker may have taken them before failing: UNKNOWN until reconciled, never REJECTED
    assert ledger.frame("orders", run_id=ctx.run_id)["status"].tolist() == ["UNKNOWN", "UNKNOWN"]
    assert "step.placement.failed" in ledger.frame("audit_log", run_id=ctx.run_id)["event"].tolist()


@pytest.mark.usefixtures("prefect_api", "fast_retries")
def test_a_non_retryable_broker_error_fails_at_once_and_says_so(ledger: Ledger) -> None:
    ctx = flaky_context(ledger, {"get_order_status": 99}, OrderNotFoundError("order paper-1 not found"))
    with pytest.raises(OrderNotFoundError):
        run_flow(RAW.iloc[:1], ctx)
    assert ctx.broker.calls["get_order_status"] == 1
    # the order is live at the broker: it keeps its state, and the failure is audited
    assert ledger.frame("rejections", run_id=ctx.run_id).empty
    assert ledger.frame("orders", run_id=ctx.run_id)["status"].tolist() == ["NEW"]
    audit = ledger.frame("audit_log", run_id=ctx.run_id)
    failed = audit[audit["event"] == "step.monitoring.failed"]
    assert failed["payload"].iloc[0]["reason"] == (
        "monitoring failed (not retryable): OrderNotFoundError: order paper-1 not found")


def test_a_venue_ban_is_waited_out_before_the_retry_and_a_long_one_is_final():
    import asyncio
    from datetime import UTC, datetime, timedelta

    from brokers.ccxt.errors import VenueBannedError
    from tasks.prefect_tasks import MAX_VENUE_WAIT_S, wait_out_venue

    short = VenueBannedError("banned")
    short.banned_until = datetime.now(UTC) + timedelta(seconds=0.3)
    t0 = time.monotonic()
    asyncio.run(wait_out_venue(short))
    assert time.monotonic() - t0 >= 0.25 and short.retryable  # waited, then retried

    long = VenueBannedError("banned")
    long.banned_until = datetime.now(UTC) + timedelta(seconds=MAX_VENUE_WAIT_S + 60)
    asyncio.run(wait_out_venue(long))
    assert long.retryable is False and VenueBannedError("other").retryable  # only that instance


# ---------------------------------------------------------------- result storage


@pytest.mark.usefixtures("prefect_api", "fast_retries")
def test_the_steps_run_with_the_saved_result_storage_block(ledger: Ledger) -> None:
    from prefect.filesystems import LocalFileSystem

    ctx = flaky_context(ledger, {}, BrokerConnectionError("unused"))
    report = run_flow(RAW, ctx)
    assert report["exec_type"].tolist() == ["FILL", "FILL"]
    block = asyncio.run(prefect_tasks.result_storage())
    assert block is not None and block._block_document_id is not None
    saved = LocalFileSystem.load(prefect_tasks.RESULT_BLOCK)
    assert saved._block_document_id == block._block_document_id
    placement = STEP_TASKS["placement"]  # as the fixture patched it: its options are kept
    with_block = asyncio.run(prefect_tasks.stored(placement))
    assert with_block.result_storage is block and with_block is not placement
    assert with_block.retry_delay_seconds == 0 and with_block.retries == RETRIES
    assert asyncio.run(prefect_tasks.stored(placement)) is with_block  # made once


@pytest.mark.usefixtures("prefect_api", "fast_retries")
def test_a_block_that_cannot_be_saved_leaves_the_tasks_as_they_are(ledger: Ledger, monkeypatch) -> None:
    from prefect.filesystems import LocalFileSystem

    async def refused(self, *args, **kwargs):
        raise RuntimeError("the API refused the block")

    monkeypatch.setattr(LocalFileSystem, "asave", refused)
    monkeypatch.setattr(prefect_tasks, "_STORAGE", {})
    monkeypatch.setattr(prefect_tasks, "_STORED", {})
    ctx = flaky_context(ledger, {}, BrokerConnectionError("unused"))
    assert run_flow(RAW, ctx)["exec_type"].tolist() == ["FILL", "FILL"]
    assert asyncio.run(prefect_tasks.result_storage()) is None
    assert asyncio.run(prefect_tasks.stored(STEP_TASKS["intake"])) is STEP_TASKS["intake"]


@pytest.mark.usefixtures("prefect_api")
def test_a_batch_refused_whole_at_intake_runs_the_empty_row_wise_steps_in_line(ledger: Ledger, prefect_client) -> None:
    """Steps 2-5 get no rows: they still run (contract, ledger record, timing) but in line,
    not as task runs; steps 6-8, which watch the open orders and the book, stay tasks."""

    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.runtime import flow_run

    ctx = flaky_context(ledger, {}, BrokerConnectionError("unused"))
    raw = raw_signals({"timestamp": t(1), "side": "hold"}, {"timestamp": t(1), "quantity": -2.0})
    run_id: list[str] = []

    @flow(name="test-refused", persist_result=False, validate_parameters=False)
    async def batch() -> pd.DataFrame:
        run_id.append(flow_run.id)
        return await run_batch(raw, ctx, call=task_caller("test"))

    assert asyncio.run(batch()).empty
    rejected = ledger.frame("rejections", run_id=ctx.run_id)
    assert sorted(rejected["signal_id"]) == ["s1", "s2"] and set(rejected["step"]) == {"intake"}
    assert all(ctx.counts[f"{s.name}.out"] == 0 for s in STEPS[1:])  # each step ran, on no rows
    expected = ["1-intake [test]", "6-monitoring [test]", "7-positions [test]", "8-analysis [test]"]
    deadline = time.monotonic() + 30
    while True:  # task runs reach the API as events, recorded a moment after the flow ends
        names = sorted(t.name for t in prefect_client(lambda c: c.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id[0]])))))
        if names == expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert names == expected


@pytest.mark.usefixtures("prefect_api")
def test_a_long_running_flow_does_not_keep_a_link_per_task_result(ledger: Ledger) -> None:
    """Prefect links every task result to its state in the flow run context; batch after
    batch in one flow (the live stream) those links would grow without end, and with them
    every full garbage collection's pause. Dead ones are dropped as each batch starts."""
    from prefect.context import FlowRunContext

    ctx = flaky_context(ledger, {}, BrokerConnectionError("unused"))
    sizes: list[int] = []

    @flow(name="test-long", persist_result=False, validate_parameters=False)
    async def stream() -> None:
        for i in range(40):
            raw = raw_signals({"timestamp": t(1), "signal_id": f"long-{i}", "quantity": 0.01})
            await run_batch(raw, ctx, call=task_caller("test"))
        # 8 more links per batch without the pruning (320 now). With it, what is left is what
        # still lives: results in reference cycles until a collection, and the inputs Prefect's
        # events worker holds until it has sent their events (it lags on a busy machine), so
        # wait for those to go rather than bet on the collector's timing
        deadline = time.monotonic() + 30
        while True:
            await asyncio.sleep(0.1)
            gc.collect()
            await run_batch(empty_signals(), ctx, call=task_caller("test"))  # an idle pass prunes
            sizes.append(len(FlowRunContext.get().run_results))
            if sizes[-1] <= 16 or time.monotonic() > deadline:
                break

    asyncio.run(stream())
    assert len(ledger.frame("orders", run_id=ctx.run_id)) == 40  # the batches did their work
    assert sizes[-1] <= 16, sizes
    assert not ctx.equity_segments or all(len(s) for s in ctx.equity_segments)


def test_forget_dead_results_outside_a_flow_does_nothing() -> None:
    assert prefect_tasks.forget_dead_results() == 0
