"""Whether a process lives, for what must tell a crashed process from a working one
(reconciliation of live runs; `make down`).

A pid alone is not an identity: once a process is gone the kernel may give its pid to a
new one. A run therefore records its pid with the process's start time (`process_started`,
the kernel's start tick from ``/proc``), and `process_alive` with ``started`` counts only
that very process, not a later one that was given the same pid."""

from __future__ import annotations

import os


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (field 3 onwards), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_started(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks after boot (``/proc/PID/stat``
    field 22), or None where ``/proc`` cannot tell (not Linux, no such process)."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields else None
    except (IndexError, ValueError):
        return None


def process_alive(pid: int, started: int | None = None) -> bool:
    """A process with that pid runs here (a zombie — killed, not yet reaped — does not
    count). With ``started`` (from `process_started` when the process was recorded): only if
    it is that same process, not another that was given the pid after it ended."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _stat_fields(pid)
    if fields is None:
        return True  # no /proc to ask: the signal said it lives
    if fields[0] == "Z":
        return False
    return started is None or process_started(pid) in (None, started)


def recorded_process_alive(params: dict) -> bool:
    """`process_alive` for a run's recorded ``{"pid", "pid_started"}`` (see `tradpal.live`):
    runs recorded before the start time was kept are judged by their pid alone."""
    started = params.get("pid_started")
    return process_alive(int(params["pid"]), int(started) if started is not None else None)


EPHEMERAL_API_MARK = "prefect.server.api.server:create_app"  # Prefect's ephemeral API: `uvicorn --factory ...`


def child_pids(marker: str) -> list[int]:
    """The pids of this process's children whose command line contains ``marker``."""
    me, found = os.getpid(), []
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        try:
            if not fields or int(fields[1]) != me:
                continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


def lower_priority(pids: list[int], niceness: int) -> list[int]:
    """Raise the nice value of ``pids`` to at least ``niceness`` (never lower it: that
    needs privileges and is not ours to do); returns the pids changed."""
    changed = []
    for pid in pids:
        try:
            if os.getpriority(os.PRIO_PROCESS, pid) < niceness:
                os.setpriority(os.PRIO_PROCESS, pid, niceness)
                changed.append(pid)
        except OSError:
            continue
    return changed
