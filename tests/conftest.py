"""Template test set-up: the answer-list guard, the bakes' venvs, PostgreSQL, the baked suites."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

if TYPE_CHECKING:
    from generated_suites import GeneratedSuites

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_ANSWERS: dict[str, Any] = json.loads((ROOT / "cookiecutter.json").read_text())
LOCK_DEV = "requirements-dev.lock"
# Why a bake's test cannot run here (a skip, or a failure under REQUIRE_PYTHONS / REQUIRE_POSTGRES).
PYTHON_MISSING = "no Python {version} interpreter found to test a bake that requires it"
POSTGRES_MISSING = "PostgreSQL bakes need TEST_DATABASE_URL (scripts/test sets it up)"
BAKE_VENVS = Path(os.environ.get("BAKE_VENVS", ROOT / ".cache" / "bake-venvs"))


def check_answer_names(answers: dict[str, str]) -> None:
    """cookiecutter silently ignores unknown extra_context keys: a typo would test the defaults."""
    unknown = set(answers) - {name for name in TEMPLATE_ANSWERS if not name.startswith("_")}
    assert not unknown, f"not template answers: {sorted(unknown)}"


def variant_id(answers: dict[str, str]) -> str:
    return "-".join(f"{name}:{value}" for name, value in answers.items()) or "defaults"


def postgres_url() -> str | None:
    return os.environ.get("TEST_DATABASE_URL")


def find_pgbouncer() -> str | None:
    """As the generated tests look for it: `PGBOUNCER`, PATH, or Debian's /usr/sbin."""
    found = os.environ.get("PGBOUNCER") or shutil.which("pgbouncer")
    if found:
        return found
    return "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").is_file() else None


def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)


def project_files(project: Path) -> dict[str, bytes]:
    """Every file of a baked project by relative path, leaving out git's own repository."""
    return {
        path.relative_to(project).as_posix(): path.read_bytes()
        for path in sorted(project.rglob("*"))
        if path.is_file() and ".git" not in path.relative_to(project).parts
    }


def find_python(version: str) -> str | None:
    """An interpreter for `version`: on PATH, or installed by pyenv."""
    candidates = [shutil.which(f"python{version}")]
    candidates += sorted(
        str(path) for path in Path.home().glob(f".pyenv/versions/{version}*/bin/python{version}")
    )
    for candidate in filter(None, candidates):
        if run([candidate, "-c", "import sys; print(sys.version)"]).returncode == 0:
            return candidate
    return None


def uv() -> str:
    """The uv that requirements-dev.txt installs next to this interpreter."""
    return str(Path(sys.executable).with_name("uv"))


