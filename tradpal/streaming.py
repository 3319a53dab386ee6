"""Streaming live mode, the plain part: signals arrive (from the HTTP intake) into a queue;
one consumer takes whatever is waiting as one batch and runs the eight steps on it; each
signal's sender is answered as soon as its outcome at the exchange is known.

    intake handler ──submit()──▶ SignalQueue ──next_batch()──▶ run_stream: run_batch(8 steps)
          ▲                                                          │
          └────────── each signal's Outcome (acked / rejected / failed) ◀┘

Batching is what keeps latency flat under load: one signal alone goes through the steps
on its own; at 100 signals/s the ones that arrive while a batch runs form the next batch,
so the per-batch cost (8 task runs, the ledger transactions) is paid once for all of them.

The outcome of a signal is known at step 5 (the exchange's acknowledgement, or its
refusal), or earlier when a step before refuses it (rejected, with the step and reason).
`TappedRecorder` sees every step's rejections on their way into the ledger; the consumer
resolves acknowledgements from step 5's output. Nothing is answered before the ledger
has it: the recorder writes first, then the sender hears.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tasks.context import ExecutionContext
from tasks.pipeline import STEP_BY_NAME, Step, run_batch, run_step
from tradpal.intake_server import Busy

PLACEMENT = STEP_BY_NAME["placement"]
PRE_CHECKS = STEP_BY_NAME["pre_checks"]
log = logging.getLogger(__name__)
DEFAULT_BATCH_INTERVAL_S = 0.1  # under load, at most ten batches a second (`SignalQueue.next_batch`)


@dataclass
class Pending:
    """One signal waiting for its outcome."""

    signal: dict[str, Any]
    future: asyncio.Future
    received: float = field(default_factory=time.perf_counter)
    order: pd.DataFrame | None = None  # an approved order coming back (`SignalQueue.release`): step 3's row

    @property
    def signal_id(self) -> str:
        return str(self.signal["signal_id"])


class QueueFull(Busy):
    """More signals waiting than the stream accepts (back-pressure: the intake answers 503)."""


class SignalQueue:
    """The signals between the intake and the consumer. `submit` returns once every signal
    of the call has its outcome (or ``timeout`` passes: then its outcome is "pending", and
    the ledger will still hold the final one)."""

    def __init__(self, *, max_batch: int = 256, max_pending: int = 10_000, answer_timeout_s: float = 30.0,
                 batch_interval_s: float = DEFAULT_BATCH_INTERVAL_S) -> None:
        self.max_batch, self.max_pending, self.answer_timeout_s = max_batch, max_pending, answer_timeout_s
        self.batch_interval_s = batch_interval_s
        self._queue: asyncio.Queue[Pending] = asyncio.Queue()
        self._waiting: dict[str, Pending] = {}
        self._last_start, self._last_size = 0.0, 0
        self.closed = False

    def __len__(self) -> int:
        return self._queue.qsize()

    def enqueue(self, signals: list[dict[str, Any]], *, internal: bool = False) -> list[Pending]:
        """Queue ``signals`` now (synchronously); their `Pending` entries. ``internal``:
        signals the pipeline raised itself (a flatten), taken even while the stream stops."""
        if self.closed and not internal:
            raise QueueFull("the stream is stopping: no new signals")
        if not internal and len(self._waiting) + len(signals) > self.max_pending:
            raise QueueFull(f"{len(self._waiting)} signals already waiting (limit {self.max_pending})")
        loop = asyncio.get_running_loop()
        pending = []
        for signal in signals:
            p = Pending(signal, loop.create_future())
            if p.signal_id in self._waiting:  # the same id already in flight: one order, one answer each
                p.future = self._waiting[p.signal_id].future
            else:
                self._waiting[p.signal_id] = p
                self._queue.put_nowait(p)
            pending.append(p)
        return pending

    async def submit(self, signals: list[dict[str, Any]]) -> list[dict[str, Any]]:
        pending = self.enqueue(signals)
        done, _ = await asyncio.wait({p.future for p in pending}, timeout=self.answer_timeout_s)
        return [p.future.result() if p.future in done else
                {"signal_id": p.signal_id, "accepted": True, "status": "PENDING",
                 "detail": f"no outcome within {self.answer_timeout_s:g}s; see `tradpal audit {p.signal_id}`"}
                for p in pending]

    async def next_batch(self, timeout: float | None) -> list[Pending]:
        """Whatever is waiting (up to ``max_batch``), after waiting up to ``timeout`` seconds
        for the first; empty if none came.

        Under load (the previous batch held more than one signal: they arrive faster than
        batches go through) a batch starts at most every ``batch_interval_s``, gathering
        what arrives meanwhile: every batch costs eight task runs, which Prefect's API must
        record, so this caps that cost at high rates. At 100 signals/s on 2 cores the
        batches took ~115 ms anyway, so it changed nothing measurable there (p99 309-400 ms
        with 0, 0.05 and 0.1 s). A signal that finds the stream idle, or one at a time,
        never waits for it."""
        try:
            first = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return []
        if self._last_size > 1 and self.batch_interval_s > 0:
            linger = self._last_start + self.batch_interval_s - time.perf_counter()
            if linger > 0:
                await asyncio.sleep(linger)
        batch = [first]
        while len(batch) < self.max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        self._last_start, self._last_size = time.perf_counter(), len(batch)
        return batch

    def release(self, order: pd.DataFrame) -> None:
        """Queue an order a person approved (one row of step 3's frame): the next batch takes
        it back in at step 4 (the checks again: the account moved on while it waited), then
        places it. Taken even while the stream stops; its sender has had its answer."""
        row = order.iloc[0]
        signal = {"signal_id": str(row["signal_id"]), "strategy": str(row["strategy"]), "symbol": str(row["symbol"])}
        self._queue.put_nowait(Pending(signal, asyncio.get_running_loop().create_future(), order=order))

    def resolve(self, signal_id: str, outcome: dict[str, Any]) -> None:
        p = self._waiting.pop(signal_id, None)
        if p is not None and not p.future.done():
            p.future.set_result({"signal_id": signal_id, **outcome})

    def fail_all(self, batch: list[Pending], reason: str) -> None:
        for p in batch:
            self.resolve(p.signal_id, {"accepted": False, "status": "FAILED", "reason": reason})


class TappedRecorder:
    """The context's recorder, passing each step's rejections to ``on_rejected`` after the
    ledger has them. Everything else is delegated unchanged."""

    def __init__(self, inner: Any, on_rejected: Callable[[str, pd.DataFrame], None]) -> None:
        self._inner, self._on_rejected = inner, on_rejected

    def record(self, step: str, frame: pd.DataFrame, rejected: pd.DataFrame, *args: Any, **kwargs: Any) -> None:
        self._inner.record(step, frame, rejected, *args, **kwargs)
        if len(rejected):
            self._on_rejected(step, rejected)

    def record_failure(self, step: str, frame: pd.DataFrame, reason: str, *args: Any, **kwargs: Any) -> None:
        self._inner.record_failure(step, frame, reason, *args, **kwargs)
        if "signal_id" in frame:
            self._on_rejected(step, pd.DataFrame({"signal_id": frame["signal_id"], "reason": reason,
                                                  "failed": True}))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def batch_label(signals: list[dict[str, Any]], default_strategy: str = "live") -> str:
    """The task runs' label: the signal id, strategy and symbol (the first three, and a count)."""
    parts = [f"{s['signal_id']} {s.get('strategy') or default_strategy} {s['symbol']}" for s in signals[:3]]
    more = f" +{len(signals) - 3} more" if len(signals) > 3 else ""
    return "; ".join(parts) + more


@dataclass
class StreamStats:
    batches: int = 0
    signals: int = 0
    acked: int = 0
    rejected: int = 0
    failed: int = 0
    idle_passes: int = 0
    largest_batch: int = 0
    held: int = 0  # orders held for a person's approval
    approved: int = 0  # of those, approved (and taken back in at step 4)

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def attach(queue: SignalQueue, ctx: ExecutionContext, stats: StreamStats) -> None:
    """Route the context's rejections to the waiting senders."""

    def on_rejected(step: str, rejected: pd.DataFrame) -> None:
        failed = bool(rejected.get("failed", pd.Series([False])).any())
        for sid, reason in zip(rejected["signal_id"], rejected["reason"], strict=True):
            if failed:
                stats.failed += 1
            else:
                stats.rejected += 1
            queue.resolve(str(sid), {"accepted": False, "status": "FAILED" if failed else "REJECTED",
                                     "step": step, "reason": str(reason)})

    ctx.recorder = TappedRecorder(ctx.recorder, on_rejected)


def acknowledge(queue: SignalQueue, placed: pd.DataFrame, stats: StreamStats) -> None:
    """Answer each signal step 5 placed: the exchange's order id and status."""
    for sid, coid, oid, status in zip(placed["signal_id"], placed["client_order_id"], placed["broker_order_id"],
                                      placed["status"], strict=True):
        stats.acked += 1
        queue.resolve(str(sid), {"accepted": True, "status": str(status), "client_order_id": str(coid),
                                 "order_id": str(oid)})


Caller = Callable[[Step, pd.DataFrame, ExecutionContext], Any]


async def refuse_above_approval(queue: SignalQueue, orders: pd.DataFrame, ctx: ExecutionContext, policy: Any,
                                stats: StreamStats) -> pd.DataFrame:
    """Before placement: orders above the approval threshold are refused at once (audited,
    rejected at step ``approval`` in the ledger, alerted like any decision) and their
    senders answered; the rest go on. A stream cannot pause for a person."""
    from risk.approval import STEP, refused_in_stream, review

    decided: dict[str, str] = {}

    async def ask(request):
        decision = refused_in_stream(request)
        decided[request.signal_id] = decision.reason(request)
        return decision

    kept = await review(orders, ctx, policy, ask)
    for sid, reason in decided.items():
        stats.rejected += 1
        queue.resolve(sid, {"accepted": False, "status": "REJECTED", "step": STEP, "reason": reason})
    return kept


STOPPED_WHILE_HELD = "the stream stopped while the order awaited approval"
ASKS_WIND_DOWN_S = 10.0


@dataclass
class Held:
    """One order waiting for a person: its request, and its row of step 3's frame (to take
    back in at step 4 once approved)."""

    request: Any  # risk.approval.ApprovalRequest
    order: pd.DataFrame
    stop: asyncio.Event = field(default_factory=asyncio.Event)  # set by `ApprovalHolds.close`
    stop_reason: str = ""
    flow_run_id: str | None = None  # the run that asks the person (Prefect), once it is up
    settled: bool = False

    @property
    def client_order_id(self) -> str:
        return self.request.client_order_id


Ask = Callable[["ApprovalHolds", Held], Awaitable[Any]]


class ApprovalHolds:
    """Orders above the approval threshold, held for a person without holding the stream.

    `hold` (between steps 4 and 5): each such order leaves its batch, is audited
    (``order.approval_requested``) and its sender answered ``HELD`` at once; then
    ``ask(holds, held)`` runs in the background: it gets a person's answer (in the flow: a
    paused approval flow run with the form of `live-execution`) and gives it to `settle`.
    Approved: the order goes back into the queue (`SignalQueue.release`); the next batch
    takes it in at step 4 (checked again) and places it. Refused, timed out: rejected at
    step ``approval`` (`risk.approval.close_request`), never placed. `close` (the stream
    ends): every order still held is rejected as cancelled ("the stream stopped while the
    order awaited approval") and its ask told to stop (``held.stop``). Each held order is
    settled once: the first of its answer and `close` wins."""

    def __init__(self, queue: SignalQueue, ctx: ExecutionContext, policy: Any, stats: StreamStats, ask: Ask) -> None:
        self.queue, self.ctx, self.policy, self.stats, self.ask = queue, ctx, policy, stats, ask
        self.held: dict[str, Held] = {}  # by client order id
        self.closed = False
        self._tasks: set[asyncio.Future] = set()

    def __len__(self) -> int:
        return len(self.held)

    def hold(self, checked: pd.DataFrame, approved: set[str]) -> pd.DataFrame:
        """The orders of ``checked`` (step 4's frame) that go on to placement now: those
        below the threshold, and those already approved (client order ids ``approved``).
        The others are held."""
        from risk.approval import STEP, needs_approval, open_request, request_for
        from tasks.pipeline import provenance

        waiting = needs_approval(checked, self.policy) & ~checked["client_order_id"].isin(approved).to_numpy()
        if not waiting.any():
            return checked
        for i in np.flatnonzero(waiting):
            request = request_for(checked.iloc[i].to_dict(), self.ctx, self.policy)
            held = Held(request, checked.iloc[[i]].drop(columns="checked_at").reset_index(drop=True))
            open_request(self.ctx, request, provenance(self.ctx), alert=False)  # alerted once its run is up
            self.held[held.client_order_id] = held
            self.stats.held += 1
            notional = "unknown" if request.notional is None else f"{request.notional:,.2f}"
            self.queue.resolve(request.signal_id, {
                "accepted": True, "status": "HELD", "step": STEP, "client_order_id": request.client_order_id,
                "detail": (f"held for a person's approval (notional {notional} above {request.threshold:,.2f}): "
                           f"answer in the Prefect UI, flow run 'stream-approval [{request.signal_id}]', within "
                           f"{request.timeout_s:g} s or it is cancelled; `tradpal audit {request.signal_id}` "
                           f"tells the outcome")})
            task = asyncio.ensure_future(self._ask(held))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return checked.loc[~waiting].reset_index(drop=True)

    async def _ask(self, held: Held) -> None:
        from risk.approval import Decision

        try:
            await self.ask(self, held)
        except Exception as exc:  # the person could not be asked (the API down...): never placed
            log.exception("approval of %s", held.client_order_id)
            self.settle(held, Decision.cancelled(f"the approval could not be asked: {type(exc).__name__}: {exc}"))
        else:
            self.settle(held, Decision.cancelled("the approval ended without an answer"))  # no-op once settled

    def opened(self, held: Held, flow_run_id: str | None, ui_url: str | None = None) -> None:
        """The run that asks the person is up: audit where (``order.approval_opened``) and
        alert people, with the link."""
        from risk.approval import alert_request

        held.flow_run_id = flow_run_id
        prov = self._prov(held)
        with self.ctx.recorder.ledger.transaction() as s:
            self.ctx.recorder.ledger.audit(s, "order.approval_opened", "order", entity_id=held.client_order_id,
                                           payload={"signal_id": held.request.signal_id, "flow_run_id": flow_run_id,
                                                    "ui_url": ui_url}, prov=prov)
        alert_request(self.ctx, held.request, prov, ui_url=ui_url)

    def settle(self, held: Held, decision: Any) -> bool:
        """Record ``decision`` for ``held`` (audit, alert; a rejection unless approved) and
        act on it; False if it was settled already (the other answer came first)."""
        from risk.approval import close_request

        if held.settled:
            return False
        held.settled = True
        self.held.pop(held.client_order_id, None)
        try:
            close_request(self.ctx, held.request, decision, self._prov(held))
        except Exception:  # not recorded, so not placed; the order stays CREATED: reconciliation rejects it
            log.exception("recording the approval decision of %s", held.client_order_id)
            return True
        if decision.approved:
            self.stats.approved += 1
            self.queue.release(held.order)
        else:
            self.stats.rejected += 1
        return True

    def close(self, reason: str = STOPPED_WHILE_HELD) -> None:
        """The stream ends: reject every order still held, and stop asking for them."""
        from risk.approval import Decision

        self.closed = True
        for held in list(self.held.values()):
            held.stop_reason = reason
            self.settle(held, Decision.cancelled(reason))
            held.stop.set()

    async def finished(self, timeout: float) -> None:
        """Wait up to ``timeout`` for the asks to end (after `close`: their runs wind down)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    def _prov(self, held: Held):
        from dataclasses import replace

        from tasks.pipeline import provenance

        prov = provenance(self.ctx)
        return replace(prov, flow_run_id=held.flow_run_id) if held.flow_run_id else prov


async def process_batch(queue: SignalQueue, batch: list[Pending], ctx: ExecutionContext, stats: StreamStats,
                        make_call: Callable[[str], Caller] | None = None,
                        approval: Any = None, holds: ApprovalHolds | None = None) -> pd.DataFrame | None:
    """The eight steps on one batch (or, with an empty batch, a monitoring pass over the
    open orders). A failure answers the batch's senders with the reason and is raised.
    ``approval``: a `risk.approval.ApprovalPolicy`; orders above its threshold are held
    (``holds``), or refused at once without ``holds``. Approved orders in the batch
    (`SignalQueue.release`) join it at step 4."""
    released = [p.order for p in batch if p.order is not None]
    signals = [p.signal for p in batch if p.order is None]
    approved = {str(o["client_order_id"].iat[0]) for o in released}
    labelled = [p.signal for p in batch]
    base = make_call(batch_label(labelled, ctx.default_strategy) if labelled else "monitoring") if make_call \
        else run_step

    async def call(step: Step, frame: pd.DataFrame, c: ExecutionContext) -> pd.DataFrame:
        if step is PRE_CHECKS and released:
            frame = pd.concat([f for f in (frame, *released) if len(f)], ignore_index=True)[list(frame.columns)]
        if step is PLACEMENT and approval is not None and approval.enabled and len(frame):
            frame = holds.hold(frame, approved) if holds is not None else \
                await refuse_above_approval(queue, frame, c, approval, stats)
        out = await base(step, frame, c)
        if step is PLACEMENT:
            acknowledge(queue, out, stats)
            await asyncio.sleep(0.002)  # let the intake answer the senders (a few loop turns) before steps 6-8
        return out

    ctx.monitor_until = ctx.clock.now()  # one monitoring pass, no waiting: open orders carry on
    try:
        reports = await run_batch(pd.DataFrame(signals) if signals else empty_signals(), ctx, call=call)
    except BaseException as exc:
        queue.fail_all(batch, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        ctx.monitor_until = None
    for p in batch:  # refused nowhere and placed nowhere: should not happen; never leave a sender hanging
        queue.resolve(p.signal_id, {"accepted": False, "status": "FAILED", "reason": "no outcome from the steps"})
    if batch:
        stats.batches += 1
        stats.signals += len(signals)
        stats.largest_batch = max(stats.largest_batch, len(batch))
    else:
        stats.idle_passes += 1
    return reports


def empty_signals() -> pd.DataFrame:
    return pd.DataFrame({"timestamp": pd.Series([], dtype="datetime64[ns, UTC]"), "symbol": pd.Series([], dtype=object),
                         "side": pd.Series([], dtype=object), "quantity": pd.Series([], dtype="float64"),
                         "signal_id": pd.Series([], dtype=object)})


async def run_stream(queue: SignalQueue, ctx: ExecutionContext, stop: asyncio.Event, *,
                     make_call: Callable[[str], Caller] | None = None, idle_poll_s: float = 1.0,
                     on_batch: Callable[[pd.DataFrame], None] | None = None, approval: Any = None,
                     ask: Ask | None = None) -> StreamStats:
    """Consume until ``stop`` is set and the queue is drained. Between signals, open
    orders are polled every ``idle_poll_s``. A batch that fails stops the stream (its
    senders are answered with the reason; the ledger has the failure). ``approval``: the
    approval policy; with ``ask`` an order above its threshold is held for a person
    (`ApprovalHolds`), without it refused at once. Orders still held when the stream ends
    are rejected (`ApprovalHolds.close`)."""
    stats = StreamStats()
    attach(queue, ctx, stats)
    holds = ApprovalHolds(queue, ctx, approval, stats, ask) \
        if ask is not None and approval is not None and approval.enabled else None
    gc.collect()
    gc.freeze()  # what start-up built (modules, Prefect, pandas, the context) lives as long as the stream:
    #              out of the collector's way, a full collection no longer walks it (~1 s pauses under load)
    first = True  # one pass at start, signal or not: a restarted stream takes over what the ledger says is working
    try:
        while not (stop.is_set() and len(queue) == 0):
            batch = [] if first and len(queue) == 0 else \
                await queue.next_batch(timeout=min(idle_poll_s, 0.1) if stop.is_set() else idle_poll_s)
            if not batch and not ctx.open_orders and not first:
                continue
            first = False
            reports = await process_batch(queue, batch, ctx, stats, make_call, approval, holds)
            if on_batch is not None and reports is not None:
                on_batch(reports)
    finally:  # at once after the last check of the queue: an approval after this finds its order settled
        if holds is not None:
            holds.close()
    if holds is not None:
        await holds.finished(ASKS_WIND_DOWN_S)  # their approval runs end (Cancelled) before the stream's
    return stats
