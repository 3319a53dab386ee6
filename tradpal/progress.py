"""A hook for progress reports, so the CLI can draw a bar while a flow runs in-process."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

Listener = Callable[[int, int, str], None]
_listener: ContextVar[Listener | None] = ContextVar("tradpal_progress", default=None)


def set_listener(listener: Listener | None) -> None:
    _listener.set(listener)


def report(done: int, total: int, label: str = "") -> None:
    listener = _listener.get()
    if listener is not None:
        listener(done, total, label)
