"""Clocks. Live code runs on the wall clock; a replay runs on a simulated clock that
the paper broker listens to, so the same monitoring step serves both: it waits on
the clock, and waiting on a simulated clock is what moves the market forward."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pandas as pd

ClockListener = Callable[[pd.Timestamp], Awaitable[None] | None]


def utc(ts: datetime | pd.Timestamp | str) -> pd.Timestamp:
    """A timezone-aware UTC ``pd.Timestamp`` (naive input is taken as UTC)."""
    if type(ts) is pd.Timestamp and ts.tzinfo is UTC:  # already one (the usual case): as it is
        return ts
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


class WallClock:
    """Real time. ``sleep_until`` really sleeps."""

    simulated = False

    def now(self) -> pd.Timestamp:
        return pd.Timestamp(datetime.now(UTC))

    def next_wake(self, deadline: pd.Timestamp, poll_interval_s: float) -> pd.Timestamp:
        """When a poller should look again: after one poll interval, at most the deadline."""
        return min(utc(deadline), self.now() + pd.Timedelta(seconds=poll_interval_s))

    async def sleep_until(self, t: pd.Timestamp) -> None:
        delay = (utc(t) - self.now()).total_seconds()
        if delay > 0:
            await asyncio.sleep(delay)


class SimulatedClock:
    """Simulated time for replays. ``sleep_until(t)`` returns at once, after every
    listener (the paper broker) has processed the market up to ``t``."""

    simulated = True

    def __init__(self, start: datetime | pd.Timestamp | str = "1970-01-01") -> None:
        self._now = utc(start)
        self._listeners: list[ClockListener] = []

    def subscribe(self, listener: ClockListener) -> None:
        self._listeners.append(listener)

    def now(self) -> pd.Timestamp:
        return self._now

    def set(self, t: datetime | pd.Timestamp | str) -> None:
        """Move the clock without processing the market (e.g. to a signal's time)."""
        t = utc(t)
        if t > self._now:
            self._now = t

    def next_wake(self, deadline: pd.Timestamp, poll_interval_s: float) -> pd.Timestamp:
        """Waiting costs nothing in simulated time: wake at the deadline."""
        return utc(deadline)

    async def sleep_until(self, t: datetime | pd.Timestamp | str) -> None:
        t = utc(t)
        for listener in self._listeners:
            result = listener(t)
            if result is not None:
                await result
        if t > self._now:
            self._now = t


Clock = WallClock | SimulatedClock
