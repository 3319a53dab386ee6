"""A worker process for the claim test: runs signal ids one per batch through the eight
steps (paper broker on the wall clock) against a shared ledger, after waiting for a go
file, and prints JSON {"placed": [...], "errors": [...]}.

    python -m tests.tasks.claim_worker LEDGER_URL GO_FILE ID [ID ...]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pandas as pd

from tasks.pipeline import run_batch
from tasks.recorder import LedgerRecorder
from tests.tasks.conftest import SYM, build_context
from tradpal.ledger import Ledger


async def work(url: str, go: Path, ids: list[str]) -> dict:
    ledger = Ledger(url)
    run_id = ledger.start_run("live", {"worker": True})
    ctx = build_context(live=True, prices={SYM: 100.0}, run_id=run_id, namespace="live")
    ctx.recorder = LedgerRecorder(ledger, run_id=run_id, namespace="live", venue=ctx.venue)
    from tasks.context import PipelineConfig

    ctx.config = PipelineConfig(rules={SYM: ctx.config.default_rules})
    Path(f"{go}.ready.{id(ctx)}").touch()
    while not go.exists():
        time.sleep(0.001)
    placed, errors = [], []
    for sid in ids:
        raw = pd.DataFrame([{"timestamp": pd.Timestamp.now(tz="UTC"), "symbol": SYM, "side": "buy",
                             "quantity": 0.01, "signal_id": sid, "reference_price": 100.0}])
        try:
            out = await run_batch(raw, ctx)
        except Exception as exc:  # reported, so the test can show it
            errors.append(f"{sid}: {type(exc).__name__}: {exc}"[:300])
            continue
        placed += sorted(set(out["signal_id"]))
    ledger.close()
    return {"placed": placed, "errors": errors}


if __name__ == "__main__":
    url, go, *ids = sys.argv[1:]
    print(json.dumps(asyncio.run(work(url, Path(go), ids))))
