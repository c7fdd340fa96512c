"""Service configuration: one source of truth, read from the environment (and `.env`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_DATABASE_URL = "{{ cookiecutter.__default_database_url }}"
URL_EXAMPLE = "postgresql+asyncpg://user:password@db:5432/app or sqlite+aiosqlite:///./app.db"
# Plain scheme names map to the async driver the service ships with.
ASYNC_DRIVERS = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}

LogLevel = Literal["critical", "error", "warning", "info", "debug"]


class Settings(BaseSettings):
    """Every field is read from the upper-case environment variable of the same name."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    database_url: SecretStr = SecretStr(DEFAULT_DATABASE_URL)
    db_pool_size: int = Field(default={{ cookiecutter.pool_size }}, ge=1)
    db_max_overflow: int = Field(default={{ cookiecutter.max_overflow }}, ge=0)
    db_pool_timeout: float = Field(default={{ cookiecutter.pool_timeout }}, gt=0, allow_inf_nan=False)
    db_connect_timeout: float = Field(default=5, gt=0, allow_inf_nan=False)
    db_statement_timeout: float = Field(default=30, ge=0, allow_inf_nan=False)
    db_pool_recycle: int = Field(default=1800, ge=-1)
    db_pool_pre_ping: bool = False
    db_echo: bool = False
    db_pool_mode: Literal["queue", "null"] = "queue"
    db_leak_threshold: float = Field(default=60, ge=0, allow_inf_nan=False)
    db_budget_strict: bool = False
    db_application_name: str = Field(default="{{ cookiecutter.package_name }}", min_length=1, max_length=63)
    ready_timeout: float = Field(default=2, gt=0, allow_inf_nan=False)
    requests_per_connection: int = Field(default=10, ge=1)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: LogLevel = "info"
    log_format: Literal["text", "json"] = "text"
    db_pgbouncer: bool = False
    database_replica_urls: SecretStr = SecretStr("")
    db_replica_max_lag: float = Field(default=5, gt=0, allow_inf_nan=False)
    db_replica_check_interval: float = Field(default=2, gt=0, allow_inf_nan=False)
    web_concurrency: int = Field(default=1, ge=1)
    shutdown_timeout: float = Field(default=20, gt=0, allow_inf_nan=False)
    max_body_bytes: int = Field(default=1_048_576, ge=1)

    @field_validator("database_url", mode="after")
    @classmethod
    def _use_async_driver(cls, value: SecretStr) -> SecretStr:
        try:
            url = make_url(value.get_secret_value())
        except ArgumentError:
            raise ValueError(f"is not a database URL; expected e.g. {URL_EXAMPLE}") from None
        driver = ASYNC_DRIVERS.get(url.drivername)
        if driver is None:
            supported = ", ".join(sorted(set(ASYNC_DRIVERS.values())))
            raise ValueError(f"uses unsupported driver {url.drivername!r}; supported: {supported}")
        return SecretStr(url.set(drivername=driver).render_as_string(hide_password=False))

    @field_validator("log_level", "log_format", "db_pool_mode", mode="before")
    @classmethod
    def _lowercase(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("db_pgbouncer", mode="after")
    @classmethod
    def _pgbouncer_needs_postgresql(cls, value: bool, info: ValidationInfo) -> bool:  # noqa: FBT001
        url = info.data.get("database_url")
        if value and url is not None and not url.get_secret_value().startswith("postgresql"):
            raise ValueError(
                "only applies to a PostgreSQL DATABASE_URL (PgBouncer pools PostgreSQL)"
            )
        return value

    @field_validator("database_replica_urls", mode="after")
    @classmethod
    def _replicas_use_postgresql(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        urls = [url.strip() for url in value.get_secret_value().split(",") if url.strip()]
        if not urls:
            return SecretStr("")
        primary = info.data.get("database_url")
        if primary is not None and not primary.get_secret_value().startswith("postgresql"):
            raise ValueError("only applies to a PostgreSQL DATABASE_URL (replicas stream from it)")
        replicas = [cls._use_async_driver(SecretStr(url)).get_secret_value() for url in urls]
        if not all(url.startswith("postgresql") for url in replicas):
            raise ValueError(
                "must name PostgreSQL servers, e.g. postgresql://user:password@replica:5432/app"
            )
        return SecretStr(",".join(replicas))

    @property
    def url(self) -> URL:
        """The database URL; its `repr` and `str` hide the password."""
        return make_url(self.database_url.get_secret_value())

    @property
    def replica_urls(self) -> list[URL]:
        """DATABASE_REPLICA_URLS, one URL per read replica."""
        urls = self.database_replica_urls.get_secret_value()
        return [make_url(url) for url in urls.split(",")] if urls else []


def describe_validation_error(error: ValidationError) -> str:
    """One line per bad variable, naming it; values are left out so no secret is echoed."""
    lines = ["Invalid configuration:"]
    for detail in error.errors(include_url=False, include_input=False):
        variable = str(detail["loc"][0]).upper() if detail["loc"] else "settings"
        message = detail["msg"].removeprefix("Value error, ")
        lines.append(f"  {variable}: {message}")
    return "\n".join(lines)
