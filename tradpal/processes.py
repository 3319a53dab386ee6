"""Whether a process lives, for what must tell a crashed process from a working one
(reconciliation of live runs; `make down`)."""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """A process with that pid runs here (a zombie — killed, not yet reaped — does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
