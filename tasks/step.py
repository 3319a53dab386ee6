"""What a step returns: the frame for the next step, and what it rejected (with why)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

REJECTION_COLUMNS = ["signal_id", "client_order_id", "reason"]


def rejections(signal_ids, reasons, client_order_ids=None) -> pd.DataFrame:
    """A rejections frame; ``reasons`` is one string or one per signal."""
    ids = list(signal_ids)
    if not ids:
        return no_rejections()
    why = [reasons] * len(ids) if isinstance(reasons, str) else list(reasons)
    coids = list(client_order_ids) if client_order_ids is not None else [None] * len(ids)
    return pd.DataFrame({"signal_id": ids, "client_order_id": coids, "reason": why}, columns=REJECTION_COLUMNS)


_NONE = pd.DataFrame({c: pd.Series(dtype=object) for c in REJECTION_COLUMNS})


def no_rejections() -> pd.DataFrame:
    return _NONE.copy()  # (a copy: building an empty frame costs ~5x more, and nobody shares this one)


@dataclass
class StepResult:
    frame: pd.DataFrame
    rejected: pd.DataFrame = field(default_factory=no_rejections)
    extra: dict = field(default_factory=dict)  # step-specific side results (e.g. the equity segment)
