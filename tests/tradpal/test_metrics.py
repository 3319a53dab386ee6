"""tradpal.metrics: every figure against a small hand-computed case (arithmetic in the comments),
plus the edge cases (flat curve, single day, no fills, all losses, a drawdown never recovered,
VaR falling exactly on a sample) and cross-checks against the pipeline's own book."""

from __future__ import annotations

import asyncio
import json
import math

import numpy as np
import pandas as pd
import pytest

from tradpal.metrics import (
    annualized_return,
    book_fills,
    calmar_ratio,
    compute_metrics,
    conditional_value_at_risk,
    daily_returns,
    exposure,
    max_drawdown,
    max_drawdown_days,
    metrics_from_replay,
    prepare_fills,
    round_trips,
    sharpe_ratio,
    sortino_ratio,
    value_at_risk,
    write_metrics,
)

SQRT365 = math.sqrt(365)
T0 = pd.Timestamp("2024-01-01", tz="UTC")  # a Monday


# -- builders ----------------------------------------------------------------------------

def curve(values, *, step="1D", start=T0, position_value=None) -> pd.DataFrame:
    ts = pd.date_range(start, periods=len(values), freq=step)
    pv = np.zeros(len(values)) if position_value is None else np.asarray(position_value, float)
    e = np.asarray(values, float)
    return pd.DataFrame({"timestamp": ts, "cash": e - pv, "position_value": pv, "equity": e})


def curve_at(times, values) -> pd.DataFrame:
    ts = pd.to_datetime(times, utc=True)
    return pd.DataFrame({"timestamp": ts, "equity": np.asarray(values, float)})


def fills_frame(rows, *, strategy="s1", symbol="X/USD", start=T0) -> pd.DataFrame:
    """rows: (side, quantity, price, fee); one fill per minute."""
    side, qty, px, fee = zip(*rows, strict=True)
    return pd.DataFrame({"timestamp": pd.date_range(start, periods=len(rows), freq="1min"), "side": side,
                         "quantity": qty, "price": px, "fee": fee, "strategy": strategy, "symbol": symbol})


def booked(frame: pd.DataFrame) -> pd.DataFrame:
    return book_fills(prepare_fills(frame, None, None))


# -- daily returns ---------------------------------------------------------------------------

def test_daily_returns_sample_each_utc_day_end_and_skip_missing_days():
    eq = curve_at(["2024-01-01T00:00Z", "2024-01-01T12:00Z", "2024-01-02T18:00Z", "2024-01-04T23:59Z"],
                  [100.0, 110.0, 99.0, 108.9])
    # day ends: 110 (Jan 1; the first row 100 is not a sample), 99 (Jan 2), 108.9 (Jan 4; Jan 3 has no row)
    # r = 99/110 - 1 = -0.1, 108.9/99 - 1 = 0.1
    r = daily_returns(eq["timestamp"], eq["equity"])
    np.testing.assert_allclose(r, [-0.1, 0.1], atol=1e-12)


def test_daily_returns_of_a_single_day_are_empty():
    eq = curve([100.0, 101.0, 99.0], step="1h")
    assert len(daily_returns(eq["timestamp"], eq["equity"])) == 0


# -- Sharpe, Sortino -----------------------------------------------------------------------

R4 = np.array([0.01, -0.01, 0.02, 0.0])


def test_sharpe():
    # mean = 0.02/4 = 0.005; deviations .005, -.015, .015, -.005 -> squares sum 5e-4; var = 5e-4/3
    # sharpe = 0.005 / sqrt(5e-4/3) * sqrt(365) = 0.3872983 * 19.1049732 = 7.3993
    assert sharpe_ratio(R4) == pytest.approx(0.005 / math.sqrt(5e-4 / 3) * SQRT365)
    assert sharpe_ratio(R4) == pytest.approx(7.39932, abs=1e-5)


def test_sharpe_with_risk_free():
    # rf = 3.65%/365 = 0.0001 per day: mean excess = 0.0049, std unchanged
    assert sharpe_ratio(R4, risk_free=0.0365) == pytest.approx(0.0049 / math.sqrt(5e-4 / 3) * SQRT365)


def test_sortino():
    # min(r, 0)^2 = 0, 1e-4, 0, 0 -> mean 2.5e-5 -> downside deviation 0.005
    # sortino = 0.005 * 365 / (0.005 * sqrt(365)) = sqrt(365) = 19.1049732
    assert sortino_ratio(R4) == pytest.approx(SQRT365)


