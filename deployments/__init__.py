"""Deployment helpers. `prefect.yaml` at the repo root declares the deployments; this
package checks that they point at real flows (`check_prefect_yaml`) and can serve them
from one process for local use (`python -m deployments.serve`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# Deployments whose cadence is part of operating TradPal (the yaml owns their schedule);
# every other one is scheduled by users in the UI, so its yaml must not carry `schedules:`.
SCHEDULED = frozenset({"post-trade-analytics", "risk-monitor"})
SIGNAL_EVENT = "tradpal.signal.received"


def load_flow(entrypoint: str, root: Path = ROOT):
    """The flow object behind ``path/to/file.py:function``."""
    path, _, name = entrypoint.partition(":")
    spec = importlib.util.spec_from_file_location(Path(path).stem, root / path)
    if spec is None or spec.loader is None:
        raise ValueError(f"entrypoint {entrypoint!r}: no such file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def check_prefect_yaml(path: Path = ROOT / "prefect.yaml") -> list[str]:
    """Problems in prefect.yaml: entrypoints that do not load, parameters the flow does not take."""
    problems = []
    config = yaml.safe_load(path.read_text())
    for dep in config.get("deployments", []):
        try:
            flow = load_flow(dep["entrypoint"])
        except Exception as exc:  # report every broken entrypoint, not just the first
            problems.append(f"{dep['name']}: {exc}")
            continue
        unknown = set(dep.get("parameters") or {}) - set(flow.parameters.properties)
        if unknown:
            problems.append(f"{dep['name']}: unknown parameters {sorted(unknown)}")
        if "schedules" in dep and dep["name"] not in SCHEDULED:
            problems.append(f"{dep['name']}: has schedules: (users schedule in the UI)")
        if dep["name"] in SCHEDULED and not dep.get("schedules"):
            problems.append(f"{dep['name']}: needs its schedule in the yaml")
        for trigger in dep.get("triggers") or []:
            unknown = set(trigger.get("parameters") or {}) - set(flow.parameters.properties)
            if unknown:
                problems.append(f"{dep['name']}: trigger passes unknown parameters {sorted(unknown)}")
    return problems
