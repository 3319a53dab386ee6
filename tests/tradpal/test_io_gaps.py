"""Gaps in OHLCV bars are reported at load (counted, the largest located), not refused."""

from __future__ import annotations

import pandas as pd

from tests.conftest import make_bars
from tradpal.io import gap_note, ohlcv_gaps


def bars_at(minutes: list[int]) -> pd.DataFrame:
    bars = make_bars([(100, 101, 99, 100)] * len(minutes))
    bars["timestamp"] = pd.Timestamp("2024-01-01T00:00:00Z") + pd.to_timedelta(minutes, unit="min")
    return bars


def test_regular_bars_have_no_gap():
    assert ohlcv_gaps(bars_at([0, 5, 10, 15, 20])) is None


def test_gaps_are_counted_and_the_largest_located():
    gaps = ohlcv_gaps(bars_at([0, 5, 10, 25, 30, 35, 70, 75]))
    assert gaps["gaps"] == 2 and gaps["missing_bars"] == 2 + 6
    assert gaps["bar"] == pd.Timedelta(minutes=5) and gaps["largest"] == pd.Timedelta(minutes=35)
    assert gaps["largest_row"] == 6
    note = gap_note("bars.csv", gaps)
    assert note == ("note: bars.csv: 2 gap(s) in the bars (8 missing 5m bars); the largest is 35m, before row 6 "
                    "(2024-01-01 01:10 UTC)")


def test_spans_read_like_people_write_them():
    from tradpal.io import span

    assert [span(pd.Timedelta(x)) for x in ("5min", "65min", "2 days 3 hours", "30s", "90s", "1 day")] == [
        "5m", "1h 05m", "2d 3h", "30s", "1m 30s", "1d"]