def test_ratios_undefined_with_fewer_than_two_returns_or_no_dispersion():
    assert sharpe_ratio(np.array([0.01])) is None
    assert sortino_ratio(np.array([0.01])) is None
    assert sharpe_ratio(np.array([0.01, 0.01, 0.01])) is None  # zero std
    assert sortino_ratio(np.array([0.01, 0.02])) is None  # no downside


def test_all_losses():
    r = np.array([-0.01, -0.02, -0.03])
    # mean -0.02, std(ddof=1) 0.01 -> sharpe = -2 * sqrt(365)
    assert sharpe_ratio(r) == pytest.approx(-2 * SQRT365)
    # downside = sqrt((1e-4 + 4e-4 + 9e-4)/3) = sqrt(4.6667e-4) = 0.0216025
    assert sortino_ratio(r) == pytest.approx(-0.02 * 365 / (math.sqrt(14e-4 / 3) * SQRT365))


# -- VaR, CVaR -------------------------------------------------------------------------------

R5 = np.array([0.03, -0.05, 0.0, 0.01, -0.02])  # sorted: -0.05, -0.02, 0, 0.01, 0.03


def test_var_linear_interpolation():
    # q(0.05): h = (5-1)*0.05 = 0.2 -> -0.05 + 0.2*(-0.02 + 0.05) = -0.044 -> VaR95 = 0.044
    assert value_at_risk(R5, 0.95) == pytest.approx(0.044)
    # q(0.01): h = 0.04 -> -0.05 + 0.04*0.03 = -0.0488
    assert value_at_risk(R5, 0.99) == pytest.approx(0.0488)
    # q(0.4): h = 1.6 -> -0.02 + 0.6*0.02 = -0.008
    assert value_at_risk(R5, 0.6) == pytest.approx(0.008)


def test_cvar():
    # r <= -0.044: only -0.05
    assert conditional_value_at_risk(R5, 0.95) == pytest.approx(0.05)
    # r <= -0.008: -0.05, -0.02 -> mean -0.035
    assert conditional_value_at_risk(R5, 0.6) == pytest.approx(0.035)


def test_var_falling_exactly_on_a_sample_includes_it_in_cvar():
    # q(0.25): h = 4*0.25 = 1.0 exactly -> -0.02; CVaR takes r <= -0.02: -0.05, -0.02 -> 0.035
    assert value_at_risk(R5, 0.75) == pytest.approx(0.02)
    assert conditional_value_at_risk(R5, 0.75) == pytest.approx(0.035)
    assert value_at_risk(np.array([0.01]), 0.95) is None


# -- drawdown, annualised return, Calmar ------------------------------------------------------

def test_max_drawdown_and_duration():
    eq = curve([100, 120, 90, 110, 130, 117])  # one row a day
    # peaks 100 120 120 120 130 130 -> drawdowns 0 0 .25 .0833 0 .1 -> 0.25
    assert max_drawdown(eq["equity"]) == pytest.approx(0.25)
    # peak 120 on day 1, regained (130) on day 4: 3 days; peak 130 on day 4, never regained by day 5: 1 day
    assert max_drawdown_days(eq["timestamp"], eq["equity"]) == pytest.approx(3.0)


def test_drawdown_never_recovered_runs_to_the_end():
    eq = curve_at(["2024-01-01T00:00Z", "2024-01-01T12:00Z", "2024-01-02T00:00Z", "2024-01-10T06:00Z"],
                  [100, 120, 90, 95])
    # peak 120 at Jan 1 12:00, never regained: until Jan 10 06:00 = 8.75 days; drawdown 1 - 90/120 = 0.25
    assert max_drawdown(eq["equity"]) == pytest.approx(0.25)
    assert max_drawdown_days(eq["timestamp"], eq["equity"]) == pytest.approx(8.75)


def test_regaining_the_peak_exactly_ends_the_drawdown():
    eq = curve([100, 90, 100, 100, 95])
    # peak 100 on day 0, back to 100 on day 2: 2 days; the later dip from the peak of day 3 lasts 1 day to the end
    assert max_drawdown_days(eq["timestamp"], eq["equity"]) == pytest.approx(2.0)


