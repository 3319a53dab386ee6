"""One settings object: environment variables prefixed ``TRADPAL_`` (and a ``.env``-free
default for everything), validated before any run starts."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_HOME = Path(".tradpal")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRADPAL_", extra="ignore")

    home: Path = Field(DEFAULT_HOME, description="where the default ledger and run outputs live")
    database_url: str | None = Field(None, description="SQLAlchemy URL of the ledger (default: SQLite in home)")
    broker: str = Field("paper", description="broker for live_execution: paper")

    @field_validator("broker")
    @classmethod
    def _known_broker(cls, v: str) -> str:
        if v not in ("paper",):
            raise ValueError(f"unknown broker {v!r} (available: paper)")
        return v

    def ledger_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'ledger.db').resolve()}"


def load_settings() -> Settings:
    from pydantic import ValidationError

    from tradpal.errors import ConfigError

    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        key = "TRADPAL_" + str(err["loc"][0]).upper() if err.get("loc") else "TRADPAL_*"
        raise ConfigError(f"{key}: {err['msg']}") from None
