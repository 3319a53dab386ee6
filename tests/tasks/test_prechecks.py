"""Step 4, pre-execution checks through the step: known symbol, minimums, price sanity
and the projected balance, first reason wins."""

from __future__ import annotations

import pandas as pd
import pytest

from tasks.context import OpenOrder, PipelineConfig, SymbolRules
from tasks.contracts import CheckedFrame, validate
from tasks.orders import client_order_id
from tasks.prechecks import pre_execution_checks
from tests.tasks.conftest import SYM, bars, build_context, raw_signals, run_through, t

MARKET = {SYM: bars([(100, 100, 100, 100)] * 3)}  # reference price 100 from t(1) on


def checked(raw: pd.DataFrame, ctx=None, **config):
    ctx = ctx or build_context(market=MARKET, start=t(1), config=PipelineConfig(**config))
    result = pre_execution_checks(run_through(raw, ctx, "order_creation"), ctx)
    validate(result.frame, CheckedFrame, step="pre_checks")
    return result


def why(result) -> dict[str, str]:
    return dict(zip(result.rejected["signal_id"], result.rejected["reason"], strict=True))


def sig(**kw) -> dict:
    return {"timestamp": t(1), **kw}


def test_passing_orders_are_stamped_with_the_check_time() -> None:
    result = checked(raw_signals(sig(), sig(side="buy", quantity=2.0)))
    assert result.rejected.empty
    assert result.frame["checked_at"].tolist() == [t(1), t(1)]


def test_refuses_an_unknown_symbol_with_its_client_order_id() -> None:
    result = checked(raw_signals(sig(), sig(symbol="ETH/USDT")))
    assert result.frame["signal_id"].tolist() == ["s1"]
    assert result.rejected.to_numpy().tolist() == [["s2", client_order_id("s2"), "unknown symbol ETH/USDT"]]


def test_a_symbol_with_rules_is_known_without_market_data() -> None:
    result = checked(raw_signals(sig(symbol="ETH/USDT", reference_price=10.0)),
                     rules={"ETH/USDT": SymbolRules()})
    assert result.rejected.empty


def test_refuses_below_the_minimum_quantity() -> None:
    result = checked(raw_signals(sig(quantity=0.5), sig(quantity=1.0)),
                     rules={SYM: SymbolRules(min_quantity=1.0)})
    assert why(result) == {"s1": "quantity 0.5 below the minimum 1 for BTC/USDT"}


def test_min_notional_edge_after_lot_rounding() -> None:
    rules = {SYM: SymbolRules(lot_size=0.01, min_notional=29.0)}
    # 0.2999 floors to 0.29: 0.29 x 100 = 29 exactly (28.999999999999996 in float) passes;
    # 0.2899 floors to 0.28: 28 < 29 is refused
    result = checked(raw_signals(sig(quantity=0.2999), sig(quantity=0.2899)), rules=rules)
    assert result.frame["signal_id"].tolist() == ["s1"]
    assert result.frame.loc[0, "quantity"] == pytest.approx(0.29)
    assert why(result) == {"s2": "notional 28 below the minimum 29 for BTC/USDT"}


def test_refuses_a_limit_price_too_far_from_the_reference() -> None:
    raw = raw_signals(sig(order_type="limit", limit_price=130.0), sig(order_type="limit", limit_price=120.0))
    result = checked(raw, max_price_deviation=0.25)
    assert why(result) == {"s1": "limit price 130 is 30.0% from the reference price 100 (max 25%)"}


def test_refuses_a_buy_the_cash_cannot_cover() -> None:
    ctx = build_context(market=MARKET, start=t(1), cash=250.0)
    result = checked(raw_signals(sig(quantity=2.0), sig(quantity=1.0)), ctx)
    # 2 x 100 plus the 0.1% fee estimate leaves 49.8; the next buy needs 100.1
    assert why(result) == {"s2": "insufficient funds (projected): buy 1 BTC/USDT needs ~100.1, cash 49.8"}