class BakeEnvironment:
    """A virtual environment for bakes on one Python version: the first bake brings the
    dependencies from its lock (the same for every variant, with the `bench` extra), each later
    one installs only itself. uv installs them: the same pins and hashes as pip, in seconds
    instead of half a minute a venv."""

    def __init__(self, path: Path, interpreter: str) -> None:
        self.path = path
        self.python = path / "bin" / "python"
        self.bin = path / "bin"
        self.interpreter = interpreter
        self.mypy_cache = path / "mypy-cache"
        self.has_dependencies = False
        self.installed: Path | None = None

    def create(self) -> None:
        if not self.python.exists():
            result = run([self.interpreter, "-m", "venv", str(self.path)])
            assert result.returncode == 0, result.stderr
        self.uv_pip_install("hatchling>=1.27")

    def uv_pip_install(self, *arguments: str) -> None:
        # Compiled: with PYTHONDONTWRITEBYTECODE set, every server a suite starts would compile
        # its dependencies again.
        options = ["--quiet", "--compile-bytecode", "--python", str(self.python)]
        result = run([uv(), "pip", "install", *options, *arguments])
        assert result.returncode == 0, result.stdout + result.stderr

    def install(self, project: Path) -> None:
        if self.installed == project:
            return
        if not self.has_dependencies:
            # As the baked CI installs: the locked versions, then the project without its deps.
            self.uv_pip_install("--require-hashes", "-r", str(project / LOCK_DEV))
            self.has_dependencies = True
        self.uv_pip_install("--no-deps", "--no-build-isolation", "--reinstall", str(project))
        self.installed = project

    def run(self, *command: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """A command with this environment's tools first on PATH, as if it were activated."""
        environment = {**os.environ, **kwargs.pop("env", {})}
        environment["PATH"] = f"{self.bin}{os.pathsep}{environment.get('PATH', '')}"
        environment["VIRTUAL_ENV"] = str(self.path)
        return run(list(command), env=environment, **kwargs)


class BakeEnvironments:
    """One environment per Python version for the template tests, which use them one at a time;
    a generated suite, which runs beside them, gets one of its own (tests/generated_suites.py)."""

    def __init__(self) -> None:
        self._by_version: dict[str, BakeEnvironment] = {}

    def for_version(self, version: str) -> BakeEnvironment:
        if version not in self._by_version:
            interpreter = find_python(version)
            if interpreter is None:
                skip_unless_required(
                    PYTHON_MISSING.format(version=version),
                    "REQUIRE_PYTHONS",
                )
            environment = BakeEnvironment(BAKE_VENVS / version, interpreter)
            environment.create()
            self._by_version[version] = environment
        return self._by_version[version]


@pytest.fixture(scope="session")
def bake_environments() -> BakeEnvironments:
    return BakeEnvironments()


def skip_unless_required(reason: str, variable: str) -> NoReturn:
    """Skip with the reason shown, or fail when `variable`=1 says the thing is required (CI)."""
    if os.environ.get(variable) == "1":
        pytest.fail(f"{reason}; {variable}=1 makes this a failure")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def require_postgres() -> str:
    url = postgres_url()
    if url:
        return url
    skip_unless_required(POSTGRES_MISSING, "REQUIRE_POSTGRES")


@pytest.fixture(scope="session")
def require_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk:
        return wrk
    skip_unless_required(
        "the benchmark test needs wrk (apt-get install wrk; .ci/run installs it)", "REQUIRE_WRK"
    )


SUITE_TEST = "test_generated_test_suite_passes"


@pytest.hookimpl(trylast=True)  # after pytest has grouped the tests by their session fixtures
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests that wait for the baked suites go last, so the others run while the suites do."""
    items.sort(key=lambda item: getattr(item, "originalname", None) == SUITE_TEST)


@pytest.fixture(scope="session", autouse=True)
def generated_suites(
    request: pytest.FixtureRequest, cookies_session: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GeneratedSuites]:
    """Starts the selected baked suites as the session starts; they run beside the other tests."""
    from generated_suites import GeneratedSuites, jobs  # here: it imports this module

    selected = [
        item.callspec.params["baked"]
        for item in request.session.items
        if getattr(item, "originalname", None) == SUITE_TEST
    ]
    workdir = tmp_path_factory.mktemp("suites")
    suites = GeneratedSuites(cookies_session, workdir, jobs(len(selected)))
    for answers in selected:
        suites.start(answers)
    yield suites
    suites.close()


@pytest.fixture(scope="session")
def default_project(cookies_session: Any) -> Path:
    """One bake with every default answer (SQLite), shared by the modules that only read it."""
    result = cookies_session.bake(extra_context={})
    assert result.exit_code == 0, result.exception
    return Path(result.project_path)


def pytest_report_header() -> list[str]:
    return [
        f"python: {sys.executable}",
        f"bake venvs: {BAKE_VENVS}",
        f"TEST_DATABASE_URL set: {bool(postgres_url())}",
        f"pgbouncer: {find_pgbouncer()}",
    ]


SUITE_SUMMARIES: dict[str, str] = {}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SUITE_SUMMARIES:
        terminalreporter.section("generated project suites")
        for variant, summary in SUITE_SUMMARIES.items():
            terminalreporter.write_line(f"{variant}: {summary}")