def test_annualized_return_and_calmar():
    eq = curve([100, 80, 121], step="365D")
    # 730 days: (121/100)^(365/730) - 1 = 1.1 - 1 = 0.1; drawdown 1 - 80/100 = 0.2; Calmar = 0.1/0.2 = 0.5
    ann = annualized_return(eq["timestamp"], eq["equity"])
    assert ann == pytest.approx(0.1)
    assert calmar_ratio(ann, max_drawdown(eq["equity"])) == pytest.approx(0.5)
    m = compute_metrics(eq, None)
    assert m["annualized_return"] == pytest.approx(0.1)
    assert m["calmar"] == pytest.approx(0.5)
    assert m["max_drawdown_days"] == pytest.approx(730.0)


def test_flat_curve():
    m = compute_metrics(curve([100.0] * 5), None)
    assert m["n_returns"] == 4
    assert m["sharpe"] is None and m["sortino"] is None and m["calmar"] is None
    assert m["max_drawdown"] == 0.0 and m["max_drawdown_days"] == 0.0
    assert m["annualized_return"] == 0.0
    assert m["var_95"] == 0.0 and m["cvar_95"] == 0.0


def test_single_day_curve():
    m = compute_metrics(curve([100.0, 102.0, 101.0], step="6h"), None)
    # no day-to-day return: the return statistics are undefined; drawdown 1 - 101/102
    assert m["n_returns"] == 0
    assert all(m[k] is None for k in ("sharpe", "sortino", "var_95", "cvar_95", "var_99", "cvar_99"))
    assert m["max_drawdown"] == pytest.approx(1 - 101 / 102)
    # 12 hours, 1% up: 1.01^(365*2) - 1
    assert m["annualized_return"] == pytest.approx(1.01 ** 730 - 1)


def test_single_row_and_missing_curve():
    m = compute_metrics(curve([100.0]), None)
    assert m["annualized_return"] is None and m["max_drawdown"] == 0.0
    m = compute_metrics(None, None)
    assert m["max_drawdown"] is None and m["exposure_mean"] is None and m["pnl_by_day"] == []


# -- exposure -------------------------------------------------------------------------------

def test_exposure():
    eq = curve([100, 100, 120, 0], position_value=[0, 50, 30, 10])
    # ratios 0, 0.5, 0.25 (the row at zero equity is left out) -> mean 0.25, max 0.5
    assert exposure(eq) == (pytest.approx(0.25), pytest.approx(0.5))
    assert exposure(eq.drop(columns="position_value")) == (None, None)


# -- average cost, round trips ------------------------------------------------------------------

TRADES = [  # (side, quantity, price, fee)
    ("buy", 1, 100, 1), ("buy", 3, 120, 1),  # avg (100 + 360)/4 = 115
    ("sell", 2, 130, 1),                      # realise 2*(130-115) = +30; avg stays 115
    ("buy", 2, 105, 1),                       # avg (2*115 + 2*105)/4 = 110
    ("sell", 4, 100, 1),                      # realise 4*(100-110) = -40; flat -> trip 1: -10 - 5 fees = -15
    ("buy", 1, 100, 0.5), ("sell", 1, 102, 0.5),  # trip 2: +2 - 1 = +1
    ("buy", 2, 50, 0.0),                      # trip 3, still open
]


def test_average_cost_realised_pnl():
    b = booked(fills_frame(TRADES))
    np.testing.assert_allclose(b["realized_pnl"], [0, 0, 30, 0, -40, 0, 2, 0])
    np.testing.assert_allclose(b["position_after"], [1, 4, 2, 4, 0, 1, 0, 2])
    assert b["avg_cost_after"].iloc[1] == pytest.approx(115)
    assert b["avg_cost_after"].iloc[3] == pytest.approx(110)


def test_round_trips_and_success_rate():
    trips = round_trips(booked(fills_frame(TRADES)))
    assert trips["complete"].tolist() == [True, True, False]
    np.testing.assert_allclose(trips["net_pnl"], [-15, 1, 0])
    m = compute_metrics(None, fills_frame(TRADES))
    assert m["n_round_trips"] == 2 and m["n_profitable_round_trips"] == 1
    assert m["success_rate"] == pytest.approx(0.5)


def test_unrealised_pnl_marks():
    frame = fills_frame(TRADES)
    # open: 2 @ avg 50; marked at the last fill price 50 -> 0; at 60 -> 2*10 = 20
    assert compute_metrics(None, frame)["unrealized_pnl"] == pytest.approx(0.0)
    assert compute_metrics(None, frame, marks={"X/USD": 60.0})["unrealized_pnl"] == pytest.approx(20.0)
    bars = pd.DataFrame({"timestamp": [T0], "high": [70.0], "low": [60.0], "close": [65.0]})
    assert compute_metrics(None, frame, bars=bars)["unrealized_pnl"] == pytest.approx(30.0)  # 2*(65-50)
    m = compute_metrics(None, frame, marks={"X/USD": 60.0})
    # realised 30 - 40 + 2 = -8, fees 5*1 + 2*0.5 = 6 -> net = -8 + 20 - 6 = 6
    assert m["realized_pnl"] == pytest.approx(-8.0) and m["total_fees"] == pytest.approx(6.0)
    assert m["net_pnl"] == pytest.approx(6.0)


