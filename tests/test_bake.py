"""Bake every supported combination, check what comes out, and run each project's own tests."""

from __future__ import annotations

import configparser
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import dockerfile
import pytest
import yaml
from conftest import (
    ROOT,
    SUITE_SUMMARIES,
    TEMPLATE_ANSWERS,
    BakeEnvironments,
    check_answer_names,
    project_files,
    run,
    variant_id,
)
from cookiecutter.exceptions import FailedHookException
from generated_suites import SUITE_TIMEOUT, GeneratedSuites

# Each value of each answer at least once; the names are checked against cookiecutter.json.
SUPPORTED: list[dict[str, str]] = [
    {},
    {"database": "postgresql", "pool_size": "10", "git_init": "yes"},
    {
        "project_name": "Billing API",
        "python_version": "3.13",
        "pool_size": "1",
        "max_overflow": "3",
        "pool_timeout": "0.5",
    },
    {
        "database": "postgresql",
        "project_name": 'Café "Ünïcode" Service',
        "project_slug": "cafe-service",
        "description": 'Quotes ", `ticks`, *stars* and \\ survive',
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
    ({"pool_size": "05"}, "pool_size"),
    ({"pool_size": "²"}, "pool_size"),
    ({"max_overflow": "-1"}, "max_overflow"),
    ({"pool_timeout": "0"}, "pool_timeout"),
    ({"pool_timeout": "-3"}, "pool_timeout"),
    ({"pool_timeout": "soon"}, "pool_timeout"),
    ({"pool_timeout": "1e3"}, "pool_timeout"),
    ({"pool_timeout": "inf"}, "pool_timeout"),
    ({"project_name": "Café"}, "project_name"),
    ({"python_version": "3.10"}, "python_version"),
    ({"python_version": "three"}, "python_version"),
    ({"author_email": "nobody"}, "author_email"),
    ({"description": "two\nlines"}, "description"),
]

# The only tests a bake's suite may skip: PgBouncer's, in a SQLite bake (no PostgreSQL to put it
# in front of) or where PgBouncer is not installed and not required; promtool's, Prometheus's and
# kubectl's where they are not installed and not required (REQUIRE_PROMTOOL=1,
# REQUIRE_PROMETHEUS=1, REQUIRE_KUBECTL=1).
# Skips a bake's own suite may report; any other skip fails the run.
ALLOWED_SKIPS = {
    "postgresql": (
        "PgBouncer tests need",
        "Kubernetes tests need",
        "promtool tests need",
        "Prometheus tests need",
        "needs a streaming replica",  # a failure instead under REQUIRE_REPLICA=1 (.ci/run)
    ),
    "sqlite": (
        "PgBouncer tests need",
        "needs PostgreSQL",
        "promtool tests need",
        "Prometheus tests need",
    ),
}
SKIP_REASON = re.compile(r"^SKIPPED \[\d+\] [^:]+:\d+: (.*)$", re.MULTILINE)
# `.cookiecutter.json`, the recorded answers, is a file name, not a leftover.
TEMPLATE_MARKER = re.compile(r"(?<!\$)\{\{|\{%|\bcookiecutter\.(?!json\b)")
# Prometheus and Grafana fill in their own `{{ $labels.pool_name }}` and `{{state}}` there.
OWN_TEMPLATES = "monitoring/"
JINJA_MARKER = re.compile(r"\{%|\bcookiecutter\.(?!json\b)")


def answer(result: Any, name: str) -> str:
    return str(result.context[name])


@pytest.fixture(scope="session", params=SUPPORTED, ids=variant_id)
def baked(request: pytest.FixtureRequest, generated_suites: GeneratedSuites) -> Any:
    """The bake whose suite runs in the background (generated_suites.py) is the one checked here."""
    return generated_suites.bake(request.param)


def test_answer_lists_name_only_real_answers() -> None:
    for answers in [*SUPPORTED, *(answers for answers, _ in REJECTED)]:
        check_answer_names(answers)
    choices = {
        name: values
        for name, values in TEMPLATE_ANSWERS.items()
        if not name.startswith("_") and isinstance(values, list)
    }
    for name, values in choices.items():
        for choice in values:
            assert any(answers.get(name, values[0]) == choice for answers in SUPPORTED), (
                f"{name}={choice} is never baked"
            )


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
        f"{name}:{number}"
        for name, content in project_files(baked.project_path).items()
        for number, line in enumerate(content.decode().splitlines(), start=1)
        if (JINJA_MARKER if name.startswith(OWN_TEMPLATES) else TEMPLATE_MARKER).search(line)
    ]

    assert leftovers == []


