"""Bake every supported combination, check what comes out, and run each project's own tests."""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    ROOT,
    SUITE_SUMMARIES,
    TEMPLATE_ANSWERS,
    BakeEnvironments,
    check_answer_names,
    run,
    variant_id,
)
from cookiecutter.exceptions import FailedHookException

# Each value of each answer at least once; the names are checked against cookiecutter.json.
SUPPORTED: list[dict[str, str]] = [
    {},
    {"database": "postgresql", "pool_size": "10"},
    {
        "project_name": "Billing API",
        "python_version": "3.13",
        "pool_size": "1",
        "max_overflow": "0",
        "pool_timeout": "0.5",
    },
    {
        "database": "postgresql",
        "project_name": 'Café "Ünïcode" Service',
        "project_slug": "cafe-service",
        "description": 'Quotes " and backslashes \\ survive',
        "author_name": "Zoë O'Brien",
        "author_email": "zoe@example.org",
        "python_version": "3.12",
    },
]

# Answers that must stop the bake before anything is written, with the answer they must name.
REJECTED: list[tuple[dict[str, str], str]] = [
    ({"project_slug": "My Service"}, "project_slug"),
    ({"project_slug": "../escape"}, "project_slug"),
    ({"package_name": "my-service"}, "package_name"),
    ({"package_name": "class"}, "package_name"),
    ({"package_name": "fastapi"}, "package_name"),
    ({"package_name": "sqlalchemy"}, "package_name"),
    ({"package_name": "json"}, "package_name"),
    ({"pool_size": "0"}, "pool_size"),
    ({"pool_size": "five"}, "pool_size"),
    ({"pool_size": "2.5"}, "pool_size"),
    ({"max_overflow": "-1"}, "max_overflow"),
    ({"pool_timeout": "0"}, "pool_timeout"),
    ({"pool_timeout": "-3"}, "pool_timeout"),
    ({"pool_timeout": "soon"}, "pool_timeout"),
    ({"python_version": "3.10"}, "python_version"),
    ({"python_version": "three"}, "python_version"),
    ({"author_email": "nobody"}, "author_email"),
    ({"description": "two\nlines"}, "description"),
]

TEMPLATE_MARKER = re.compile(r"(?<!\$)\{\{|\{%|cookiecutter\.")


def answer(result: Any, name: str) -> str:
    return str(result.context[name])


@pytest.fixture(scope="session", params=SUPPORTED, ids=variant_id)
def baked(request: pytest.FixtureRequest, cookies_session: Any) -> Any:
    check_answer_names(request.param)
    return cookies_session.bake(extra_context=request.param)


def test_answer_lists_name_only_real_answers() -> None:
    for answers in [*SUPPORTED, *(answers for answers, _ in REJECTED)]:
        check_answer_names(answers)
    for choice in TEMPLATE_ANSWERS["database"]:
        assert any(answers.get("database", "sqlite") == choice for answers in SUPPORTED)


def test_every_answer_has_a_readable_prompt() -> None:
    questions = {name for name in TEMPLATE_ANSWERS if not name.startswith("_")}

    assert questions == set(TEMPLATE_ANSWERS["__prompts__"])


def test_bakes_without_error(baked: Any) -> None:
    assert baked.exit_code == 0
    assert baked.exception is None
    assert baked.project_path.name == answer(baked, "project_slug")
    assert (baked.project_path / "src" / answer(baked, "package_name") / "__init__.py").is_file()


def test_no_template_syntax_is_left(baked: Any) -> None:
    leftovers = [
        f"{path.relative_to(baked.project_path)}:{number}"
        for path in baked.project_path.rglob("*")
        if path.is_file()
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if TEMPLATE_MARKER.search(line)
    ]

    assert leftovers == []


