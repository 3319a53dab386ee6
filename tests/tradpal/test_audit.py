from __future__ import annotations

import asyncio

import pandas as pd

from flows.live_execution import live_execution
from tradpal.cli import main


def test_audit_prints_the_lineage_with_prefect_runs(prefect_api, tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'l.db'}"
    now = pd.Timestamp.now(tz="UTC").isoformat()
    asyncio.run(live_execution([{"timestamp": now, "symbol": "BTC/USDT", "side": "buy", "quantity": 0.1,
                                 "signal_id": "sig-42", "strategy": "alpha"}], prices={"BTC/USDT": 100.0},
                               database_url=db))
    assert main(["audit", "sig-42", "--database-url", db]) == 0
    out = capsys.readouterr().out
    assert "signal sig-42 [live]" in out and "strategy=alpha" in out
    assert "Completed" in out  # the flow and task runs, read back from the Prefect API
    for step in ("step.intake", "step.placement", "order.placed", "order.filled"):
        assert step in out
    assert "→ FILLED filled 0.1 @ 100.0" in out and "fill " in out


def test_audit_unknown_signal(tmp_path, capsys):
    assert main(["audit", "nope", "--database-url", f"sqlite:///{tmp_path / 'l.db'}"]) == 2
    assert "no signal 'nope'" in capsys.readouterr().err
