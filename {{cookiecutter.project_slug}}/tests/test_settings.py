"""Settings come from the environment, are validated, and never show the password."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from {{ cookiecutter.package_name }}.settings import Settings, describe_validation_error

VARIABLES = (
    "DATABASE_URL",
    "DB_POOL_SIZE",
    "DB_MAX_OVERFLOW",
    "DB_POOL_TIMEOUT",
    "DB_POOL_RECYCLE",
    "DB_POOL_PRE_PING",
    "DB_ECHO",
    "DB_POOL_MODE",
    "DB_LEAK_THRESHOLD",
    "DB_BUDGET_STRICT",
    "DB_APPLICATION_NAME",
    "READY_TIMEOUT",
    "HOST",
    "PORT",
    "LOG_LEVEL",
    "DB_PGBOUNCER",
    "WEB_CONCURRENCY",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in VARIABLES:
        monkeypatch.delenv(variable, raising=False)


def test_defaults_are_the_template_answers() -> None:
    settings = Settings(_env_file=None)

    assert settings.db_pool_size == {{ cookiecutter.pool_size }}
    assert settings.db_max_overflow == {{ cookiecutter.max_overflow }}
    assert settings.db_pool_timeout == {{ cookiecutter.pool_timeout }}
    assert settings.db_pool_mode == "queue"
    assert settings.url.get_backend_name() == "{{ cookiecutter.database }}"
    assert (settings.host, settings.port, settings.log_level) == ("127.0.0.1", 8000, "info")
    assert (settings.db_pgbouncer, settings.web_concurrency) == (False, 1)


def test_every_variable_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "DATABASE_URL": "postgresql+asyncpg://svc:pw@db.internal:6432/prod",
        "DB_POOL_SIZE": "11",
        "DB_MAX_OVERFLOW": "0",
        "DB_POOL_TIMEOUT": "2.5",
        "DB_POOL_RECYCLE": "-1",
        "DB_POOL_PRE_PING": "true",
        "DB_ECHO": "true",
        "DB_POOL_MODE": "NULL",
        "DB_LEAK_THRESHOLD": "0",
        "DB_BUDGET_STRICT": "yes",
        "DB_APPLICATION_NAME": "billing-worker",
        "READY_TIMEOUT": "0.5",
        "HOST": "0.0.0.0",
        "PORT": "9000",
        "LOG_LEVEL": "WARNING",
        "DB_PGBOUNCER": "true",
        "WEB_CONCURRENCY": "4",
    }
    for variable, value in values.items():
        monkeypatch.setenv(variable, value)

    settings = Settings(_env_file=None)

    assert settings.url.host == "db.internal"
    assert (settings.db_pool_size, settings.db_max_overflow) == (11, 0)
    assert settings.db_pool_timeout == 2.5
    assert settings.db_pool_recycle == -1
    assert (settings.db_pool_pre_ping, settings.db_echo) == (True, True)
    assert (settings.db_leak_threshold, settings.db_budget_strict) == (0, True)
    assert (settings.db_application_name, settings.ready_timeout) == ("billing-worker", 0.5)
    assert settings.web_concurrency == 4
    assert (settings.db_pool_mode, settings.host, settings.port, settings.log_level) == (
        "null",
        "0.0.0.0",
        9000,
        "warning",
    )
    assert (settings.db_pgbouncer, settings.web_concurrency) == (True, 4)


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u:p@localhost/app", "postgresql+asyncpg"),
        ("postgres://u:p@localhost/app", "postgresql+asyncpg"),
        ("sqlite:///./app.db", "sqlite+aiosqlite"),
    ],
)
def test_plain_urls_get_the_async_driver(url: str, driver: str) -> None:
    assert Settings(_env_file=None, database_url=url).url.drivername == driver


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DB_POOL_SIZE", "abc"),
        ("DB_POOL_SIZE", "0"),
        ("DB_MAX_OVERFLOW", "-1"),
        ("DB_POOL_TIMEOUT", "-5"),
        ("DB_POOL_TIMEOUT", "nan"),
        ("DB_POOL_RECYCLE", "-2"),
        ("DB_POOL_PRE_PING", "maybe"),
        ("DB_POOL_MODE", "sometimes"),
        ("DATABASE_URL", "not a url"),
        ("DATABASE_URL", "mysql+pymysql://u:p@localhost/app"),
        ("DB_LEAK_THRESHOLD", "-1"),
        ("DB_BUDGET_STRICT", "sometimes"),
        ("DB_APPLICATION_NAME", "x" * 64),
        ("READY_TIMEOUT", "0"),
        ("PORT", "70000"),
        ("LOG_LEVEL", "loud"),
        ("DB_PGBOUNCER", "maybe"),
        ("WEB_CONCURRENCY", "0"),
        ("WEB_CONCURRENCY", "many"),
    ],
)
def test_bad_value_is_reported_by_variable_name(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)

    message = describe_validation_error(caught.value)
    assert message.splitlines()[1].startswith(f"  {variable}: ")


def test_pgbouncer_setting_is_refused_for_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "sqlite+aiosqlite:///./app.db")
    monkeypatch.setenv("DB_PGBOUNCER", "true")

    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)

    message = describe_validation_error(caught.value)
    assert message.splitlines()[1].startswith("  DB_PGBOUNCER: only applies to a PostgreSQL")


def test_password_is_hidden_in_reprs_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://svc:hunter2-secret@db/app")
    settings = Settings(_env_file=None)

    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" not in str(settings.url)

    monkeypatch.setenv("DATABASE_URL", "mysql://svc:hunter2-secret@db/app")
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)
    assert "hunter2-secret" not in describe_validation_error(caught.value)