def test_pyproject_says_what_the_answers_say(baked: Any) -> None:
    pyproject = tomllib.loads((baked.project_path / "pyproject.toml").read_text())
    project = pyproject["project"]
    version = answer(baked, "python_version")

    assert project["name"] == answer(baked, "project_slug")
    assert project["description"] == answer(baked, "description")
    assert project["authors"] == [
        {"name": answer(baked, "author_name"), "email": answer(baked, "author_email")}
    ]
    assert project["requires-python"] == f">={version}"
    assert "sqlalchemy[asyncio]>=2.1.9" in project["dependencies"]
    assert {"asyncpg>=0.32", "aiosqlite>=0.22", "fastapi>=0.165"} <= set(project["dependencies"])
    dev = {
        re.split(r"[<>=\[]", requirement)[0]
        for requirement in project["optional-dependencies"]["dev"]
    }
    assert {"pytest", "pytest-asyncio", "httpx", "asgi-lifespan", "ruff", "mypy"} <= dev
    bench = {
        re.split(r"[<>=\[]", requirement)[0]
        for requirement in project["optional-dependencies"]["bench"]
    }
    assert bench == {"matplotlib", "httpx"}
    assert f"{project['name']}[bench]" in project["optional-dependencies"]["dev"]
    assert (
        project["scripts"][answer(baked, "project_slug")]
        == f"{answer(baked, 'package_name')}.__main__:main"
    )
    assert pyproject["tool"]["ruff"]["target-version"] == "py" + version.replace(".", "")
    assert pyproject["tool"]["mypy"]["python_version"] == version


def test_alembic_ini_points_at_the_migrations(baked: Any) -> None:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(baked.project_path / "alembic.ini")

    assert ini["alembic"]["script_location"] == "%(here)s/migrations"
    assert (baked.project_path / "migrations" / "env.py").is_file()


def test_settings_defaults_are_the_answers(baked: Any) -> None:
    settings = (
        baked.project_path / "src" / answer(baked, "package_name") / "settings.py"
    ).read_text()
    scheme = (
        "postgresql+asyncpg://"
        if answer(baked, "database") == "postgresql"
        else "sqlite+aiosqlite://"
    )

    assert f"db_pool_size: int = Field(default={answer(baked, 'pool_size')}," in settings
    assert f"db_max_overflow: int = Field(default={answer(baked, 'max_overflow')}," in settings
    assert f"db_pool_timeout: float = Field(default={answer(baked, 'pool_timeout')}," in settings
    assert f'DEFAULT_DATABASE_URL = "{scheme}' in settings


def test_ruff_passes(baked: Any) -> None:
    ruff = [sys.executable, "-m", "ruff"]
    check = run([*ruff, "check", "--no-cache", "."], cwd=baked.project_path)
    formatted = run([*ruff, "format", "--no-cache", "--check", "."], cwd=baked.project_path)

    assert check.returncode == 0, check.stdout
    assert formatted.returncode == 0, formatted.stdout


def test_generated_test_suite_passes(
    baked: Any, bake_environments: BakeEnvironments, request: pytest.FixtureRequest
) -> None:
    environment_of_bake = bake_environments.for_version(answer(baked, "python_version"))
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"TEST_DATABASE_URL", "REQUIRE_POSTGRES", "DATABASE_URL"}
    }
    if answer(baked, "database") == "postgresql":
        environment["TEST_DATABASE_URL"] = request.getfixturevalue("require_postgres")
        environment["REQUIRE_POSTGRES"] = "1"
    environment_of_bake.install(baked.project_path)

    result = run(
        [str(environment_of_bake.python), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=baked.project_path,
        env=environment,
        timeout=900,
    )

    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "no output"
    SUITE_SUMMARIES[request.node.callspec.id] = summary
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert " passed" in summary
    assert "skipped" not in summary


@pytest.mark.parametrize(("answers", "name"), REJECTED, ids=[variant_id(a) for a, _ in REJECTED])
def test_bad_answer_is_rejected_before_anything_is_written(
    cookies: Any,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    answers: dict[str, str],
    name: str,
) -> None:
    check_answer_names(answers)

    result = cookies.bake(extra_context=answers)

    assert result.exit_code != 0
    assert isinstance(result.exception, FailedHookException)
    message = capfd.readouterr().err
    assert f"ERROR: {name}=" in message
    assert "Example of a good value:" in message
    assert [path for path in (tmp_path / "cookies").rglob("*") if path.is_file()] == []


def test_unknown_database_is_rejected(cookies: Any, tmp_path: Path) -> None:
    result = cookies.bake(extra_context={"database": "mysql"})

    assert result.exit_code != 0
    assert "mysql" in str(result.exception)
    assert [path for path in (tmp_path / "cookies").rglob("*") if path.is_file()] == []


def test_command_line_answers_reach_the_project(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cookiecutter",
            "--no-input",
            "--output-dir",
            str(tmp_path),
            str(ROOT),
            "database=postgresql",
            "pool_size=10",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    settings = (tmp_path / "my-service" / "src" / "my_service" / "settings.py").read_text()
    assert "db_pool_size: int = Field(default=10," in settings
    assert 'DEFAULT_DATABASE_URL = "postgresql+asyncpg://' in settings
