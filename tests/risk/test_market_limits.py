"""Step 4 against the venue's own market rules (`risk.checks.check_market_limits`):
each rule at its edge, with the reason naming the rule and the symbol."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from brokers.base import MarketLimits
from risk.checks import check_market_limits

ETH_BTC = MarketLimits("ETH/BTC", amount_step=0.001, price_step=1e-8, min_amount=0.001, max_amount=1000.0,
                       min_notional=0.001)


def orders(*rows: tuple) -> pd.DataFrame:
    """(symbol, quantity, limit price or NaN, reference price) per order."""
    return pd.DataFrame(rows, columns=["symbol", "quantity", "price", "reference_price"])


@pytest.mark.parametrize(
    ("quantity", "price", "reference", "reason"),
    [
        (0.0004, math.nan, 0.1, "quantity 0.0004 rounds to 0 at the venue's amount step 0.001 for ETH/BTC"),
        (1000.5, math.nan, 0.1, "quantity 1000.5 above the venue's maximum amount 1000 for ETH/BTC"),
        (0.009, math.nan, 0.1, "notional 0.0009 below the venue's minimum notional 0.001 for ETH/BTC"),
        # 0.0119 x 0.09 = 0.001071 passes, but the venue takes 0.011: 0.00099
        (0.0119, math.nan, 0.09, "notional 0.00099 below the venue's minimum notional 0.001 for ETH/BTC"),
        (0.005, 0.3, 0.1, None),  # a limit price: 0.005 x 0.3 = 0.0015
        (0.01, math.nan, 0.1, None),  # exactly the minimum notional
        (0.29, math.nan, 0.1, None),  # 0.29 / 0.001 is 289.99999999999994 in float: still 290 lots
        (0.5, math.nan, math.nan, None),  # no price to value it with: the venue decides
    ],
    ids=["rounds-to-zero", "above-max", "below-notional", "floored-below-notional", "limit-price", "edge",
         "float", "no-price"],
)
def test_each_rule(quantity: float, price: float, reference: float, reason: str | None) -> None:
    [got] = check_market_limits(orders(("ETH/BTC", quantity, price, reference)), {"ETH/BTC": ETH_BTC})
    assert got == reason


def test_minimum_amount_and_symbols_without_limits() -> None:
    limits = {"ETH/BTC": MarketLimits("ETH/BTC", amount_step=0.001, min_amount=0.01)}
    got = check_market_limits(orders(("ETH/BTC", 0.009, math.nan, 0.1), ("XRP/BTC", 0.0001, math.nan, 1.0)), limits)
    assert got == ["quantity 0.009 below the venue's minimum amount 0.01 for ETH/BTC", None]