def test_short_and_crossing_zero():
    b = booked(fills_frame([("sell", 2, 100, 1), ("buy", 3, 90, 3), ("sell", 1, 95, 1)]))
    # short 2 @ 100; buy 3 @ 90 closes 2: (90-100)*2*(-1) = +20 and opens long 1 @ 90; sell 1 @ 95: +5
    np.testing.assert_allclose(b["realized_pnl"], [0, 20, 5])
    np.testing.assert_allclose(b["position_after"], [-2, 1, 0])
    trips = round_trips(b)
    # the crossing fee 3 splits 2/3 -> trip 1 (2), 1/3 -> trip 2 (1): trip 1 = 20 - 1 - 2 = 17, trip 2 = 5 - 1 - 1 = 3
    np.testing.assert_allclose(trips["fees"], [3, 2])
    np.testing.assert_allclose(trips["net_pnl"], [17, 3])
    assert trips["complete"].all()


def test_all_losing_round_trips():
    m = compute_metrics(None, fills_frame([("buy", 1, 100, 0), ("sell", 1, 90, 0)] * 3))
    assert m["n_round_trips"] == 3 and m["success_rate"] == 0.0 and m["realized_pnl"] == pytest.approx(-30)


def test_break_even_round_trip_with_fees_is_not_a_success():
    m = compute_metrics(None, fills_frame([("buy", 1, 100, 0.125), ("sell", 1, 100.25, 0.125)]))
    assert m["success_rate"] == 0.0  # +0.25 realised - 0.25 fees = 0 (exact in binary), not > 0


def test_books_are_per_strategy_and_symbol():
    a = fills_frame([("buy", 1, 100, 0), ("sell", 1, 110, 0)], strategy="a")
    b = fills_frame([("buy", 2, 100, 0), ("sell", 1, 90, 0)], strategy="b", start=T0 + pd.Timedelta("30s"))
    m = compute_metrics(None, pd.concat([a, b], ignore_index=True))
    by = {r["strategy"]: r for r in m["pnl_by_strategy"]}
    assert by["a"]["realized_pnl"] == pytest.approx(10) and by["b"]["realized_pnl"] == pytest.approx(-10)
    # b holds 1 @ 100, marked at the symbol's last fill price 90 -> -10
    assert by["b"]["unrealized_pnl"] == pytest.approx(-10) and by["a"]["unrealized_pnl"] == 0.0
    assert by["a"]["n_round_trips"] == 1 and by["b"]["n_round_trips"] == 0
    (asset,) = m["pnl_by_asset"]
    assert asset["position"] == pytest.approx(1) and asset["net_pnl"] == pytest.approx(-10)


def test_average_cost_agrees_with_a_simple_loop_including_shorts():
    rng = np.random.default_rng(5)
    n = 3000
    frame = pd.DataFrame({
        "timestamp": T0 + pd.to_timedelta(np.sort(rng.integers(0, 10**6, n)), unit="s"),
        "side": rng.choice(["buy", "sell"], n), "quantity": rng.choice([0.1, 0.2, 0.3, 0.5, 1.0], n),
        "price": rng.uniform(90, 110, n), "fee": 0.0,
        "strategy": rng.choice(["a", "b"], n), "symbol": rng.choice(["X", "Y"], n)})
    expected = {}
    for key, g in frame.groupby(["strategy", "symbol"]):
        held = avg = realised = 0.0
        for side, q, p in zip(g["side"], g["quantity"], g["price"], strict=True):
            s = 1.0 if side == "buy" else -1.0
            if abs(held) < 1e-9 or np.sign(held) == s:  # open or increase
                avg = (avg * abs(held) + p * q) / (abs(held) + q)
                held += s * q
            else:
                closed = min(q, abs(held))
                realised += (p - avg) * closed * np.sign(held)
                held += s * q
                if abs(held) > 1e-9 and np.sign(held) == s:  # crossed: the rest opens at p
                    avg = p
        expected[key] = realised
    got = booked(frame).groupby(["strategy", "symbol"], observed=True)["realized_pnl"].sum()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-9)