def test_only_the_files_that_apply_are_kept(baked: Any) -> None:
    project = baked.project_path

    postgresql = answer(baked, "database") == "postgresql"

    assert (project / "compose.yaml").is_file() == postgresql
    assert (project / "deploy/kubernetes/kustomization.yaml").is_file() == postgresql
    assert (project / "deploy").exists() == postgresql
    assert (project / "tests/test_kubernetes.py").is_file() == postgresql
    assert (project / ".git").is_dir() == (answer(baked, "git_init") == "yes")
    for name in (
        "Dockerfile",
        ".dockerignore",
        "Makefile",
        ".env.example",
        ".editorconfig",
        ".gitignore",
        ".pre-commit-config.yaml",
        ".github/workflows/ci.yml",
        ".cookiecutter.json",
        "monitoring/alerts.yml",
        "monitoring/alerts.test.yml",
        "monitoring/grafana-dashboard.json",
        "tests/test_monitoring.py",
        "requirements.lock",
        "requirements-dev.lock",
    ):
        assert (project / name).is_file(), name


def test_git_init_commits_only_when_git_knows_the_author(baked: Any) -> None:
    project = baked.project_path
    if answer(baked, "git_init") == "no":
        assert not (project / ".git").exists()
        return
    knows_author = all(
        run(["git", "config", "--get", key], cwd=project).stdout.strip()
        for key in ("user.name", "user.email")
    )

    head = run(["git", "rev-parse", "--verify", "--quiet", "HEAD"], cwd=project)
    status = run(["git", "status", "--porcelain"], cwd=project).stdout

    assert (head.returncode == 0) == knows_author
    if knows_author:
        assert status == ""


def test_yaml_files_parse(baked: Any) -> None:
    names = [name for name in project_files(baked.project_path) if name.endswith((".yml", ".yaml"))]

    assert ".github/workflows/ci.yml" in names
    for name in names:
        assert isinstance(yaml.safe_load((baked.project_path / name).read_text()), dict), name


