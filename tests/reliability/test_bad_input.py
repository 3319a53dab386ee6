"""Property-based bad input: whatever a user feeds the loaders, the risk configuration or
the CLI, the outcome is either success or one clear line (`InputError`/exit 2) — never a
traceback — and nothing is written."""

from __future__ import annotations

import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from risk.config import parse_risk_config
from tradpal.cli import main
from tradpal.errors import InputError
from tradpal.io import load_ohlcv, load_signals

CELL = st.one_of(
    st.sampled_from(["", "buy", "sell", "BUY", "hold", "0", "-1", "1e400", "nan", "inf", "ETH/BTC", "BTC-USDT",
                     "2018-01-10T05:00:00Z", "2018-13-45", "1515560400000", "market", "limit", "stop", "x,y", '"']),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet=string.printable, max_size=12),
)
SIGNAL_HEADERS = st.lists(st.sampled_from(["timestamp", "symbol", "side", "quantity", "signal_id", "strategy",
                                           "order_type", "limit_price", "stop_price", "reference_price", "qty"]),
                          min_size=1, max_size=8, unique=True)
OHLCV_HEADERS = st.lists(st.sampled_from(["timestamp", "open", "high", "low", "close", "volume", "vwap"]),
                         min_size=1, max_size=7, unique=True)


def _csv(header: list[str], rows: list[list[str]]) -> str:
    lines = [",".join(header)] + [",".join(r[: len(header)] + [""] * (len(header) - len(r))) for r in rows]
    return "\n".join(lines) + "\n"


def _one_line_error(exc: InputError, path: Path) -> None:
    message = str(exc)
    assert message and "\n" not in message
    assert message.startswith(str(path)), message


@given(header=SIGNAL_HEADERS, rows=st.lists(st.lists(CELL, max_size=9), max_size=6))
def test_signal_files(tmp_path_factory, header, rows):
    path = tmp_path_factory.mktemp("sig") / "signals.csv"
    path.write_text(_csv(header, rows))
    try:
        frame = load_signals(path)
    except InputError as exc:
        _one_line_error(exc, path)
    else:  # what loads is valid
        assert (frame["quantity"] > 0).all() and frame["side"].str.lower().isin(["buy", "sell"]).all()
        assert frame["timestamp"].is_monotonic_increasing


@given(header=OHLCV_HEADERS, rows=st.lists(st.lists(CELL, max_size=7), max_size=6))
def test_ohlcv_files(tmp_path_factory, header, rows):
    path = tmp_path_factory.mktemp("bars") / "bars.csv"
    path.write_text(_csv(header, rows))
    try:
        bars = load_ohlcv(path)
    except InputError as exc:
        _one_line_error(exc, path)
    else:
        assert bars["timestamp"].is_monotonic_increasing and bars["timestamp"].is_unique
        assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
        assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all() and (bars["volume"] >= 0).all()


YAML_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.floats(allow_nan=True), st.integers(), st.text(max_size=8)),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.sampled_from(["portfolio", "max_drawdown", "max_daily_loss",
                                                                "max_gross_exposure", "sizing", "default", "method",
                                                                "assets", "sectors", "breakers", "alerts", "urls",
                                                                "x"]), children, max_size=4)),
    max_leaves=12,
)


@given(YAML_VALUE)
def test_risk_configuration(value):
    import yaml

    text = yaml.safe_dump(value)
    try:
        cfg = parse_risk_config(text, "risk.yaml")
    except InputError as exc:
        assert str(exc).startswith("risk.yaml") and "\n" not in str(exc)
    else:
        assert 0 < cfg.portfolio.max_drawdown <= 1


@given(flag=st.sampled_from(["--cash", "--fee-rate", "--slippage-bps", "--symbol", "--chunk-signals"]),
       value=st.one_of(st.text(max_size=10), st.floats().map(repr), st.integers().map(str)))
def test_cli_arguments(tmp_path_factory, capsys, flag, value):
    tmp = tmp_path_factory.mktemp("cli")
    args = ["replay", "--ohlcv", str(tmp / "missing.csv"), "--signals", str(tmp / "missing.csv"), "--symbol",
            "ETH/BTC", "--out", str(tmp / "out"), "--database-url", f"sqlite:///{tmp / 'l.db'}", "--quiet",
            flag, value]
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse's own one-line usage error
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.strip().count("\n") <= 2
    assert not (tmp / "l.db").exists() and not (tmp / "out").exists()


@pytest.mark.parametrize("payload", ["", "timestamp\n", "\x00\x01binary", "a,b\n1,2,3,4\n"])
def test_odd_files(tmp_path, payload):
    path = tmp_path / "odd.csv"
    path.write_text(payload)
    for loader in (load_signals, load_ohlcv):
        with pytest.raises(InputError):
            loader(path)
