from __future__ import annotations

import pytest

from risk.config import EXAMPLE, load_risk_config, parse_risk_config
from tradpal.errors import ConfigError


def test_example_is_complete_and_valid():
    cfg = parse_risk_config(EXAMPLE)
    assert cfg.portfolio.max_drawdown == 0.20 and cfg.portfolio.max_daily_loss == 0.05
    assert cfg.portfolio.max_gross_exposure == 1.0
    assert cfg.sector_of("BTC/USDT") == "majors" and cfg.sectors["majors"].max_exposure == 0.8
    assert cfg.sizing.strategies["sma-crossover"].fraction == 0.02


@pytest.mark.parametrize("text, expected", [
    ("portfolio: {max_daily_loss: 0.05, max_gross_exposure: 1}", "portfolio.max_drawdown: Field required"),
    ("portfolio: {max_drawdown: 1.5, max_daily_loss: 0.05, max_gross_exposure: 1}",
     "portfolio.max_drawdown: Input should be less than or equal to 1 (got 1.5)"),
    ("portfolio: {max_drawdown: 0.2, max_daily_loss: 0.05, max_gross_exposure: 1, max_leverage: 3}",
     "portfolio.max_leverage: Extra inputs are not permitted"),
    ("portfolio: {max_drawdown: 0.2, max_daily_loss: 0.05, max_gross_exposure: 1}\n"
     "assets: {BTC/USDT: {sector: defi}}", "sector 'defi' is not defined under sectors"),
    ("portfolio: {max_drawdown: 0.2, max_daily_loss: 0.05, max_gross_exposure: 1}\n"
     "sizing: {default: {method: fixed}}", "sizing.default: method 'fixed' needs quantity"),
    ("portfolio: [1, 2", "not valid YAML"),
    ("- just a list", "expected a mapping"),
])
def test_errors_name_the_key_and_what_was_expected(text, expected):
    with pytest.raises(ConfigError) as err:
        parse_risk_config(text, "risk.yaml")
    assert str(err.value).startswith("risk.yaml") and expected in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="risk config file not found"):
        load_risk_config(tmp_path / "nope.yaml")


def test_docs_example_file_is_the_printed_example():
    from pathlib import Path

    assert (Path(__file__).resolve().parents[2] / "docs" / "risk.example.yaml").read_text() == EXAMPLE


def test_example_brackets_and_breakers():
    cfg = parse_risk_config(EXAMPLE)
    rule = cfg.brackets.rule_for("breakout")
    assert (rule.stop_loss.atr_multiple, rule.stop_loss.atr_period, rule.take_profit.percent, rule.trailing) == (
        2.0, 14, 0.06, True)
    assert cfg.brackets.rule_for("sma-crossover") is None  # no default in the example
    assert cfg.breakers.connectivity.max_errors == 5 and cfg.breakers.loss_limit.flatten is False
    assert cfg.alerts.secret_block is None


@pytest.mark.parametrize("text, expected", [
    ("brackets: {default: {stop_loss: {percent: 0.02, price: 90}}}",
     "brackets.default.stop_loss: give exactly one of percent, atr_multiple, price (got percent, price)"),
    ("brackets: {default: {stop_loss: {}}}", "brackets.default.stop_loss: give exactly one of"),
    ("brackets: {strategies: {x: {trailing: true}}}",
     "brackets.strategies.x: a bracket needs stop_loss, take_profit or both"),
    ("brackets: {default: {take_profit: {percent: 0.1}, trailing: true}}",
     "brackets.default: trailing needs stop_loss"),
    ("brackets: {default: {stop_loss: {percent: 1.5}}}",
     "brackets.default.stop_loss.percent: Input should be less than 1 (got 1.5)"),
    ("brackets: {default: {stop_loss: {percnt: 0.1}}}", "brackets.default.stop_loss.percnt: Extra inputs"),
    ("breakers: {connectivity: {max_errors: 0}}",
     "breakers.connectivity.max_errors: Input should be greater than or equal to 1 (got 0)"),
    ("breakers: {loss_limit: {threshold: 0.1, flatten: maybe}}", "breakers.loss_limit.flatten: Input should be"),
    ("alerts: {secret_block: ''}", "alerts.secret_block: String should have at least 1 character"),
])
def test_risk_controls_errors_name_the_key(text, expected):
    base = "portfolio: {max_drawdown: 0.2, max_daily_loss: 0.05, max_gross_exposure: 1}\n"
    with pytest.raises(ConfigError) as err:
        parse_risk_config(base + text, "risk.yaml")
    assert expected in str(err.value), str(err.value)