def test_realised_pnl_agrees_with_the_pipeline_book():
    from tasks.context import Book
    from tasks.positions import apply_fills

    rng = np.random.default_rng(9)
    lots = np.abs(np.cumsum(rng.choice([-1, 1], 500)))  # long or flat, as spot
    side = np.where(np.diff(np.concatenate([[0], lots])) > 0, "buy", "sell")
    price = rng.uniform(10, 20, 500)
    qty = np.full(500, 0.3)
    reports = pd.DataFrame({"symbol": "X", "side": side, "last_qty": qty, "last_px": price, "last_fee": 0.01})
    book = Book(cash=1e6, quote_currency="USD")
    apply_fills(reports, book)
    m = compute_metrics(None, fills_frame(list(zip(side, qty, price, [0.01] * 500, strict=True)), symbol="X"),
                        marks={"X": 15.0})
    assert m["realized_pnl"] == pytest.approx(book.realized_pnl, rel=1e-9)
    held = book.positions["X"]
    assert m["unrealized_pnl"] == pytest.approx(held * 15.0 - book.cost_basis["X"], rel=1e-9, abs=1e-9)


# -- execution: fill rate, slippage, latency, rejections ----------------------------------------

def ts(hhmm: str) -> pd.Timestamp:
    return pd.Timestamp(f"2024-01-01T{hhmm}Z")


def execution_case():
    signals = pd.DataFrame({"id": [1, 2, 3], "signal_id": ["s1", "s2", "s3"],
                            "timestamp": [ts("10:00"), ts("10:05"), ts("10:10")], "symbol": "X/USD",
                            "side": ["buy", "sell", "buy"], "strategy": "sma", "reference_price": [99.0, 102.0, 99.0]})
    orders = pd.DataFrame({"id": [11, 12, 13], "signal_pk": [1, 2, 3], "symbol": "X/USD",
                           "side": ["buy", "sell", "buy"], "quantity": [1.0, 2.0, 1.0],
                           "status": ["FILLED", "CANCELED", "REJECTED"], "filled_quantity": [1.0, 1.0, 0.0],
                           "created_at": [ts("10:00"), ts("10:05"), ts("10:10")],
                           "placed_at": [ts("10:01"), ts("10:06"), pd.NaT],
                           "updated_at": [ts("10:05"), ts("10:20"), ts("10:10")]})
    fills = pd.DataFrame({"id": [1, 2], "order_pk": [11, 12], "timestamp": [ts("10:05"), ts("10:10")],
                          "symbol": "X/USD", "side": ["buy", "sell"], "quantity": [1.0, 1.0],
                          "price": [102.0, 99.0], "fee": [0.1, 0.1]})
    bars = pd.DataFrame({"timestamp": [ts("10:00"), ts("10:05"), ts("10:10")], "open": [100.0, 101.0, 101.0],
                         "high": [101.0, 103.0, 102.0], "low": [99.0, 100.0, 98.0], "close": [100.0, 102.0, 99.0]})
    rejections = pd.DataFrame({"step": ["pre_checks", "pre_checks", "intake"],
                               "reason": ["min notional", "min notional", "malformed"]})
    return signals, orders, fills, bars, rejections


def run_execution_case(**overrides):
    signals, orders, fills, bars, rejections = execution_case()
    kwargs = dict(orders=orders, signals=signals, rejections=rejections, bars=bars)
    kwargs.update(overrides)
    return compute_metrics(None, fills, **kwargs)


def test_fill_rates():
    m = run_execution_case()
    # filled 1 + 1 + 0 = 2 of 1 + 2 + 1 = 4 ordered; completely filled: 1 of 3 orders
    assert m["fill_rate"] == pytest.approx(0.5) and m["fill_rate_orders"] == pytest.approx(1 / 3)
    signals, orders, fills, bars, _ = execution_case()
    m = compute_metrics(None, fills, orders=orders.drop(columns="filled_quantity"), signals=signals)
    assert m["fill_rate"] == pytest.approx(0.5)  # from the fills matched to each order


