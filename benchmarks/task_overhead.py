"""Prefect's own cost per task run: eight trivial async tasks (each returns its input)
inside an already-running flow, with and without the saved result-storage block the step
tasks use (`tasks.prefect_tasks.result_storage`). Reports the wall and the client process's
CPU per eight task runs (mean over N rounds after a warm-up of 100).

    python -m benchmarks.task_overhead [N]
"""

from __future__ import annotations

import asyncio
import sys
import time

import pandas as pd

from benchmarks.common import emit, isolated_prefect


def main(n: int = 500) -> None:
    with isolated_prefect():
        from prefect import flow, task
        from prefect.cache_policies import NO_CACHE
        from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

        from tasks.prefect_tasks import result_storage

        async def step(frame: pd.DataFrame, ctx: object, label: str = "") -> pd.DataFrame:
            return frame

        plain = [task(step, name=f"trivial-{i}", task_run_name=f"trivial-{i} [{{label}}]", cache_policy=NO_CACHE,
                      persist_result=False) for i in range(8)]

        async def rounds(tasks: list) -> tuple[float, float]:
            frame = pd.DataFrame({"a": [1.0]})
            for i in range(100 + n):
                if i == 100:
                    cpu, wall = time.process_time(), time.perf_counter()
                for t in tasks:
                    frame = await t(frame, None, "bench")
            return (time.perf_counter() - wall) / n * 1e3, (time.process_time() - cpu) / n * 1e3

        @flow(name="task-overhead-bench")
        async def bench() -> dict:
            block = await result_storage()
            stored = [t.with_options(result_storage=block) for t in plain]
            return {"default_storage": await rounds(plain), "saved_block": await rounds(stored)}

        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            out = asyncio.run(bench())
        for name, (wall, cpu) in out.items():
            emit(f"prefect_eight_trivial_tasks_{name}", wall, "ms", None, client_cpu_ms=round(cpu, 2), rounds=n)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
