"""Crash injection for the reliability trials (``tests/reliability/test_crash.py``).

``TRADPAL_CRASH_AT`` names where the process kills itself with SIGKILL, as a crash
would: ``POINT[:N]`` (the N-th time the process passes POINT; N defaults to 1), several
separated by commas. Unset (always, in production) every check is a no-op costing one
environment look-up. The named points:

    placement.sent         step 5, just before an order's look-up and placement at the broker
    placement.acked        step 5, just after the broker answered (accepted or refused), before
                           anything is written to the ledger: the exchange has the order, we don't
    <step>.recorded        just after a step's ledger transaction committed
                           (intake, sizing, order_creation, pre_checks, placement, monitoring,
                           positions, analysis)

Example: ``TRADPAL_CRASH_AT=placement.acked:3 tradpal live ...`` dies after the venue
accepted the third order and before the ledger heard of it.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

CRASH_ENV = "TRADPAL_CRASH_AT"

_hits: Counter[str] = Counter()
_parsed: tuple[str, dict[str, int]] = ("", {})


def parse(spec: str) -> dict[str, int]:
    """``"a.b:2,c.d"`` -> ``{"a.b": 2, "c.d": 1}``; ValueError naming the bad part."""
    points: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, count = part.partition(":")
        if not name or (count and not (count.isdigit() and int(count) >= 1)):
            raise ValueError(f"{CRASH_ENV}: {part!r} is not POINT[:N] with N >= 1")
        points[name] = int(count or 1)
    return points


def crash_point(name: str) -> None:
    """Die here with SIGKILL if ``TRADPAL_CRASH_AT`` names this point and this is its N-th pass."""
    global _parsed
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    if spec != _parsed[0]:
        _parsed = (spec, parse(spec))
        _hits.clear()
    wanted = _parsed[1].get(name)
    if wanted is None:
        return
    _hits[name] += 1
    if _hits[name] == wanted:
        os.kill(os.getpid(), signal.SIGKILL)