def test_slippage_against_reference_arrival_and_vwap():
    m = run_execution_case()
    # reference: buy 102 vs 99 -> (102/99 - 1)e4 = 303.03; sell 99 vs 102 -> -(99/102 - 1)e4 = 294.12
    ref = [(102 / 99 - 1) * 1e4, -(99 / 102 - 1) * 1e4]
    # arrival: close of the bar at/before placement: 10:01 -> bar 10:00 close 100; 10:06 -> bar 10:05 close 102
    arrival = [(102 / 100 - 1) * 1e4, -(99 / 102 - 1) * 1e4]
    # vwap proxy: typical price of the fill's bar: 10:05 (103+100+102)/3 = 101.667; 10:10 (102+98+99)/3 = 99.667
    vwap = [(102 / (305 / 3) - 1) * 1e4, -(99 / (299 / 3) - 1) * 1e4]
    assert m["slippage_ref_bps_mean"] == pytest.approx(np.mean(ref))
    assert m["slippage_ref_bps_median"] == pytest.approx(np.mean(ref))  # median of two = their mean
    # p95 of two values: lo + 0.95*(hi - lo)
    assert m["slippage_ref_bps_p95"] == pytest.approx(min(ref) + 0.95 * (max(ref) - min(ref)))
    assert m["slippage_arrival_bps_mean"] == pytest.approx(np.mean(arrival))
    assert m["slippage_vwap_bps_mean"] == pytest.approx(np.mean(vwap))
    assert m["slippage_vwap_bps_mean"] == pytest.approx(49.84, abs=0.01)


def test_slippage_sign_buy_below_and_sell_above_are_gains():
    f = fills_frame([("buy", 1, 99, 0), ("sell", 1, 101, 0), ("buy", 1, 100.5, 0)]).assign(
        reference_price=100.0)
    m = compute_metrics(None, f)
    # -100, -100, +50 bps -> mean -50, median -100, p95: sorted -100 -100 50, h = 1.9 -> -100 + 0.9*150 = 35
    assert m["slippage_ref_bps_mean"] == pytest.approx(-50)
    assert m["slippage_ref_bps_median"] == pytest.approx(-100)
    assert m["slippage_ref_bps_p95"] == pytest.approx(35)
    assert m["slippage_arrival_bps_mean"] == pytest.approx(-50)  # no bars: arrival = reference
    assert m["slippage_vwap_bps_mean"] is None


def test_latencies():
    m = run_execution_case()
    # signal -> placement: 60 s, 60 s (order 3 was never placed)
    assert m["latency_signal_to_placement_s_p50"] == 60 and m["latency_signal_to_placement_s_max"] == 60
    # placement -> first fill: 10:01 -> 10:05 = 240 s; 10:06 -> 10:10 = 240 s
    assert m["latency_placement_to_first_fill_s_p99"] == 240
    # signal -> done: FILLED at its last fill 300 s; CANCELED at updated_at 10:20: 900 s; REJECTED 0 s
    # sorted 0 300 900: p50 300, p95 h = 1.9 -> 300 + 0.9*600 = 840, p99 -> 300 + 0.98*600 = 888
    assert m["latency_signal_to_done_s_p50"] == pytest.approx(300)
    assert m["latency_signal_to_done_s_p95"] == pytest.approx(840)
    assert m["latency_signal_to_done_s_p99"] == pytest.approx(888)
    assert m["latency_signal_to_done_s_max"] == pytest.approx(900)


def test_rejection_counts():
    m = run_execution_case()
    assert m["rejections_by_step"] == {"pre_checks": 2, "intake": 1}
    assert m["rejections_by_reason"] == {"min notional": 2, "malformed": 1}
    assert m["n_rejections"] == 3


def test_strategy_comes_from_the_signal():
    m = run_execution_case()
    assert [r["strategy"] for r in m["pnl_by_strategy"]] == ["sma"]
    # buy 1 @ 102 then sell 1 @ 99: realised -3, fees 0.2: one losing round trip
    assert m["realized_pnl"] == pytest.approx(-3) and m["success_rate"] == 0.0


def test_missing_inputs_give_none():
    _, _, fills, _, _ = execution_case()
    m = compute_metrics(None, fills)
    for key in ("fill_rate", "fill_rate_orders", "slippage_ref_bps_mean", "slippage_arrival_bps_mean",
                "slippage_vwap_bps_mean", "latency_signal_to_placement_s_p50", "latency_signal_to_done_s_max",
                "rejections_by_step", "rejections_by_reason", "sharpe", "exposure_mean"):
        assert m[key] is None, key
    assert m["n_fills"] == 2