def test_ci_workflow_lints_migrates_and_tests_on_postgresql(baked: Any) -> None:
    workflow = yaml.safe_load((baked.project_path / ".github/workflows/ci.yml").read_text())
    # PyYAML reads the key `on` as True (YAML 1.1).
    triggers = workflow.get("on", workflow.get(True))
    (job,) = workflow["jobs"].values()
    (service,) = job["services"].values()
    database = service["env"]["POSTGRES_DB"]
    runs = [step["run"] for step in job["steps"] if "run" in step]
    python = next(step for step in job["steps"] if "setup-python" in step.get("uses", ""))
    migrate = next(step for step in job["steps"] if "alembic" in step.get("run", ""))

    assert {"push", "pull_request"} <= set(triggers)
    assert service["image"].split(":")[0] == "postgres"
    assert "5432:5432" in service["ports"]
    assert "pg_isready" in service["options"]
    assert job["env"]["REQUIRE_POSTGRES"] == "1"
    assert job["env"]["TEST_DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert job["env"]["TEST_DATABASE_URL"].endswith(f"@127.0.0.1:5432/{database}")
    assert migrate["env"]["DATABASE_URL"] == job["env"]["TEST_DATABASE_URL"]
    assert str(python["with"]["python-version"]) == answer(baked, "python_version")
    assert python["with"]["cache-dependency-path"] == "requirements-dev.lock"
    assert runs == [
        "sudo apt-get update && sudo apt-get install -y pgbouncer",
        "pip install --require-hashes -r requirements-dev.lock && pip install --no-deps .",
        "python -m ruff check .",
        "python -m ruff format --check .",
        "python -m mypy",
        "python -m alembic upgrade head",
        "python -m pytest",
    ]


def test_compose_runs_the_service_with_postgresql_and_optional_pgbouncer(baked: Any) -> None:
    if answer(baked, "database") != "postgresql":
        assert not (baked.project_path / "compose.yaml").exists()
        assert "compose" not in (baked.project_path / "README.md").read_text()
        return
    compose = yaml.safe_load((baked.project_path / "compose.yaml").read_text())
    services = compose["services"]
    db, app, migrate, pgbouncer, app_pgbouncer = (
        services[name] for name in ("db", "app", "migrate", "pgbouncer", "app-pgbouncer")
    )
    credentials = db["environment"]
    url = (
        f"postgresql+asyncpg://{credentials['POSTGRES_USER']}:{credentials['POSTGRES_PASSWORD']}"
        f"@{{host}}:5432/{credentials['POSTGRES_DB']}"
    )

    assert db["image"].split(":")[0] == "postgres"
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert migrate["build"] == app["build"] == app_pgbouncer["build"] == "."
    assert migrate["command"] == ["python", "-m", "alembic", "upgrade", "head"]
    assert migrate["environment"]["DATABASE_URL"] == url.format(host="db")
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
    assert app["environment"]["DATABASE_URL"] == url.format(host="db")
    assert app["environment"].get("DB_PGBOUNCER", "false") == "false"
    assert app["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "profiles" not in app
    assert "profiles" not in db
    assert pgbouncer["profiles"] == app_pgbouncer["profiles"] == ["pgbouncer"]
    assert pgbouncer["environment"]["DB_HOST"] == "db"
    assert pgbouncer["environment"]["POOL_MODE"] == "transaction"
    # Behind PgBouncer the service must run with DB_PGBOUNCER=true (the README's rule).
    assert app_pgbouncer["environment"]["DATABASE_URL"] == url.format(host="pgbouncer")
    assert app_pgbouncer["environment"]["DB_PGBOUNCER"] == "true"
    assert app_pgbouncer["depends_on"]["pgbouncer"]["condition"] == "service_started"
    assert app_pgbouncer["depends_on"]["migrate"] == app["depends_on"]["migrate"]
    assert {app["ports"][0].rsplit(":", 1)[0], app_pgbouncer["ports"][0].rsplit(":", 1)[0]} == {
        "127.0.0.1:8000",
        "127.0.0.1:8001",
    }
    for name, service in services.items():
        if "image" in service:
            assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+[\w.-]*", service["image"]), name


def test_dockerfile_builds_a_slim_non_root_image_without_dev_tools(baked: Any) -> None:
    arguments, stages = dockerfile.parse(baked.project_path / "Dockerfile")
    build, runtime = stages
    runs = " ".join(instruction.arguments for instruction in build.all("RUN"))
    environment = runtime.environment()
    (healthcheck,) = runtime.all("HEALTHCHECK")
    (user,) = runtime.all("USER")
    (cmd,) = runtime.all("CMD")
    ignored = (baked.project_path / ".dockerignore").read_text().split()

    assert arguments["PYTHON_VERSION"] == answer(baked, "python_version")
    assert build.base == runtime.base == "python:${PYTHON_VERSION}-slim"
    assert build.name == "build"
    assert "pip install --require-hashes --only-binary=:all: -r requirements.lock" in runs
    assert "pip install --no-deps ." in runs
    assert "[dev]" not in (baked.project_path / "Dockerfile").read_text()
    assert all(not instruction.arguments.startswith("--from") for instruction in build.all("COPY"))
    assert ("/opt/venv", "/opt/venv", {"from": "build"}) in [
        (sources[0], destination, options) for sources, destination, options in runtime.copies()
    ]
    assert user.arguments not in ("root", "0")
    assert environment["HOST"] == "0.0.0.0"
    assert environment["PATH"].startswith("/opt/venv/bin:")
    assert cmd.command() == ["python", "-m", answer(baked, "package_name")]
    assert "/health/live" in healthcheck.arguments
    assert " CMD " in f" {healthcheck.arguments} "
    for sources, _, options in build.copies() + runtime.copies():
        if "from" not in options:
            assert not set(sources) & set(ignored), sources


def test_makefile_targets_are_the_documented_commands(baked: Any) -> None:
    readme = (baked.project_path / "README.md").read_text()
    documented = dict(re.findall(r"^\| `make (\w+)` \| `([^`]+)` \|$", readme, flags=re.MULTILINE))

    assert set(documented) == {"run", "test", "lint", "typecheck", "format", "migrate"}
    for target, command in documented.items():
        dry_run = run(["make", "--no-print-directory", "-n", target], cwd=baked.project_path)
        assert dry_run.returncode == 0, dry_run.stderr
        assert " && ".join(dry_run.stdout.strip().splitlines()) == command


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
    assert {"asyncpg>=0.32", "aiosqlite>=0.22", "fastapi>=0.165", "prometheus-client>=0.26"} <= set(
        project["dependencies"]
    )
    dev = {
        re.split(r"[<>=\[]", requirement)[0]
        for requirement in project["optional-dependencies"]["dev"]
    }
    assert {"pytest", "pytest-asyncio", "pytest-timeout", "httpx", "asgi-lifespan"} <= dev
    assert {"ruff", "mypy"} <= dev
    assert pyproject["tool"]["pytest"]["ini_options"]["timeout"] > 0
    bench = {
        re.split(r"[<>=\[]", requirement)[0]
        for requirement in project["optional-dependencies"]["bench"]
    }
    assert bench == {"matplotlib", "httpx"}
    assert f"{project['name']}[bench,otel]" in project["optional-dependencies"]["dev"]
    otel = {
        re.split(r"[<>=\[]", requirement)[0]
        for requirement in project["optional-dependencies"]["otel"]
    }
    assert otel == {
        "opentelemetry-sdk",
        "opentelemetry-exporter-otlp-proto-http",
        "opentelemetry-instrumentation-fastapi",
        "opentelemetry-instrumentation-sqlalchemy",
    }
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


def test_settings_defaults_are_the_answers(baked: Any, bake_environments: BakeEnvironments) -> None:
    """What the baked service reads with nothing set in its environment."""
    environment = bake_environments.for_version(answer(baked, "python_version"))
    environment.install(baked.project_path)
    program = (
        "import os\n"
        "for name in [n for n in os.environ if n.startswith('DB_') or n == 'DATABASE_URL']:\n"
        "    del os.environ[name]\n"
        "from {package}.settings import Settings\n"
        "s = Settings(_env_file=None)\n"
        "print(s.db_pool_size, s.db_max_overflow, s.db_pool_timeout, s.url.drivername)\n"
    ).format(package=answer(baked, "package_name"))
    result = environment.run("python", "-c", program)

    assert result.returncode == 0, result.stderr
    size, overflow, timeout, driver = result.stdout.split()
    assert int(size) == int(answer(baked, "pool_size"))
    assert int(overflow) == int(answer(baked, "max_overflow"))
    assert float(timeout) == float(answer(baked, "pool_timeout"))
    database = answer(baked, "database")
    assert driver == ("postgresql+asyncpg" if database == "postgresql" else "sqlite+aiosqlite")


def test_ruff_passes(baked: Any) -> None:
    ruff = [sys.executable, "-m", "ruff"]
    check = run([*ruff, "check", "--no-cache", "."], cwd=baked.project_path)
    formatted = run([*ruff, "format", "--no-cache", "--check", "."], cwd=baked.project_path)

    assert check.returncode == 0, check.stdout
    assert formatted.returncode == 0, formatted.stdout


def test_mypy_strict_passes(baked: Any, bake_environments: BakeEnvironments) -> None:
    environment = bake_environments.for_version(answer(baked, "python_version"))
    environment.install(baked.project_path)
    mypy = tomllib.loads((baked.project_path / "pyproject.toml").read_text())["tool"]["mypy"]

    result = run(
        [str(environment.python), "-m", "mypy", "--cache-dir", str(environment.mypy_cache)],
        cwd=baked.project_path,
        timeout=600,
    )

    assert mypy["strict"] is True
    assert {"src", "tests", "migrations"} <= set(mypy["files"])
    assert result.returncode == 0, result.stdout
    assert result.stdout.startswith("Success: no issues found")


def test_recorded_answers_bake_the_same_project_again(baked: Any, tmp_path: Path) -> None:
    recorded = json.loads((baked.project_path / ".cookiecutter.json").read_text())["cookiecutter"]
    config = tmp_path / "cookiecutter-config.yaml"
    config.write_text(
        f"cookiecutters_dir: {tmp_path / 'cookiecutters'}\nreplay_dir: {tmp_path / 'replay'}\n"
    )

    result = run(
        [
            sys.executable,
            "-m",
            "cookiecutter",
            "--config-file",
            str(config),
            "--replay-file",
            str(baked.project_path / ".cookiecutter.json"),
            "--output-dir",
            str(tmp_path / "again"),
            str(ROOT),
        ],
        stdin=subprocess.DEVNULL,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    for name in (name for name in TEMPLATE_ANSWERS if not name.startswith("_")):
        assert recorded[name] == baked.context[name]
    assert not {"_output_dir", "_repo_dir", "_template", "_checkout"} & set(recorded)
    again = tmp_path / "again" / answer(baked, "project_slug")
    assert project_files(again) == project_files(baked.project_path)


def test_generated_test_suite_passes(
    baked: Any, generated_suites: GeneratedSuites, request: pytest.FixtureRequest
) -> None:
    """The suite ran beside the other tests since the session started (generated_suites.py): on
    PostgreSQL bakes against the real server, in a database of its own."""
    result = generated_suites.outcome(request.node.callspec.params["baked"])

    SUITE_SUMMARIES[request.node.callspec.id] = f"{result.summary} ({result.seconds:.0f} s)"
    assert result.returncode is not None, (
        f"the suite was stopped after {SUITE_TIMEOUT} s: " + result.stdout[-5000:]
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert " passed" in result.summary
    skip_reasons = SKIP_REASON.findall(result.stdout)
    allowed = ALLOWED_SKIPS[answer(baked, "database")]
    assert ("skipped" in result.summary) == bool(skip_reasons), result.stdout[-3000:]
    assert all(reason.startswith(allowed) for reason in skip_reasons), skip_reasons


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
    recorded = json.loads((tmp_path / "my-service" / ".cookiecutter.json").read_text())
    assert recorded["cookiecutter"]["database"] == "postgresql"
    assert recorded["cookiecutter"]["pool_size"] == "10"


def test_template_workflow_is_ci_run_with_every_baked_python() -> None:
    """One CI definition: the workflow calls .ci/run, which installs and requires the rest."""
    workflow = yaml.safe_load((ROOT / ".github/workflows/test.yml").read_text())
    (job,) = workflow["jobs"].values()
    python = next(step for step in job["steps"] if "setup-python" in step.get("uses", ""))
    versions = python["with"]["python-version"].split()
    baked_versions = {
        answers.get("python_version", TEMPLATE_ANSWERS["python_version"]) for answers in SUPPORTED
    }

    assert [step["run"] for step in job["steps"] if "run" in step] == [".ci/run"]
    assert "services" not in job
    assert job["env"]["REQUIRE_PYTHONS"] == "1"
    assert baked_versions <= set(versions)
    assert versions[-1] == TEMPLATE_ANSWERS["python_version"]
