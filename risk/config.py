"""Risk configuration: one YAML file, validated before any run starts.

Every error names the key (dotted path) and what was expected, e.g.
``risk.yaml: portfolio.max_drawdown: Input should be less than or equal to 1 (got 1.5)``.
`EXAMPLE` is a complete, commented example that passes validation (`tradpal risk example`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tradpal.errors import ConfigError

Fraction = float


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PortfolioLimits(_Strict):
    max_drawdown: Fraction = Field(gt=0, le=1, description="halt new risk past this drawdown from peak equity")
    max_daily_loss: Fraction = Field(gt=0, le=1, description="halt new risk past this loss since the UTC day began")
    max_gross_exposure: float = Field(gt=0, description="sum of |position value| / equity")
    max_open_orders: int | None = Field(None, ge=1)
    max_order_notional: float | None = Field(None, gt=0, description="quote currency, at the reference price")


class SizingRule(_Strict):
    method: Literal["signal", "fixed", "fixed_fractional", "atr", "kelly"] = "signal"
    quantity: float | None = Field(None, gt=0)
    fraction: Fraction | None = Field(None, gt=0, le=1)
    risk_fraction: Fraction | None = Field(None, gt=0, le=1, description="atr: equity at risk per trade")
    atr_multiple: float = Field(2.0, gt=0)
    atr_period: int = Field(14, ge=1)
    kelly_multiplier: float = Field(0.5, gt=0, le=1, description="kelly: fraction of full Kelly")
    kelly_cap: Fraction = Field(0.25, gt=0, le=1, description="kelly: at most this fraction of equity")
    min_trades: int = Field(20, ge=1, description="kelly: round trips needed before it applies")
    fallback_fraction: Fraction | None = Field(None, gt=0, le=1, description="kelly: fixed fraction until then")

    @model_validator(mode="after")
    def _params(self) -> SizingRule:
        if self.method == "fixed" and self.quantity is None:
            raise ValueError("method 'fixed' needs quantity")
        if self.method == "fixed_fractional" and self.fraction is None:
            raise ValueError("method 'fixed_fractional' needs fraction")
        if self.method == "atr" and self.risk_fraction is None:
            raise ValueError("method 'atr' needs risk_fraction")
        return self


class SizingConfig(_Strict):
    default: SizingRule = SizingRule()
    strategies: dict[str, SizingRule] = {}


class AssetLimits(_Strict):
    max_position: float | None = Field(None, gt=0, description="base units")
    sector: str | None = None


class SectorLimits(_Strict):
    max_exposure: Fraction = Field(gt=0, description="sum of |position value| in the sector / equity")


class AlertConfig(_Strict):
    urls: list[str] = []
    secret_block: str | None = Field(None, min_length=1, description="a Prefect Secret block holding more URLs")
    throttle_s: float = Field(300.0, ge=0)


class VolatilityBreaker(_Strict):
    lookback: int = Field(100, ge=10, description="bars of returns the z-score is measured against")
    z_threshold: float = Field(6.0, gt=0, description="|bar return z-score| that halts the symbol")
    cooldown_minutes: float = Field(60.0, gt=0)


class LossLimitBreaker(_Strict):
    threshold: Fraction = Field(gt=0, le=1, description="loss from the starting equity that halts new risk")
    flatten: bool = Field(False, description="also close every open position with market orders")


class ConnectivityBreaker(_Strict):
    max_errors: int = Field(5, ge=1, description="consecutive broker errors that halt the broker (or fail over)")


class BreakerConfig(_Strict):
    volatility: VolatilityBreaker | None = None
    loss_limit: LossLimitBreaker | None = None
    connectivity: ConnectivityBreaker | None = None


class Level(_Strict):
    """Where a bracket leg sits: exactly one of ``percent`` (of the entry's fill price),
    ``atr_multiple`` (x ATR over ``atr_period`` bars at the fill) or ``price`` (absolute)."""

    percent: Fraction | None = Field(None, gt=0, lt=1, description="distance from the entry fill price")
    atr_multiple: float | None = Field(None, gt=0, description="distance in ATRs of the symbol at the fill")
    atr_period: int = Field(14, ge=1)
    price: float | None = Field(None, gt=0, description="an absolute price")

    @model_validator(mode="after")
    def _one(self) -> Level:
        given = [k for k in ("percent", "atr_multiple", "price") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of percent, atr_multiple, price (got {', '.join(given) or 'none'})")
        return self


class BracketRule(_Strict):
    """A protective stop and/or a target attached to each buy entry of a strategy, as an
    OCO pair (one fills, the other is cancelled); ``trailing``: the stop follows the highest
    price since the entry at its initial distance."""

    stop_loss: Level | None = None
    take_profit: Level | None = None
    trailing: bool = False

    @model_validator(mode="after")
    def _legs(self) -> BracketRule:
        if self.stop_loss is None and self.take_profit is None:
            raise ValueError("a bracket needs stop_loss, take_profit or both")
        if self.trailing and self.stop_loss is None:
            raise ValueError("trailing needs stop_loss")
        return self


class BracketConfig(_Strict):
    default: BracketRule | None = None
    strategies: dict[str, BracketRule] = {}

    def rule_for(self, strategy: str) -> BracketRule | None:
        return self.strategies.get(strategy, self.default)


class ApprovalConfig(_Strict):
    notional_above: float | None = Field(None, gt=0, description="live orders above this notional wait for a person")
    timeout_s: float = Field(900.0, gt=0, description="seconds to wait for the answer before cancelling the order")


class RiskConfig(_Strict):
    portfolio: PortfolioLimits
    breakers: BreakerConfig = BreakerConfig()
    sizing: SizingConfig = SizingConfig()
    assets: dict[str, AssetLimits] = {}
    sectors: dict[str, SectorLimits] = {}
    alerts: AlertConfig = AlertConfig()
    brackets: BracketConfig = BracketConfig()
    approval: ApprovalConfig = ApprovalConfig()

    @model_validator(mode="after")
    def _sectors_defined(self) -> RiskConfig:
        for symbol, asset in self.assets.items():
            if asset.sector is not None and asset.sector not in self.sectors:
                raise ValueError(f"assets.{symbol}.sector: sector {asset.sector!r} is not defined under sectors")
        return self

    def sector_of(self, symbol: str) -> str | None:
        asset = self.assets.get(symbol)
        return asset.sector if asset else None


def _where(err: dict) -> str:
    return ".".join(str(p) for p in err.get("loc", ())) or "(top level)"


def parse_risk_config(text: str, source: str = "risk config") -> RiskConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{source}:{where} not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with a 'portfolio' section at the top level")
    try:
        return RiskConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{source}: {_where(err)}: {msg}{got}") from None


def load_risk_config(path: str | Path) -> RiskConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: risk config file not found")
    return parse_risk_config(p.read_text(), str(p))


EXAMPLE = """\
# TradPal risk configuration (validate with: tradpal risk check FILE).
# Fractions are of equity (0.05 = 5%); notionals are in the account's quote currency.

portfolio:
  max_drawdown: 0.20        # halt new risk once equity is 20% below its peak
  max_daily_loss: 0.05      # halt new risk once the day's loss reaches 5% of the day's opening equity
  max_gross_exposure: 1.0   # sum of |position value| may not exceed 1x equity
  max_open_orders: 20       # orders open at the broker at once
  max_order_notional: 5000  # one order's quantity x reference price

sizing:
  default:                  # for strategies not listed below
    method: signal          # signal | fixed | fixed_fractional
  strategies:
    sma-crossover:
      method: fixed_fractional
      fraction: 0.02        # 2% of equity per trade
    breakout:
      method: atr           # equity x risk_fraction / (atr_multiple x ATR(atr_period))
      risk_fraction: 0.01
      atr_multiple: 2.0
      atr_period: 14
    mean-reversion:
      method: kelly         # kelly_multiplier x (W - (1 - W) / R) from recorded round trips, capped
      kelly_multiplier: 0.5
      kelly_cap: 0.2
      min_trades: 30        # until then: fallback_fraction
      fallback_fraction: 0.01

assets:
  BTC/USDT:
    max_position: 1.5       # base units
    sector: majors
  ETH/USDT:
    max_position: 20
    sector: majors

sectors:
  majors:
    max_exposure: 0.8       # BTC + ETH together at most 80% of equity

breakers:
  volatility:               # a symbol pauses when one bar's return is an outlier
    lookback: 100           # bars of returns to measure against
    z_threshold: 6.0        # |z-score| of the bar's return
    cooldown_minutes: 60
  loss_limit:
    threshold: 0.10         # 10% below the starting equity halts all new risk until `tradpal risk reset`
    flatten: false          # true: the trip also closes every open position (market sells, audited, alerted)
  connectivity:
    max_errors: 5           # consecutive broker errors (connection, rate limit) halt the broker, or move
                            # to the backup route TRADPAL_BACKUP_EXCHANGE_URL when one is configured

brackets:                   # stop loss / take profit on each buy entry, as an OCO pair
  strategies:
    breakout:
      stop_loss: {atr_multiple: 2.0, atr_period: 14}   # or {percent: 0.02} or {price: 90000}
      take_profit: {percent: 0.06}
      trailing: true        # the stop follows the highest price since the entry at its initial distance
  # default: {stop_loss: {percent: 0.05}}   # for strategies not listed
  # A signal may carry its own stop_loss / take_profit (absolute prices) and trailing_stop:
  # they replace the rule's legs for that entry (and give a bracket where no rule applies).

approval:                   # live orders above notional_above wait for a person in the Prefect UI (off unless set)
  # notional_above: 25000   # quote currency: quantity x reference price
  timeout_s: 900            # no answer within 15 minutes cancels the order

alerts:
  urls: []                  # Apprise URLs, e.g. json://127.0.0.1:8080/alerts; also TRADPAL_ALERT_URLS
  # secret_block: tradpal-alert-urls   # a Prefect Secret block holding URLs (comma-separated or a list);
  #                                    # also TRADPAL_ALERT_URLS_BLOCK. Keeps tokens out of this file.
  throttle_s: 300           # the same breach is alerted at most once per 5 minutes
"""
