"""`make bench`: every benchmark, each in its own process; JSON lines on stdout."""

from __future__ import annotations

import json
import subprocess
import sys

CASES = [
    ["benchmarks.replay", "direct"],
    ["benchmarks.replay", "flow"],
    ["benchmarks.latency"],
    ["benchmarks.analytics"],
]


def main() -> int:
    results: dict[str, float] = {}
    failed = 0
    for case in CASES:
        proc = subprocess.run([sys.executable, "-m", *case], capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
                print(line, flush=True)
                row = json.loads(line)
                results[row["name"]] = row["value"]
        if proc.returncode != 0:
            failed += 1
            print(json.dumps({"name": " ".join(case), "value": None, "unit": "error",
                              "target": None, "error": proc.stderr.strip().splitlines()[-1:]}), flush=True)
    direct = results.get("replay_direct_1000k_bars_5000_signals_wall")
    flow = results.get("replay_flow_1000k_bars_5000_signals_wall")
    if direct and flow:
        print(json.dumps({"name": "replay_prefect_overhead_ratio", "value": round(flow / direct, 3),
                          "unit": "x", "target": "<= 1.5"}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