def test_no_fills():
    signals, orders, _, bars, rejections = execution_case()
    empty = pd.DataFrame(columns=["timestamp", "side", "quantity", "price", "fee"])
    for fills in (None, empty):
        m = compute_metrics(curve([100.0, 100.0]), fills, orders=orders.assign(filled_quantity=0.0),
                            signals=signals, rejections=rejections, bars=bars)
        assert m["n_fills"] == 0 and m["realized_pnl"] == 0.0 and m["unrealized_pnl"] == 0.0
        assert m["total_fees"] == 0.0 and m["success_rate"] is None and m["n_round_trips"] == 0
        assert m["fill_rate"] == 0.0 and m["slippage_ref_bps_mean"] is None
        assert m["latency_placement_to_first_fill_s_p50"] is None
        assert m["pnl_by_strategy"] == [] and m["pnl_by_asset"] == []
        json.dumps(m, allow_nan=False)


# -- attribution by period ------------------------------------------------------------------------

def test_pnl_by_period():
    eq = curve_at(["2024-01-06T00:00Z", "2024-01-06T23:00Z", "2024-01-07T12:00Z", "2024-01-08T12:00Z",
                   "2024-02-01T00:00Z"], [100, 104, 102, 105, 110])
    fills = pd.concat([
        fills_frame([("buy", 1, 10, 0.1), ("sell", 1, 12, 0.1)], strategy="a", start=ts("00:00") + pd.Timedelta("6D")),
        fills_frame([("buy", 1, 10, 0.0), ("sell", 1, 9, 0.0)], strategy="b", start=ts("00:00") + pd.Timedelta("7D")),
    ], ignore_index=True)
    m = compute_metrics(eq, fills)
    days = {r["period"]: r for r in m["pnl_by_day"]}
    assert list(days) == ["2024-01-06", "2024-01-07", "2024-01-08", "2024-02-01"]
    # Jan 6: from the first row 100 to 104: +4 (+4%); Jan 7: 104 -> 102; Jan 8: 102 -> 105; Feb 1: 105 -> 110
    assert [r["equity_change"] for r in m["pnl_by_day"]] == pytest.approx([4, -2, 3, 5])
    assert days["2024-01-06"]["return"] == pytest.approx(0.04)
    assert sum(r["equity_change"] for r in m["pnl_by_day"]) == pytest.approx(110 - 100)
    # strategy a realises +2 on Jan 7 (a Sunday), b -1 on Jan 8 (a Monday)
    assert days["2024-01-07"]["realized_by_strategy"] == {"a": pytest.approx(2.0)}
    assert days["2024-01-07"]["fees"] == pytest.approx(0.2) and days["2024-01-07"]["n_fills"] == 2
    assert days["2024-01-08"]["realized_by_asset"] == {"X/USD": pytest.approx(-1.0)}
    assert days["2024-01-06"]["realized_pnl"] == 0.0 and days["2024-01-06"]["n_fills"] == 0
    weeks = {r["period"]: r for r in m["pnl_by_week"]}
    # weeks start on Monday: Jan 6-7 -> week of Jan 1; Jan 8 -> week of Jan 8; Feb 1 -> week of Jan 29
    assert list(weeks) == ["2024-01-01", "2024-01-08", "2024-01-29"]
    assert weeks["2024-01-01"]["equity_change"] == pytest.approx(2)  # 100 -> 102
    assert weeks["2024-01-01"]["realized_pnl"] == pytest.approx(2)
    months = {r["period"]: r for r in m["pnl_by_month"]}
    assert list(months) == ["2024-01", "2024-02"]
    assert months["2024-01"]["equity_change"] == pytest.approx(5)  # 100 -> 105
    assert months["2024-01"]["realized_by_strategy"] == {"a": pytest.approx(2), "b": pytest.approx(-1)}


# -- output ------------------------------------------------------------------------------------

REQUIRED_KEYS = [
    "sharpe", "sortino", "calmar", "annualized_return", "max_drawdown", "max_drawdown_days", "var_95", "cvar_95",
    "var_99", "cvar_99", "fill_rate", "fill_rate_orders", "slippage_ref_bps_mean", "slippage_ref_bps_median",
    "slippage_ref_bps_p95", "slippage_arrival_bps_mean", "slippage_vwap_bps_mean", "rejections_by_step",
    "rejections_by_reason", "realized_pnl", "unrealized_pnl", "total_fees", "n_fills", "n_round_trips",
    "success_rate", "exposure_mean", "exposure_max", "pnl_by_strategy", "pnl_by_asset", "pnl_by_day",
    "pnl_by_week", "pnl_by_month",
] + [f"latency_{name}_s_{s}" for name in ("signal_to_placement", "placement_to_first_fill", "signal_to_done")
     for s in ("p50", "p95", "p99", "max")]


