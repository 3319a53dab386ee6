"""risk.checks: each check returns, per order, a reason to refuse it or None."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from risk.checks import check_balance, check_minimums, check_price_sanity, check_symbol_known, first_reason

NOW = pd.Timestamp("2024-01-01", tz="UTC")
NAN = np.nan


def orders(*rows: dict) -> pd.DataFrame:
    base = {"symbol": "BTC/USDT", "side": "buy", "quantity": 1.0, "price": NAN, "stop_price": NAN,
            "reference_price": 100.0}
    return pd.DataFrame([{**base, **r} for r in rows])


# ---------------------------------------------------------------- symbol


def test_check_symbol_known() -> None:
    frame = orders({}, {"symbol": "ETH/USDT"})
    assert check_symbol_known(frame, {"BTC/USDT"}) == [None, "unknown symbol ETH/USDT"]


def test_check_symbol_known_is_skipped_when_nothing_is_known() -> None:
    assert check_symbol_known(orders({"symbol": "ANY/THING"}), set()) == [None]


# ---------------------------------------------------------------- minimums


def test_check_minimums_quantity() -> None:
    frame = orders({"quantity": 0.009}, {"quantity": 0.01}, {"symbol": "ETH/USDT", "quantity": 0.001})
    assert check_minimums(frame, {"BTC/USDT": 0.01}, {}) == [
        "quantity 0.009 below the minimum 0.01 for BTC/USDT", None, None]


def test_check_minimums_notional_at_the_reference_price() -> None:
    frame = orders({"quantity": 0.5, "reference_price": 19.9}, {"quantity": 0.5, "reference_price": 20.0},
                   {"quantity": 0.5, "reference_price": 30.0})
    assert check_minimums(frame, {}, {"BTC/USDT": 10.0}) == [
        "notional 9.95 below the minimum 10 for BTC/USDT", None, None]


def test_notional_equal_to_the_minimum_passes_despite_float_noise() -> None:
    # 0.29 x 100 is 28.999999999999996 in binary floating point
    assert 0.29 * 100.0 < 29.0
    frame = orders({"quantity": 0.29, "reference_price": 100.0}, {"quantity": 0.2899, "reference_price": 100.0})
    assert check_minimums(frame, {"BTC/USDT": 0.29}, {"BTC/USDT": 29.0}) == [
        None, "quantity 0.2899 below the minimum 0.29 for BTC/USDT"]
    assert check_minimums(frame.iloc[[1]], {}, {"BTC/USDT": 29.0}) == [
        "notional 28.99 below the minimum 29 for BTC/USDT"]


def test_minimum_notional_needs_a_reference_price() -> None:
    frame = orders({"reference_price": NAN})
    assert check_minimums(frame, {}, {"BTC/USDT": 10.0}) == [
        "no reference price to check the minimum notional 10 for BTC/USDT"]
    assert check_minimums(frame, {}, {}) == [None]


# ---------------------------------------------------------------- price sanity


def test_check_price_sanity() -> None:
    frame = orders(
        {"price": 125.0},  # exactly 25% away: allowed
        {"price": 74.0},  # 26% below
        {"stop_price": 130.0},
        {"price": 101.0, "stop_price": 60.0},  # the stop is the problem
        {"price": 1_000.0, "reference_price": NAN},  # nothing to compare with
        {},  # market order
    )
    assert check_price_sanity(frame, 0.25) == [
        None,
        "limit price 74 is 26.0% from the reference price 100 (max 25%)",
        "stop price 130 is 30.0% from the reference price 100 (max 25%)",
        "stop price 60 is 40.0% from the reference price 100 (max 25%)",
        None,
        None,
    ]


# ---------------------------------------------------------------- projected balance


def test_refuses_a_buy_the_cash_cannot_cover() -> None:
    frame = orders({"quantity": 6.0}, {"quantity": 5.0}, {"quantity": 0.5})
    # 6 x 100 = 600 > 1,000? no: passes, 400 left; 5 x 100 = 500 > 400: refused; 0.5 x 100 fits
    assert check_balance(frame, 1_000.0, {}, NOW) == [
        None, "insufficient funds (projected): buy 5 BTC/USDT needs ~500, cash 400", None]


def test_a_buy_that_uses_exactly_the_cash_passes() -> None:
    assert check_balance(orders({"quantity": 10.0}), 1_000.0, {}, NOW) == [None]


def test_a_limit_buy_is_projected_at_its_limit_price() -> None:
    frame = orders({"quantity": 10.0, "price": 90.0, "reference_price": 120.0})
    assert check_balance(frame, 900.0, {}, NOW) == [None]
    assert check_balance(frame, 899.0, {}, NOW) == [
        "insufficient funds (projected): buy 10 BTC/USDT needs ~900, cash 899"]


def test_refuses_a_sell_beyond_the_position() -> None:
    frame = orders({"side": "sell", "quantity": 1.5}, {"side": "sell", "quantity": 1.0})
    assert check_balance(frame, 0.0, {"BTC/USDT": 2.0}, NOW) == [
        None, "insufficient position (projected): sell 1 BTC/USDT, holding 0.5"]


def test_a_sell_earlier_in_the_batch_funds_a_later_buy() -> None:
    frame = orders({"side": "sell", "quantity": 2.0}, {"quantity": 2.5})
    assert check_balance(frame, 50.0, {"BTC/USDT": 2.0}, NOW) == [None, None]  # 50 + 200 >= 250
    assert check_balance(frame.iloc[::-1], 50.0, {"BTC/USDT": 2.0}, NOW) == [
        "insufficient funds (projected): buy 2.5 BTC/USDT needs ~250, cash 50", None]


def test_a_buy_earlier_in_the_batch_makes_a_later_sell_possible() -> None:
    frame = orders({"quantity": 1.0}, {"side": "sell", "quantity": 1.0})
    assert check_balance(frame, 100.0, {}, NOW) == [None, None]


def test_a_buy_without_any_price_still_adds_to_the_projected_position() -> None:
    frame = orders({"quantity": 1.0, "reference_price": NAN}, {"side": "sell", "quantity": 1.0,
                                                               "reference_price": NAN})
    assert check_balance(frame, 0.0, {}, NOW) == [None, None]
    assert check_balance(frame.iloc[[1]], 0.0, {}, NOW) == [
        "insufficient position (projected): sell 1 BTC/USDT, holding 0"]


def test_positions_are_per_symbol() -> None:
    frame = orders({"side": "sell", "symbol": "ETH/USDT"})
    assert check_balance(frame, 0.0, {"BTC/USDT": 5.0}, NOW) == [
        "insufficient position (projected): sell 1 ETH/USDT, holding 0"]


# ---------------------------------------------------------------- combining


def test_first_reason_takes_the_first_check_that_refused() -> None:
    out = first_reason(["a", None, None], ["b", "c", None])
    assert out.tolist() == ["a", "c", None]


@pytest.mark.parametrize("columns", [(), ([],)])
def test_first_reason_of_nothing(columns: tuple) -> None:
    assert first_reason(*columns).tolist() == []
