"""The eight steps in order, and `run_step`: the one wrapper every step goes through,
with or without Prefect. It calls the step's plain function, validates the output
contract (once per boundary), records the outcome in the ledger, and times it."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import pandera.pandas as pa

from risk.alerts import breach_alerts
from tasks import contracts as c
from tasks.analysis import analyse_executions
from tasks.context import ExecutionContext
from tasks.intake import intake_signals
from tasks.monitoring import monitor_executions
from tasks.orders import create_orders
from tasks.placement import place_orders
from tasks.positions import manage_positions
from tasks.prechecks import pre_execution_checks
from tasks.sizing import size_signals
from tasks.step import StepResult
from tradpal.ledger import Provenance


@dataclass(frozen=True)
class Step:
    number: int
    name: str
    fn: Callable[..., StepResult]
    output: type[pa.DataFrameModel]
    talks_to_broker: bool = False
    alerts_on_rejection: bool = False  # a refusal here is a risk breach: alert
    # Works on its input rows only (no open orders, no book): with no rows it has nothing to
    # do, and the flows run it in line (`run_step`) rather than as a task run.
    row_wise: bool = False

    @property
    def title(self) -> str:
        return f"{self.number}-{self.name.replace('_', '-')}"


STEPS: tuple[Step, ...] = (
    Step(1, "intake", intake_signals, c.SignalFrame, row_wise=True),
    Step(2, "sizing", size_signals, c.SizedFrame, row_wise=True),
    Step(3, "order_creation", create_orders, c.OrderFrame, row_wise=True),
    Step(4, "pre_checks", pre_execution_checks, c.CheckedFrame, alerts_on_rejection=True, row_wise=True),
    Step(5, "placement", place_orders, c.PlacedFrame, talks_to_broker=True, row_wise=True),
    Step(6, "monitoring", monitor_executions, c.ExecutionFrame, talks_to_broker=True),
    Step(7, "positions", manage_positions, c.PositionFrame, talks_to_broker=True),
    Step(8, "analysis", analyse_executions, c.ExecutionReport),
)
STEP_BY_NAME = {s.name: s for s in STEPS}


def provenance(ctx: ExecutionContext) -> Provenance:
    """The Prefect flow run and task run writing now (None outside Prefect)."""
    from prefect.context import FlowRunContext, TaskRunContext

    task_ctx = TaskRunContext.get()
    flow_ctx = FlowRunContext.get()
    flow_run = flow_ctx.flow_run if flow_ctx else None
    return Provenance(
        run_id=ctx.run_id,
        flow_run_id=str(flow_run.id) if flow_run else None,
        task_run_id=str(task_ctx.task_run.id) if task_ctx else None,
    )


async def run_step(step: Step, frame: pd.DataFrame, ctx: ExecutionContext) -> pd.DataFrame:
    """Run one step on one batch: call, validate the output contract, record, time."""
    t0 = time.perf_counter()
    result = step.fn(frame, ctx)
    if inspect.isawaitable(result):
        result = await result
    out = c.validate(result.frame, step.output, step=step.name)
    prov = provenance(ctx)
    ctx.recorder.record(step.name, out, result.rejected, prov, result.extra)
    if step.alerts_on_rejection and len(result.rejected) and ctx.alerter is not None:
        alerts = breach_alerts(ctx.alerter, step.name, result.rejected, frame, flow_run_id=prov.flow_run_id)
        ctx.recorder.record_alerts(alerts, prov)
    if "equity" in result.extra and len(result.extra["equity"]):  # live without bars: none (kept for a replay's equity.csv)
        ctx.equity_segments.append(result.extra["equity"])
    ctx.breaches.extend(result.extra.get("breaches", []))
    trips = result.extra.get("trips", [])
    ctx.breaches.extend({"time": str(t.at), "rule": t.name, "symbol": None if t.scope == "portfolio" else t.scope,
                         "value": t.value, "threshold": t.threshold} for t in trips)
    if trips and ctx.alerter is not None:
        ctx.recorder.record_alerts([ctx.alerter.notify(f"breaker:{t.name}:{t.scope}", f"TradPal breaker tripped: {t.name}",
                                                       f"{t.name} ({t.scope}): {t.reason}. Value {t.value:.6g} against "
                                                       f"threshold {t.threshold:g}. Flow run {prov.flow_run_id}.",
                                                       level="failure") for t in trips], prov)
    ctx.counts[f"{step.name}.rejected"] += len(result.rejected)
    ctx.counts[f"{step.name}.out"] += len(out)
    ctx.step_seconds[step.name] += time.perf_counter() - t0
    return out


async def run_batch(raw: pd.DataFrame, ctx: ExecutionContext,
                    call: Callable | None = None) -> pd.DataFrame:
    """The eight steps on one batch. ``call(step, frame, ctx)`` runs a step (default:
    `run_step` directly; the flows pass their Prefect tasks)."""
    call = call or run_step
    frame = raw
    for step in STEPS:
        frame = await call(step, frame, ctx)
    return frame
