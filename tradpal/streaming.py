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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from tasks.context import ExecutionContext
from tasks.pipeline import STEP_BY_NAME, Step, run_batch, run_step
from tradpal.intake_server import Busy

PLACEMENT = STEP_BY_NAME["placement"]
DEFAULT_BATCH_INTERVAL_S = 0.1  # under load, at most ten batches a second (`SignalQueue.next_batch`)


@dataclass
class Pending:
    """One signal waiting for its outcome."""

    signal: dict[str, Any]
    future: asyncio.Future
    received: float = field(default_factory=time.perf_counter)

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


async def process_batch(queue: SignalQueue, batch: list[Pending], ctx: ExecutionContext, stats: StreamStats,
                        make_call: Callable[[str], Caller] | None = None,
                        approval: Any = None) -> pd.DataFrame | None:
    """The eight steps on one batch (or, with an empty batch, a monitoring pass over the
    open orders). A failure answers the batch's senders with the reason and is raised.
    ``approval``: a `risk.approval.ApprovalPolicy`; orders above its threshold are refused."""
    signals = [p.signal for p in batch]
    base = make_call(batch_label(signals, ctx.default_strategy) if signals else "monitoring") if make_call else run_step

    async def call(step: Step, frame: pd.DataFrame, c: ExecutionContext) -> pd.DataFrame:
        if step is PLACEMENT and approval is not None and approval.enabled and len(frame):
            frame = await refuse_above_approval(queue, frame, c, approval, stats)
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
        stats.signals += len(batch)
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
                     on_batch: Callable[[pd.DataFrame], None] | None = None, approval: Any = None) -> StreamStats:
    """Consume until ``stop`` is set and the queue is drained. Between signals, open
    orders are polled every ``idle_poll_s``. A batch that fails stops the stream (its
    senders are answered with the reason; the ledger has the failure)."""
    stats = StreamStats()
    attach(queue, ctx, stats)
    gc.collect()
    gc.freeze()  # what start-up built (modules, Prefect, pandas, the context) lives as long as the stream:
    #              out of the collector's way, a full collection no longer walks it (~1 s pauses under load)
    first = True  # one pass at start, signal or not: a restarted stream takes over what the ledger says is working
    while not (stop.is_set() and len(queue) == 0):
        batch = [] if first and len(queue) == 0 else \
            await queue.next_batch(timeout=min(idle_poll_s, 0.1) if stop.is_set() else idle_poll_s)
        if not batch and not ctx.open_orders and not first:
            continue
        first = False
        reports = await process_batch(queue, batch, ctx, stats, make_call, approval)
        if on_batch is not None and reports is not None:
            on_batch(reports)
    return stats
