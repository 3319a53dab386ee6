"""Venue profiles are data, checked against the ccxt classes they name."""

from __future__ import annotations

import ccxt.async_support as ccxt
import pytest

from brokers.ccxt import PROFILES, CcxtBroker, profile_for

OUR_CLIENT_ID = "tp-0123456789abcdef01234567-1"  # tasks/orders.py: tp-<sha256[:24]>-<leg>


def test_the_five_venues_are_described() -> None:
    assert set(PROFILES) == {"binance", "kraken", "bybit", "kucoin", "okx"}
    assert [p.exchange_id for p in PROFILES.values() if p.verified] == ["binance"]


@pytest.mark.parametrize("exchange_id", sorted(PROFILES))
def test_each_profile_names_a_ccxt_class_and_a_market_type(exchange_id: str) -> None:
    profile = profile_for(exchange_id)
    assert hasattr(ccxt, profile.exchange_id)
    assert profile.market_types and profile.client_order_id_param and profile.lookup_param
    assert profile.options["defaultType"] in profile.market_types


def test_binance_takes_our_client_ids_and_okx_does_not() -> None:
    assert profile_for("binance").accepts_client_order_id(OUR_CLIENT_ID)
    assert profile_for("bybit").accepts_client_order_id(OUR_CLIENT_ID)
    assert not profile_for("okx").accepts_client_order_id(OUR_CLIENT_ID)
    assert profile_for("binance").is_duplicate('binance {"code":-2010,"msg":"Duplicate order sent."}')
    assert not profile_for("binance").is_duplicate("Account has insufficient balance for requested action.")


def test_unknown_venue_or_market_type_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="known: binance"):
        CcxtBroker("nosuchvenue", api_key="k", secret="s")
    with pytest.raises(ValueError, match="market type 'swap'"):
        CcxtBroker("binance", api_key="k", secret="s", market_type="swap")