def test_refuses_a_sell_beyond_the_position() -> None:
    ctx = build_context(market=MARKET, start=t(1))
    ctx.book.positions[SYM] = 1.0
    result = checked(raw_signals(sig(side="sell", quantity=0.6), sig(side="sell", quantity=0.6)), ctx)
    assert why(result) == {"s2": "insufficient position (projected): sell 0.6 BTC/USDT, holding 0.4"}


def test_a_sell_earlier_in_the_batch_funds_a_later_buy() -> None:
    ctx = build_context(market=MARKET, start=t(1), cash=0.0)
    ctx.book.positions[SYM] = 3.0
    # the sell frees 300 less the 0.1% fee estimate = 299.7; buying 2.9 costs 290.29, leaving 9.41
    result = checked(raw_signals(sig(side="sell", quantity=3.0), sig(quantity=2.9), sig(quantity=0.1)), ctx)
    assert why(result) == {"s3": "insufficient funds (projected): buy 0.1 BTC/USDT needs ~10.01, cash 9.41"}


def test_the_balance_check_can_be_turned_off() -> None:
    ctx = build_context(market=MARKET, start=t(1), cash=0.0, config=PipelineConfig(check_balance=False))
    assert checked(raw_signals(sig(quantity=5.0)), ctx).rejected.empty


def test_each_order_gets_the_first_reason_only() -> None:
    rules = {SYM: SymbolRules(min_quantity=10.0)}
    ctx = build_context(market=MARKET, start=t(1), cash=0.0, config=PipelineConfig(rules=rules))
    result = checked(raw_signals(sig(symbol="ETH/USDT"), sig(quantity=1.0)), ctx)
    assert why(result) == {"s1": "unknown symbol ETH/USDT", "s2": "quantity 1 below the minimum 10 for BTC/USDT"}


def resting_buy(ctx, quantity: float, *, filled: float = 0.0, price: float = float("nan")) -> None:
    """A buy still working at the venue (as monitoring remembers it)."""
    coid = f"resting-{len(ctx.open_orders)}"
    ctx.open_orders[coid] = OpenOrder({"client_order_id": coid, "symbol": SYM, "side": "buy", "quantity": quantity,
                                       "price": price, "reference_price": 100.0}, cum_qty=filled)


def test_the_cash_a_working_buy_still_needs_is_not_spent_twice() -> None:
    ctx = build_context(market=MARKET, start=t(1), cash=250.0)
    resting_buy(ctx, 2.0, filled=0.5, price=95.0)  # 1.5 left at 95: 142.5 of the 250 committed
    result = checked(raw_signals(sig(quantity=1.0), sig(quantity=1.0)), ctx)
    # 107.5 free: the first buy (100.1 with the fee estimate) passes, leaving 7.4
    assert why(result) == {"s2": "insufficient funds (projected): buy 1 BTC/USDT needs ~100.1, cash 7.4"}


def test_working_buys_count_towards_the_position_cap() -> None:
    from risk.config import parse_risk_config

    risk = parse_risk_config("portfolio: {max_drawdown: 0.5, max_daily_loss: 0.5, max_gross_exposure: 100}\n"
                             f"assets: {{'{SYM}': {{max_position: 2}}}}\n")
    ctx = build_context(market=MARKET, start=t(1), config=PipelineConfig(risk=risk))
    ctx.book.positions[SYM] = 0.5
    assert checked(raw_signals(sig(quantity=0.6)), ctx).rejected.empty  # 1.1: alone it fits
    resting_buy(ctx, 1.0)  # a market buy still filling: its reference price
    resting_buy(ctx, 0.4, filled=0.4)  # done in all but name: nothing left to count
    assert why(checked(raw_signals(sig(quantity=0.6)), ctx)) == {"s1": "max_position BTC/USDT: 2.1 > limit 2"}


def test_working_sells_commit_nothing_to_the_checks() -> None:
    ctx = build_context(market=MARKET, start=t(1), cash=150.0)
    ctx.open_orders["sell"] = OpenOrder(
        {"client_order_id": "sell", "symbol": SYM, "side": "sell", "quantity": 5.0, "price": 120.0,
         "reference_price": 100.0})
    assert checked(raw_signals(sig(quantity=1.0)), ctx).rejected.empty
