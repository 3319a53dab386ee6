"""Input files: every problem is one line naming the file, the row and the column."""

from __future__ import annotations

import pandas as pd
import pytest

from tradpal.errors import InputError
from tradpal.io import check_signal_rows, load_ohlcv, load_signals

GOOD_BARS = """timestamp,open,high,low,close,volume
2024-01-01T00:00:00Z,100,101,99,100.5,10
2024-01-01T00:01:00Z,100.5,102,100,101,12
2024-01-01T00:02:00Z,101,101.5,100.5,101.2,0
"""


def write(tmp_path, name: str, text: str):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_loads_iso_and_epoch_ms(tmp_path):
    bars = load_ohlcv(write(tmp_path, "b.csv", GOOD_BARS))
    assert str(bars["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert bars["close"].tolist() == [100.5, 101, 101.2]
    epoch = GOOD_BARS.replace("2024-01-01T00:00:00Z", "1704067200000").replace(
        "2024-01-01T00:01:00Z", "1704067260000").replace("2024-01-01T00:02:00Z", "1704067320000")
    bars2 = load_ohlcv(write(tmp_path, "e.csv", epoch))
    assert (bars2["timestamp"] == bars["timestamp"]).all()


def test_loads_parquet(tmp_path):
    bars = load_ohlcv(write(tmp_path, "b.csv", GOOD_BARS))
    bars.to_parquet(tmp_path / "b.parquet")
    assert load_ohlcv(tmp_path / "b.parquet").equals(bars)


@pytest.mark.parametrize("text, expected", [
    (GOOD_BARS.replace("volume", "vol"), "missing column 'volume'"),
    (GOOD_BARS.replace("2024-01-01T00:01:00Z", "yesterday"), "row 2, column 'timestamp': cannot parse timestamp 'yesterday'"),
    (GOOD_BARS.replace("2024-01-01T00:02:00Z", "2024-01-01T00:01:00Z"), "row 3, column 'timestamp': duplicate timestamp"),
    (GOOD_BARS.replace("2024-01-01T00:02:00Z", "2023-12-31T00:00:00Z"), "row 3, column 'timestamp': unsorted timestamp"),
    (GOOD_BARS.replace("100.5,102,100,101,12", "100.5,100,100,101,12"), "row 2, column 'high': high is below max(open, close)"),
    (GOOD_BARS.replace("101,101.5,100.5,101.2,0", "101,101.5,100.5,101.2,-1"), "row 3, column 'volume': volume must be >= 0"),
    (GOOD_BARS.replace("100,101,99,100.5,10", "100,abc,99,100.5,10"), "row 1, column 'high': not a number: 'abc'"),
])
def test_bad_ohlcv_names_file_row_column(tmp_path, text, expected):
    path = write(tmp_path, "bars.csv", text)
    with pytest.raises(InputError) as err:
        load_ohlcv(path)
    message = str(err.value)
    assert str(path) in message and expected in message
    assert "\n" not in message


GOOD_SIGNALS = """timestamp,symbol,side,quantity,signal_id
2024-01-01T00:00:30Z,BTC/USDT,buy,0.5,a
2024-01-01T00:00:30Z,BTC/USDT,sell,0.5,b
2024-01-01T00:01:30Z,BTC/USDT,BUY,1,c
"""


def test_loads_signals(tmp_path):
    sig = load_signals(write(tmp_path, "s.csv", GOOD_SIGNALS))
    assert sig["signal_id"].tolist() == ["a", "b", "c"]
    assert sig["quantity"].tolist() == [0.5, 0.5, 1.0]


@pytest.mark.parametrize("text, expected", [
    (GOOD_SIGNALS.replace("side", "direction"), "missing column 'side'"),
    (GOOD_SIGNALS.replace(",signal_id", ",signal_id,colour").replace(",a\n", ",a,red\n"), "unknown column 'colour'"),
    (GOOD_SIGNALS.replace("buy,0.5", "buy,-0.5"), "row 1, column 'quantity': quantity must be a number > 0"),
    (GOOD_SIGNALS.replace("sell,0.5", "hold,0.5"), "row 2, column 'side': unknown side 'hold'"),
    (GOOD_SIGNALS.replace("2024-01-01T00:01:30Z", "2024-01-01T00:00:00Z"), "row 3, column 'timestamp': unsorted timestamp"),
    (GOOD_SIGNALS.replace(",c\n", ",a\n"), "row 3, column 'signal_id': duplicate signal_id 'a'"),
    (GOOD_SIGNALS.replace("2024-01-01T00:01:30Z", "soon"), "row 3, column 'timestamp': cannot parse"),
    (GOOD_SIGNALS.replace("buy,0.5", "buy,lots"), "row 1, column 'quantity': not a number: 'lots'"),
])
def test_bad_signals_name_file_row_column(tmp_path, text, expected):
    path = write(tmp_path, "signals.csv", text)
    with pytest.raises(InputError) as err:
        load_signals(path)
    assert str(path) in str(err.value) and expected in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_ohlcv(tmp_path / "nope.csv")


def test_check_signal_rows_lists_every_problem_in_row_order():
    df = pd.DataFrame({"timestamp": ["t"] * 3, "symbol": ["BTC/USDT", "bad", "ETH/BTC"], "side": ["buy", "x", "sell"],
                       "quantity": [1.0, 0.0, 2.0], "order_type": ["market", "market", "limit"],
                       "limit_price": [None, None, None]})
    problems = check_signal_rows(df)
    assert [(r, c) for r, c, _ in problems] == [(1, "side"), (1, "quantity"), (1, "symbol"), (2, "limit_price")]
