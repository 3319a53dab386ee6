"""`make_broker`: the broker from TRADPAL_* configuration; secrets never in text."""

from __future__ import annotations

import pytest

from brokers.factory import make_broker, venue_name
from brokers.paper import PaperBroker
from tradpal.config import Settings, load_settings
from tradpal.errors import ConfigError

SECRET = "CANARY-factory-9c1e5d7f3a"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("BROKER", "EXCHANGE", "EXCHANGE_URL", "SANDBOX", "API_KEY", "API_SECRET", "API_KEY_BLOCK",
                 "API_SECRET_BLOCK"):
        monkeypatch.delenv(f"TRADPAL_{name}", raising=False)


def test_paper_is_the_default():
    broker = make_broker(Settings(), cash=500.0, quote="USDT", prices={"BTC/USDT": 100.0})
    assert isinstance(broker, PaperBroker) and broker.name == "paper" and broker.cash == 500.0


def test_ccxt_from_env(monkeypatch):
    from brokers.ccxt import CcxtBroker

    monkeypatch.setenv("TRADPAL_BROKER", "ccxt")
    monkeypatch.setenv("TRADPAL_EXCHANGE_URL", "http://127.0.0.1:8765")
    monkeypatch.setenv("TRADPAL_SANDBOX", "true")
    monkeypatch.setenv("TRADPAL_API_KEY", "key-1234")
    monkeypatch.setenv("TRADPAL_API_SECRET", SECRET)
    settings = load_settings()
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())
    broker = make_broker(settings, quote="BTC")
    assert isinstance(broker, CcxtBroker)
    assert broker.name == "binance-testnet@127.0.0.1:8765" == venue_name(settings)
    assert broker.sandbox and broker.base_url == "http://127.0.0.1:8765" and broker.quote_currency == "BTC"
    assert SECRET not in repr(broker)


@pytest.mark.parametrize(("env", "message"), [
    ({"TRADPAL_BROKER": "ib"}, "TRADPAL_BROKER"),
    ({"TRADPAL_BROKER": "ccxt", "TRADPAL_EXCHANGE_URL": "ftp://x"}, "TRADPAL_EXCHANGE_URL"),
])
def test_bad_settings_name_the_key(monkeypatch, env, message):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_missing_or_unknown_venue_settings(monkeypatch):
    monkeypatch.setenv("TRADPAL_BROKER", "ccxt")
    monkeypatch.setenv("TRADPAL_API_SECRET", SECRET)
    with pytest.raises(ConfigError, match="TRADPAL_API_KEY") as missing:
        make_broker(load_settings())
    assert SECRET not in str(missing.value)
    monkeypatch.setenv("TRADPAL_API_KEY", "k")
    monkeypatch.setenv("TRADPAL_EXCHANGE", "nowhere")
    with pytest.raises(ConfigError, match="TRADPAL_EXCHANGE: no venue profile"):
        make_broker(load_settings())


def test_credentials_from_secret_blocks(prefect_api, monkeypatch):
    from prefect.blocks.system import Secret

    Secret(value="block-key-1234").save("tp-test-key", overwrite=True)
    Secret(value=SECRET).save("tp-test-secret", overwrite=True)
    monkeypatch.setenv("TRADPAL_BROKER", "ccxt")
    monkeypatch.setenv("TRADPAL_API_KEY_BLOCK", "tp-test-key")
    monkeypatch.setenv("TRADPAL_API_SECRET_BLOCK", "tp-test-secret")
    monkeypatch.setenv("TRADPAL_API_KEY", "env-key-ignored")
    broker = make_broker(load_settings())
    assert broker._api_key == "block-key-1234" and broker._secret == SECRET
    monkeypatch.setenv("TRADPAL_API_SECRET_BLOCK", "no-such-block")
    with pytest.raises(ConfigError, match="TRADPAL_API_SECRET_BLOCK: cannot load .*'no-such-block'"):
        make_broker(load_settings())
