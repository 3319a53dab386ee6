"""Step 7, positions: the book after each fill (hand-computed), the equity curve on the
bars, and the reconciliation against the broker."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasks.context import Book, PipelineConfig
from tasks.contracts import PositionFrame, validate
from tasks.positions import BookMismatch, apply_fills, check_against_broker, equity_segment, manage_positions
from tests.tasks.conftest import SYM, T0, bars, build_context, raw_signals, run, run_through, t

ETH = "ETH/USDT"


def reports(*rows: tuple) -> pd.DataFrame:
    """(symbol, side, qty, px, fee[, minute]) per report; qty 0 is a report without a fill."""
    return pd.DataFrame({
        "symbol": [r[0] for r in rows], "side": [r[1] for r in rows],
        "last_qty": [float(r[2]) for r in rows], "last_px": [r[3] for r in rows],
        "last_fee": [float(r[4]) for r in rows],
        "timestamp": [t(r[5]) if len(r) > 5 else T0 for r in rows],
    })


def test_apply_fills_hand_computed() -> None:
    book = Book(cash=10_000.0, quote_currency="USDT")
    out = apply_fills(reports(
        (SYM, "buy", 2, 100.0, 0.2),  # cash 10,000 - 200 - 0.2 = 9,799.8; cost 200
        (SYM, "buy", 1, 130.0, 0.13),  # cash 9,669.67; 3 held at cost 330 (average 110)
        (SYM, "sell", 1.5, 120.0, 0.18),  # realised (120 - 110) x 1.5 = 15; cash 9,849.49; cost 165
        (SYM, "sell", 0, np.nan, 0.0),  # a cancel: nothing changes
        (SYM, "sell", 1.5, 100.0, 0.15),  # realised (100 - 110) x 1.5 = -15; cash 9,999.34
    ), book)
    assert out["position_after"].tolist() == pytest.approx([2.0, 3.0, 1.5, 1.5, 0.0])
    assert out["cash_after"].tolist() == pytest.approx([9_799.8, 9_669.67, 9_849.49, 9_849.49, 9_999.34])
    assert out["realized_pnl"].tolist() == pytest.approx([0.0, 0.0, 15.0, 0.0, -15.0])
    assert book.cash == pytest.approx(9_999.34)
    assert book.positions[SYM] == pytest.approx(0.0)
    assert book.cost_basis[SYM] == pytest.approx(0.0)
    assert book.realized_pnl == pytest.approx(0.0)
    assert book.realized_by_symbol == {SYM: pytest.approx(0.0)}
    assert book.fees == pytest.approx(0.66)


def test_apply_fills_keeps_symbols_apart() -> None:
    book = Book(cash=1_000.0, quote_currency="USDT")
    apply_fills(reports((SYM, "buy", 1, 100.0, 0.0), (ETH, "buy", 10, 10.0, 0.0), (ETH, "sell", 5, 12.0, 0.0)), book)
    assert dict(book.positions) == {SYM: 1.0, ETH: 5.0}
    assert dict(book.cost_basis) == {SYM: 100.0, ETH: 50.0}
    assert book.realized_by_symbol == {SYM: 0.0, ETH: 10.0}
    assert book.cash == pytest.approx(1_000.0 - 100.0 - 100.0 + 60.0)


def test_equity_segment_marks_cash_and_position_on_each_bar() -> None:
    closes = [100.0, 110.0, 120.0, 130.0]
    ctx = build_context(market={SYM: bars([(c, c, c, c) for c in closes])})
    fills = reports((SYM, "buy", 1, 100.0, 0.5, 1), (SYM, "sell", 0.5, 120.0, 0.0, 3))
    seg = equity_segment(ctx, fills, T0.value, t(4).value, 1_000.0, {})
    assert seg["timestamp"].tolist() == [t(1), t(2), t(3), t(4)]
    # t1: cash 899.5 + 1 x 100; t2: + 1 x 110; t3: cash 959.5 + 0.5 x 120; t4: + 0.5 x 130
    assert seg["cash"].tolist() == pytest.approx([899.5, 899.5, 959.5, 959.5])
    assert seg["position_value"].tolist() == pytest.approx([100.0, 110.0, 60.0, 65.0])
    assert seg["equity"].tolist() == pytest.approx([999.5, 1_009.5, 1_019.5, 1_024.5])


def test_equity_segment_covers_only_its_window_and_starts_from_the_book_before() -> None:
    ctx = build_context(market={SYM: bars([(c, c, c, c) for c in [100.0, 110.0, 120.0, 130.0]])})
    seg = equity_segment(ctx, reports((SYM, "sell", 1, 120.0, 0.0, 3)).iloc[0:0], t(1).value, t(3).value,
                         500.0, {SYM: 2.0})
    assert seg["timestamp"].tolist() == [t(2), t(3)]
    assert seg["equity"].tolist() == pytest.approx([500.0 + 220.0, 500.0 + 240.0])


def test_equity_segment_without_bars_in_the_window_is_empty() -> None:
    ctx = build_context()
    assert equity_segment(ctx, reports(), t(10).value, t(20).value, 1.0, {}).empty


def test_manage_positions_books_the_fills_marks_and_snapshots() -> None:
    rows = [(100, 100, 100, 100), (110, 110, 110, 110), (120, 120, 120, 120)]
    ctx = build_context(market={SYM: bars(rows)}, config=PipelineConfig(order_timeout_s=None), taker_fee=0.001)
    ctx.monitor_until = t(3)
    executions = run_through(raw_signals({"quantity": 2.0}), ctx, "monitoring")
    result = run(manage_positions(executions, ctx))
    validate(result.frame, PositionFrame, step="positions")
    # bought 2 at 100 (t1) with a 0.2 fee
    assert result.frame["position_after"].tolist() == [2.0]
    assert result.frame["cash_after"].tolist() == pytest.approx([9_799.8])
    assert ctx.book.last_price == {SYM: 120.0}
    snap = result.extra["positions"].iloc[0]
    assert (snap["symbol"], snap["quantity"], snap["average_price"], snap["market_price"]) == (SYM, 2.0, 100.0, 120.0)
    assert snap["unrealized_pnl"] == pytest.approx(40.0)
    assert snap["as_of"] == t(3)
    equity = result.extra["equity"]
    assert equity["timestamp"].tolist() == [t(1), t(2), t(3)]
    assert equity["equity"].tolist() == pytest.approx([9_999.8, 10_019.8, 10_039.8])

    again = run(manage_positions(executions.iloc[0:0], ctx))  # the next batch: nothing new, no bars left
    assert again.extra["equity"].empty


def test_a_book_that_disagrees_with_the_brokers_cash_stops_the_run() -> None:
    ctx = build_context(cash=10_000.0)
    ctx.book.cash = 9_000.0
    with pytest.raises(BookMismatch, match=r"cash: book 9000.0 != broker 10000.0 USDT"):
        run(check_against_broker(ctx))


def test_a_book_that_disagrees_with_the_brokers_position_stops_the_run() -> None:
    ctx = build_context()
    ctx.book.positions[SYM] = 1.0
    with pytest.raises(BookMismatch, match=r"position BTC/USDT: book 1.0 != broker 0.0"):
        run(check_against_broker(ctx))


def test_a_lost_fill_is_caught_by_manage_positions() -> None:
    ctx = build_context(market={SYM: bars([(100, 100, 100, 100)] * 2)}, config=PipelineConfig(order_timeout_s=None))
    ctx.monitor_until = t(2)
    executions = run_through(raw_signals({}, {}), ctx, "monitoring")
    assert len(executions) == 2
    with pytest.raises(BookMismatch, match="cash"):
        run(manage_positions(executions.iloc[:1], ctx))  # one of the two fills never booked


def test_float_noise_is_not_a_mismatch() -> None:
    ctx = build_context(cash=10_000.0)
    ctx.book.cash = 10_000.0 * (1 + 1e-12)
    run(check_against_broker(ctx))


def test_flatten_is_queued_once_and_only_when_configured() -> None:
    from risk.breakers import Trip
    from risk.config import parse_risk_config
    from tasks.positions import flatten_on_loss_limit

    base = "portfolio: {max_drawdown: 1, max_daily_loss: 1, max_gross_exposure: 10}\nbreakers: {loss_limit: "
    trip = Trip("loss_limit", "portfolio", "equity down 12%", 0.12, 0.1, t(3) + pd.Timedelta(1, "ns"), None)
    ctx = build_context(config=PipelineConfig(risk=parse_risk_config(base + "{threshold: 0.1}}")))
    ctx.book.positions.update({SYM: 2.0, ETH: 0.0})
    assert flatten_on_loss_limit(ctx, [trip]) == [] and ctx.pending_signals == []
    ctx.config = PipelineConfig(risk=parse_risk_config(base + "{threshold: 0.1, flatten: true}}"))
    [sig] = flatten_on_loss_limit(ctx, [trip])
    assert (sig["symbol"], sig["side"], sig["quantity"], sig["order_type"]) == (SYM, "sell", 2.0, "market")
    assert sig["signal_id"] == "flatten:BTC/USDT:20240101T000300.000000Z" and sig["timestamp"] == t(3)
    assert ctx.pending_signals == [sig]
    ctx.pending_signals.clear()
    assert flatten_on_loss_limit(ctx, [trip]) == []  # the same trip never queues it twice
