"""`python -m tests.reliability.summary FILE`: the figures of a `make chaos` run (the JSON
lines each reliability trial appends to TRADPAL_RELIABILITY_REPORT), as docs/RELIABILITY.md
quotes them."""

from __future__ import annotations

import json
import sys
from collections import Counter


def summarise(lines: list[dict]) -> dict:
    crash = [r for r in lines if r["campaign"] == "crash"]
    # a combination run again (a re-run of failed ones) counts once, as last measured
    faults = list({(r["fault"], r["target"], r["strength"]): r for r in lines if r["campaign"] == "faults"}.values())
    killed_at = Counter(r.get("crash_at", "random").split(":")[0] if r["killed"] else "not reached" for r in crash)
    outcomes: Counter = Counter()
    for r in faults:
        outcomes.update(r["outcomes"])
    return {
        "crash_trials": len(crash), "crash_killed": sum(r["killed"] for r in crash),
        "crash_signals": sum(r["signals"] for r in crash), "crash_killed_at": dict(killed_at),
        "crash_final_outcomes": crash[-1]["outcomes_so_far"] if crash else {},
        "crash_runs_marked_crashed": crash[-1].get("runs_crashed_so_far") if crash else None,
        "fault_runs": len(faults), "fault_runs_failed_then_restarted": sum(r["run_failed"] for r in faults),
        "fault_signals": sum(r["signals"] for r in faults), "fault_outcomes": dict(outcomes),
        "fault_errors": dict(Counter(f"{r['target']}:{r['error']}" for r in faults if r.get("error"))),
        "faults": sorted({r["fault"] for r in faults}), "targets": sorted({r["target"] for r in faults}),
    }


def main(path: str) -> None:
    with open(path) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    print(json.dumps(summarise(lines), indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
