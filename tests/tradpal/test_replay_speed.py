"""What the replay's speed-ups rely on: the heap is frozen out of the garbage collector
while the batches run (and given back after, also on failure), and step 7's bar grid
(bisected slices) is the grid that a mask over every bar gave."""

from __future__ import annotations

import asyncio
import gc
import weakref

import numpy as np
import pandas as pd
import pytest

from risk.breakers import return_zscores, volatility_trip
from tasks.positions import _bar_grid
from tests.conftest import SAMPLE
from tradpal.io import load_ohlcv
from tradpal.ledger import Ledger
from tradpal.replay import ReplayParams, frozen_heap, keep_frozen, load_inputs, run_replay
from tradpal.strategies import sma_crossover, write_signals_csv


def test_the_heap_is_frozen_during_the_batches_and_given_back_after(tmp_path) -> None:
    ohlcv = SAMPLE / "BITTREX_ETH-BTC_5m.csv"
    write_signals_csv(sma_crossover(load_ohlcv(ohlcv), symbol="ETH/BTC", quantity=1.0), tmp_path / "s.csv")
    params = ReplayParams(str(ohlcv), str(tmp_path / "s.csv"), "ETH/BTC", 1.0, 0.001, 5.0, None, 40)
    seen: list[int] = []
    gc.unfreeze()  # a clean start: another test in this process may have frozen it (the live stream does)
    asyncio.run(run_replay(params, load_inputs(params), Ledger(f"sqlite:///{tmp_path / 'l.db'}"),
                           on_batch=lambda done, total, label: seen.append(gc.get_freeze_count())))
    assert len(seen) > 1 and min(seen) > 0
    assert gc.get_freeze_count() == 0


def test_frozen_heap_is_reentrant_and_unfreezes_on_error() -> None:
    gc.unfreeze()
    with pytest.raises(RuntimeError), frozen_heap():
        with frozen_heap():
            pass
        assert gc.get_freeze_count() > 0  # the inner block's end leaves the outer one frozen
        raise RuntimeError("boom")
    assert gc.get_freeze_count() == 0


class _Node:
    pass


def test_a_heap_frozen_before_stays_frozen_after() -> None:
    gc.freeze()  # as a long-lived stream does at start-up
    try:
        with frozen_heap():
            pass
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_keep_frozen_freezes_only_inside_a_frozen_block_and_the_blocks_cycles_are_collected_at_its_end() -> None:
    gc.unfreeze()
    keep_frozen()
    assert gc.get_freeze_count() == 0
    with frozen_heap():
        before = gc.get_freeze_count()
        kept = [_Node() for _ in range(100)]
        keep_frozen()
        assert gc.get_freeze_count() > before
        collectable = {id(o) for o in gc.get_objects()}  # the frozen heap is not in the collector's generations
        assert not any(id(k) in collectable for k in kept)  # (a count would move with whatever else dies meanwhile)
        node = _Node()
        node.self = node  # a reference cycle: only the collector frees it
        dead = weakref.ref(node)
        del node
    assert dead() is None and gc.get_freeze_count() == 0
    assert len(kept) == 100


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


def test_volatility_trip_on_a_window_equals_the_full_mask() -> None:
    rng = np.random.default_rng(3)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, 3_000)))
    closes[[500, 1_700, 1_701, 2_900]] *= [1.05, 0.94, 1.07, 1.03]
    stamps = np.arange(3_000, dtype="int64") * 60_000_000_000
    z = return_zscores(closes, 20)
    cooldown = pd.Timedelta(minutes=5)
    tripped = 0
    for start, end in [(-1, stamps[-1]), (stamps[400], stamps[600]), (stamps[1_700], stamps[2_000]),
                       (stamps[1_701], stamps[2_000]), (stamps[0], stamps[499]), (stamps[-1], stamps[-1] + 1)]:
        window = (stamps > start) & (stamps <= end) & (np.abs(z) > 4)
        hits = np.flatnonzero(window)
        got = volatility_trip("X/Y", stamps, closes, int(start), int(end), lookback=20, z_threshold=4,
                              cooldown=cooldown, zscores=z)
        assert got == volatility_trip("X/Y", stamps, closes, int(start), int(end), lookback=20, z_threshold=4,
                                      cooldown=cooldown)
        if len(hits):
            assert got is not None and got.at == pd.Timestamp(int(stamps[hits[-1]]), tz="UTC")
            tripped += 1
        else:
            assert got is None
    assert tripped >= 2