def test_stable_keys_and_json_safe_output(tmp_path):
    eq = curve([100, 0, 50, 60], position_value=[0, 0, 10, 10])  # a zero day: an infinite return, left out
    signals, orders, fills, bars, rejections = execution_case()
    m = compute_metrics(eq, fills, orders=orders, signals=signals, rejections=rejections, bars=bars)
    empty = compute_metrics(None, None)
    assert set(REQUIRED_KEYS) <= set(m) and set(m) == set(empty)
    json.dumps(m, allow_nan=False)
    json.dumps(empty, allow_nan=False)
    path = write_metrics({**m, "extra": float("nan")}, tmp_path / "out")
    text = path.read_text()
    loaded = json.loads(text)
    assert loaded["extra"] is None and list(loaded) == sorted(loaded)
    assert text.startswith('{\n  "') and [p.name for p in path.parent.iterdir()] == ["metrics.json"]


def test_metrics_from_replay_files(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"symbol": "ETH/BTC"}))
    curve([1.0, 1.01, 1.02], position_value=[0.0, 0.101, 0.102]).assign(
        timestamp=lambda d: d["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(tmp_path / "equity.csv", index=False)
    pd.DataFrame({"timestamp": ["2024-01-01T00:05:00Z", "2024-01-01T00:10:00Z", "2024-01-01T00:15:00Z"],
                  "signal_id": ["a", "b", "c"], "side": ["buy", "sell", "buy"], "quantity": [1.0, 1.0, 1.0],
                  "price": [0.1, 0.11, 0.1], "fee": [0.0001, 0.00011, 0.0001]}).to_csv(tmp_path / "fills.csv", index=False)
    m = metrics_from_replay(tmp_path)
    assert [r["symbol"] for r in m["pnl_by_asset"]] == ["ETH/BTC"]
    assert [r["strategy"] for r in m["pnl_by_strategy"]] == ["replay"]
    # realised 0.11 - 0.1 = 0.01; open 1 @ 0.1 marked at position_value / position = 0.102 -> 0.002
    assert m["realized_pnl"] == pytest.approx(0.01) and m["unrealized_pnl"] == pytest.approx(0.002)
    assert m["slippage_ref_bps_mean"] is None and m["fill_rate"] is None and m["n_round_trips"] == 1
    assert m["exposure_max"] == pytest.approx(0.1)


def test_a_real_replay_agrees_with_its_summary(tmp_path):
    from tests.conftest import SAMPLE
    from tradpal.io import load_ohlcv
    from tradpal.ledger import Ledger
    from tradpal.replay import ReplayParams, load_inputs, run_replay, write_outputs
    from tradpal.strategies import sma_crossover, write_signals_csv

    ohlcv = SAMPLE / "BITTREX_ETH-BTC_5m.csv"
    bars = load_ohlcv(ohlcv)
    signals = sma_crossover(bars, symbol="ETH/BTC", quantity=1.0).iloc[:-1]  # ends holding a position
    write_signals_csv(signals, tmp_path / "signals.csv")
    params = ReplayParams(str(ohlcv), str(tmp_path / "signals.csv"), "ETH/BTC", 1.0, 0.001, 5.0, None, 50)
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    result = asyncio.run(run_replay(params, load_inputs(params), ledger))
    write_outputs(tmp_path / "out", result.reports, result.summary, result.equity)
    s = result.summary
    assert s["final_position"] > 0
    m = metrics_from_replay(tmp_path / "out")
    for key in ("realized_pnl", "unrealized_pnl", "total_fees", "max_drawdown", "n_fills"):
        assert m[key] == pytest.approx(s[key], rel=1e-9, abs=1e-12), key
    run = s["run_id"]
    frames = {t: ledger.frame(t, run_id=run) for t in ("signals", "orders", "fills", "rejections")}
    m2 = compute_metrics(result.equity, frames["fills"], orders=frames["orders"], signals=frames["signals"],
                         rejections=frames["rejections"], bars=bars)
    assert m2["realized_pnl"] == pytest.approx(s["realized_pnl"], rel=1e-9)
    assert m2["unrealized_pnl"] == pytest.approx(s["unrealized_pnl"], rel=1e-9)  # last close = the summary's mark
    assert m2["fill_rate"] == 1.0 and m2["slippage_ref_bps_median"] == pytest.approx(5.0, abs=0.5)
    assert m2["pnl_by_strategy"][0]["strategy"] == "sma-crossover"
    assert m2["sharpe"] == pytest.approx(m["sharpe"])
