"""Helpers shared by the benchmarks."""

from __future__ import annotations

import json
import os
import resource
import tempfile
from contextlib import contextmanager
from pathlib import Path


def emit(name: str, value: float, unit: str, target: str | float | None = None, **extra) -> None:
    print(json.dumps({"name": name, "value": round(value, 4) if isinstance(value, float) else value, "unit": unit,
                      "target": target, **extra}), flush=True)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@contextmanager
def isolated_prefect():
    """A private PREFECT_HOME (ephemeral API, own SQLite) and quiet logs."""
    with tempfile.TemporaryDirectory(prefix="tradpal-bench-") as tmp:
        os.environ["PREFECT_HOME"] = str(Path(tmp) / "prefect")
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
        yield Path(tmp)
