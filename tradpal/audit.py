"""`tradpal audit SIGNAL_ID`: a signal's whole lineage — the Prefect runs that touched it
(ids, states, times), each step's outcome, its orders, fills, rejections and alerts — from
the ledger and, when it answers, the Prefect API."""

from __future__ import annotations

import asyncio
from typing import Any

from tradpal.errors import InputError


def prefect_runs(run_ids: set[str], task_run_ids: set[str]) -> dict[str, dict[str, Any]]:
    """Names, states and times of the given flow and task runs, and each flow run's
    artifact keys (``artifacts``); empty if the API is unreachable."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter, TaskRunFilterId

    async def fetch() -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        async with get_client() as client:
            if run_ids:
                for r in await client.read_flow_runs(flow_run_filter=FlowRunFilter(
                        id=FlowRunFilterId(any_=[UUID(i) for i in run_ids]))):
                    out[str(r.id)] = {"kind": "flow run", "name": r.name, "state": r.state_name,
                                      "start": r.start_time, "end": r.end_time, "artifacts": []}
                from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

                for a in await client.read_artifacts(artifact_filter=ArtifactFilter(
                        flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(i) for i in run_ids]))):
                    if a.key and str(a.flow_run_id) in out:
                        out[str(a.flow_run_id)]["artifacts"].append(f"{a.key} ({a.type})")
            if task_run_ids:
                for r in await client.read_task_runs(task_run_filter=TaskRunFilter(
                        id=TaskRunFilterId(any_=[UUID(i) for i in task_run_ids]))):
                    out[str(r.id)] = {"kind": "task run", "name": r.name, "state": r.state_name,
                                      "start": r.start_time, "end": r.end_time}
        return out

    try:
        return asyncio.run(fetch())
    except Exception:  # the ledger alone still tells the story
        return {}


def lineage_text(ledger, signal_id: str, namespace: str | None = None, *, with_prefect: bool = True) -> str:
    namespaces = [namespace] if namespace else _namespaces_of(ledger, signal_id)
    if not namespaces:
        raise InputError(f"audit: no signal {signal_id!r} in ledger {ledger.url}")
    blocks = [_one(ledger, ns, signal_id, with_prefect) for ns in namespaces]
    return "\n\n".join(blocks)


def _step_rows(ledger, run_id: str):
    audit = ledger.frame("audit_log", run_id=run_id)
    return audit[audit["event"].str.startswith("step.")].head(40)


def _namespaces_of(ledger, signal_id: str) -> list[str]:
    signals = ledger.frame("signals")
    found = signals.loc[signals["signal_id"] == signal_id, "namespace"].tolist()
    rejected = ledger.frame("rejections")
    found += [n for n in rejected.loc[rejected["signal_id"] == signal_id, "namespace"] if n not in found]
    return found


def _one(ledger, namespace: str, signal_id: str, with_prefect: bool) -> str:
    lin = ledger.lineage(namespace, signal_id)
    rows = [lin["signal"], *lin["orders"], *lin["fills"], *lin["rejections"], *lin["audit"]]
    rows = [r for r in rows if r]
    flows = {r["flow_run_id"] for r in rows if r.get("flow_run_id")}
    run_ids = {r["run_id"] for r in rows if r.get("run_id")}
    step_rows = {run_id: _step_rows(ledger, run_id) for run_id in sorted(run_ids)}
    tasks = {r["task_run_id"] for r in rows if r.get("task_run_id")}
    tasks |= {a.task_run_id for steps in step_rows.values() for a in steps.itertuples() if a.task_run_id}
    runs = prefect_runs(flows, tasks) if with_prefect and (flows or tasks) else {}
    s = lin["signal"]
    lines = [f"signal {signal_id} [{namespace}]"]
    if s:
        lines.append(f"  {s['timestamp']} {s['side']} {s['quantity']} {s['symbol']} strategy={s['strategy']} "
                     f"received {s['received_at']} (run {s['run_id']}{_run_status(ledger, s['run_id'])})")
    lines.append("prefect runs:")
    for rid in sorted(flows | tasks):
        info = runs.get(rid)
        lines.append(f"  {rid}  " + (f"{info['kind']} {info['name']!r} {info['state']} {info['start']} → {info['end']}"
                                      if info else "(not found in the Prefect API)"))
        if info and info.get("artifacts"):
            lines.append(f"    artifacts: {', '.join(sorted(info['artifacts']))}")
    lines.append("steps (the run's step outcomes, then this signal's events):")
    for steps in step_rows.values():
        for a in steps.itertuples():
            lines.append(f"  {a.time} {a.event} {a.payload} task_run={a.task_run_id}")
    for a in lin["audit"]:
        lines.append(f"  {a['time']} {a['event']} {a['entity']}:{a['entity_id']} {a['payload']} task_run={a['task_run_id']}")
    for o in lin["orders"]:
        lines.append(f"order {o['client_order_id']} broker={o['broker_order_id']} {o['side']} {o['quantity']} "
                     f"{o['symbol']} {o['order_type']} → {o['status']} filled {o['filled_quantity']} @ {o['avg_price']} "
                     f"fees {o['fees']} {o['reason'] or ''}".rstrip())
    for f in lin["fills"]:
        lines.append(f"fill {f['trade_id']} {f['timestamp']} {f['quantity']} @ {f['price']} fee {f['fee']}")
    for r in lin["rejections"]:
        lines.append(f"rejected at {r['step']}: {r['reason']}")
    return "\n".join(lines)


def _run_status(ledger, run_id: str | None) -> str:
    """``, <status>`` of the run (``, crashed: <why>`` for a crashed one), or nothing."""
    run = ledger.get_run(run_id) if run_id else None
    if run is None:
        return ""
    reason = (run["summary"] or {}).get("reason") if run["status"] == "crashed" else None
    return f", {reason or run['status']}"


def runs_text(ledger, *, limit: int = 20, status: str | None = None) -> str:
    """`tradpal runs`: the latest ``limit`` runs of the ledger (oldest first), each with its
    kind, status, times and Prefect flow run; a crashed run with the reason it was marked."""
    import pandas as pd

    runs = ledger.frame("runs")
    if status:
        runs = runs[runs["status"] == status]
    runs = runs.tail(limit)
    if runs.empty:
        return f"no {status + ' ' if status else ''}runs in ledger {ledger.url}"
    lines = []
    for r in runs.itertuples():
        end = f" → {r.finished_at}" if pd.notna(r.finished_at) else ""
        flow = f" flow_run={r.flow_run_id}" if r.flow_run_id else ""
        lines.append(f"{r.id} {r.kind:<9} {r.status:<9} {r.started_at}{end}{flow}")
        if r.status in ("crashed", "failed"):
            summary = r.summary if isinstance(r.summary, dict) else {}
            why = summary.get("reason") or summary.get("error")
            if why:
                lines.append(f"    {why}" + (f" (Prefect: {summary['prefect']})" if summary.get("prefect") else ""))
    return "\n".join(lines)
