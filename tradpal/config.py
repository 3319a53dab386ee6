"""One settings object: environment variables prefixed ``TRADPAL_`` (and a ``.env``-free
default for everything), validated before any run starts."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_HOME = Path(".tradpal")
BROKERS = ("paper", "ccxt")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRADPAL_", extra="ignore")

    home: Path = Field(DEFAULT_HOME, description="where the default ledger and run outputs live")
    database_url: str | None = Field(None, description="SQLAlchemy URL of the ledger (default: SQLite in home)")
    broker: str = Field("paper", description="broker for live_execution: paper or ccxt")
    exchange: str = Field("binance", description="ccxt exchange id (broker ccxt)")
    exchange_url: str | None = Field(None, description="base URL replacing the venue's API host (e.g. the emulator)")
    backup_exchange_url: str | None = Field(None, description="a second API base of the same venue account: where "
                                            "the connectivity breaker fails over to (broker ccxt)")
    sandbox: bool = Field(False, description="use the venue's testnet / sandbox (broker ccxt)")
    api_key: SecretStr | None = Field(None, description="venue API key (prefer a Prefect Secret block)")
    api_secret: SecretStr | None = Field(None, description="venue API secret (prefer a Prefect Secret block)")
    api_key_block: str | None = Field(None, description="name of the Prefect Secret block holding the API key")
    api_secret_block: str | None = Field(None, description="name of the Prefect Secret block holding the API secret")
    venue_rate_limit: str | None = Field(
        None, description="requests per second to the venue account over all runs together, a Prefect rate "
        "limit (broker ccxt): a number, or 'profile' for the venue profile's budget; unset or 0: off (ccxt's "
        "own limiter only)")
    ccxt_rate_limit: bool = Field(True, description="ccxt's own request limiter (broker ccxt); turn it off only "
                                  "against a venue that limits nothing, such as the exchange emulator")
    venue_rate_burst: int | None = Field(None, ge=1, description="burst of that rate limit (default: the profile's)")
    risk_config: str | None = Field(None, description="risk YAML of live runs (limits, breakers, brackets, alerts); "
                                    "see `tradpal risk example`")
    approval_notional: float | None = Field(None, gt=0, description="live orders above this notional (quote "
                                            "currency) wait for approval in the Prefect UI; unset: off")
    approval_timeout_s: float = Field(900.0, gt=0, description="seconds an order waits for approval before it "
                                      "is cancelled")
    dask_address: str | None = Field(None, description="Dask scheduler of replay sweeps (tcp://host:8786); unset: "
                                      "a local cluster")
    dask_workers: int | None = Field(None, ge=1, description="workers of the local Dask cluster (default: one per core)")
    gil_switch_ms: float = Field(0.5, ge=0, le=100, description="live runs: how long another thread of the process "
                                 "may hold the interpreter before the steps get it back (ms; Python's default 5; "
                                 "0: leave Python's)")
    api_server_nice: int = Field(10, ge=0, le=19, description="live runs: the nice value given to the ephemeral "
                                 "Prefect API server this process started, so its recording of task runs yields "
                                 "the CPU to the steps (0: leave it)")
    events_burst: int = Field(256, ge=1, le=100_000, description="live runs: how many queued Prefect events the "
                              "client's events worker takes per wake-up (tradpal.prefect_events; 1: Prefect's own "
                              "loop, one per wake-up)")

    @field_validator("venue_rate_limit")
    @classmethod
    def _rate(cls, v: str | None) -> str | None:
        if v is None or v.strip().lower() == "profile":
            return v and "profile"
        try:
            rate = float(v)
        except ValueError:
            raise ValueError(f"expected a number of requests per second or 'profile', got {v!r}") from None
        if not 0 <= rate < float("inf"):
            raise ValueError(f"expected a number >= 0, got {v!r}")
        return str(rate)

    @field_validator("broker")
    @classmethod
    def _known_broker(cls, v: str) -> str:
        if v not in BROKERS:
            raise ValueError(f"unknown broker {v!r} (available: {', '.join(BROKERS)})")
        return v

    @field_validator("dask_address")
    @classmethod
    def _scheduler_address(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"(tcp|tls|ucx|ws|wss)://[^/\s]+:\d+/?", v):
            raise ValueError(f"expected a Dask scheduler address like tcp://host:8786, got {v!r}")
        return v

    @field_validator("exchange_url", "backup_exchange_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(f"expected an http(s) URL, got {v!r}")
        return v

    def ledger_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'ledger.db').resolve()}"


def load_settings() -> Settings:
    from pydantic import ValidationError

    from tradpal.errors import ConfigError
    from tradpal.ledger.engine import ledger_ping_idle_s, sqlite_busy_timeout_s

    try:
        settings = Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        key = "TRADPAL_" + str(err["loc"][0]).upper() if err.get("loc") else "TRADPAL_*"
        raise ConfigError(f"{key}: {err['msg']}") from None
    sqlite_busy_timeout_s(), ledger_ping_idle_s()  # the ledger's own settings: an InputError naming the key
    return settings
