"""`make bench`: every benchmark, each in its own process; JSON lines on stdout."""

from __future__ import annotations

import json
import subprocess
import sys

CASES = [
    ["benchmarks.replay", "direct"],
    ["benchmarks.replay", "flow"],
    ["benchmarks.replay", "flow-ungated"],
    ["benchmarks.replay", "lower-bound"],
    ["benchmarks.replay", "advanced"],
    ["benchmarks.replay", "multi"],
    ["benchmarks.task_overhead"],
    ["benchmarks.latency"],
    ["benchmarks.stream", "latency"],
    ["benchmarks.stream", "load"],
    ["benchmarks.stream", "two-workers"],
    ["benchmarks.analytics"],
    ["benchmarks.ccxt_latency"],
    ["benchmarks.ccxt_latency", "20", "--gate"],
    ["benchmarks.scaleout"],
    ["benchmarks.events", "12", "sqlite"],
    ["benchmarks.events", "12", "postgresql"],
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
    _ratios(results)
    return 1 if failed else 0


def _ratios(results: dict[str, float]) -> None:
    """The flow against the vectorised lower bound, and the 10 M-bar case against the 1 M one."""
    bound = results.get("replay_lower_bound_1000k_bars_5000_signals_wall")
    one = "replay_advanced_1000k_bars_5000_signals"
    ten = "replay_advanced_10x1000k_bars_50000_signals"
    rows = []
    if bound:
        flow = results.get("replay_flow_1000k_bars_5000_signals_wall")
        if flow:
            rows.append(("replay_flow_vs_lower_bound_ratio", flow / bound, "x", "<= 3"))
        ungated = results.get("replay_flow_ungated_1000k_bars_5000_signals_wall")
        if ungated:  # the lower bound checks bars as it loads them (the loader's checks) but runs no GX suite
            rows.append(("replay_flow_ungated_vs_lower_bound_ratio", ungated / bound, "x", None))
        if results.get(f"{one}_wall"):
            rows.append(("replay_advanced_vs_lower_bound_ratio", results[f"{one}_wall"] / bound, "x", None))
    if results.get(f"{one}_wall") and results.get(f"{ten}_wall"):
        rows.append(("replay_advanced_10m_vs_1m_wall_ratio", results[f"{ten}_wall"] / results[f"{one}_wall"], "x",
                     None))
        rows.append(("replay_advanced_10m_vs_1m_rss_growth", results[f"{ten}_peak_rss"] - results[f"{one}_peak_rss"],
                     "MiB", None))
    for name, value, unit, target in rows:
        print(json.dumps({"name": name, "value": round(value, 3), "unit": unit, "target": target}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
