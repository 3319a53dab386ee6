"""What the replay's speed-ups rely on: the heap is frozen out of the garbage collector
while the batches run (and given back after, also on failure), and step 7's bar grid
(bisected slices) is the grid that a mask over every bar gave."""

from __future__ import annotations

import asyncio
import gc

import numpy as np
import pytest

from tasks.positions import _bar_grid
from tests.conftest import SAMPLE
from tradpal.io import load_ohlcv
from tradpal.ledger import Ledger
from tradpal.replay import ReplayParams, frozen_heap, load_inputs, run_replay
from tradpal.strategies import sma_crossover, write_signals_csv


def test_the_heap_is_frozen_during_the_batches_and_given_back_after(tmp_path) -> None:
    ohlcv = SAMPLE / "BITTREX_ETH-BTC_5m.csv"
    write_signals_csv(sma_crossover(load_ohlcv(ohlcv), symbol="ETH/BTC", quantity=1.0), tmp_path / "s.csv")
    params = ReplayParams(str(ohlcv), str(tmp_path / "s.csv"), "ETH/BTC", 1.0, 0.001, 5.0, None, 40)
    seen: list[int] = []
    assert gc.get_freeze_count() == 0
    asyncio.run(run_replay(params, load_inputs(params), Ledger(f"sqlite:///{tmp_path / 'l.db'}"),
                           on_batch=lambda done, total, label: seen.append(gc.get_freeze_count())))
    assert len(seen) > 1 and min(seen) > 0
    assert gc.get_freeze_count() == 0


def test_frozen_heap_is_reentrant_and_unfreezes_on_error() -> None:
    with pytest.raises(RuntimeError), frozen_heap():
        with frozen_heap():
            pass
        assert gc.get_freeze_count() > 0  # the inner block's end leaves the outer one frozen
        raise RuntimeError("boom")
    assert gc.get_freeze_count() == 0


def _masked(stamps: list[np.ndarray], start: int, end: int) -> np.ndarray:
    return np.unique(np.concatenate([t[(t > start) & (t <= end)] for t in stamps]))


@pytest.mark.parametrize("n_symbols", [1, 3])
def test_bar_grid_equals_the_masked_grid(n_symbols: int) -> None:
    rng = np.random.default_rng(5)
    stamps = [np.unique(rng.integers(0, 2_000, 400)) * 60 for _ in range(n_symbols)]
    edges = [-1, 0, 59, 60, 61, 3_000, 60_000, 119_940, 200_000]
    for start in edges:
        for end in edges:
            got = _bar_grid(stamps, start, end)
            want = _masked(stamps, start, end)
            assert got.dtype == want.dtype and np.array_equal(got, want), (start, end)
    assert len(_bar_grid([], 0, 10)) == 0
