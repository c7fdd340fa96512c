"""The baked pre-commit hooks run ruff, ruff format and mypy from the project's environment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import BakeEnvironments, run


@pytest.fixture(scope="module")
def project(cookies_session: Any, bake_environments: BakeEnvironments) -> Any:
    result = cookies_session.bake(extra_context={})
    assert result.exit_code == 0, result.exception
    environment = bake_environments.for_version(str(result.context["python_version"]))
    environment.install(result.project_path)
    for command in (["init", "--quiet"], ["add", "--all"]):
        assert run(["git", *command], cwd=result.project_path).returncode == 0
    return result


def pre_commit(project: Any, environment: Any, home: Path) -> Any:
    return environment.run(
        "pre-commit",
        "run",
        "--all-files",
        cwd=project.project_path,
        env={"PRE_COMMIT_HOME": str(home), "MYPY_CACHE_DIR": str(environment.mypy_cache)},
        timeout=600,
    )


def test_hooks_are_ruff_ruff_format_and_mypy(project: Any) -> None:
    config = yaml.safe_load((project.project_path / ".pre-commit-config.yaml").read_text())

    hooks = [hook["id"] for repository in config["repos"] for hook in repository["hooks"]]

    assert hooks == ["ruff", "ruff-format", "mypy"]


def test_hooks_pass_on_the_baked_project_and_catch_a_type_error(
    project: Any, bake_environments: BakeEnvironments, tmp_path: Path
) -> None:
    environment = bake_environments.for_version(str(project.context["python_version"]))
    package = project.project_path / "src" / str(project.context["package_name"])

    clean = pre_commit(project, environment, tmp_path / "pre-commit")
    broken = package / "broken.py"
    broken.write_text('def answer() -> int:\n    return "forty-two"\n')
    try:
        run(["git", "add", str(broken)], cwd=project.project_path)
        failing = pre_commit(project, environment, tmp_path / "pre-commit")
    finally:
        broken.unlink()
        run(["git", "add", "--all"], cwd=project.project_path)

    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.count("Passed") == 3
    assert failing.returncode != 0
    assert "broken.py" in failing.stdout
    assert "Incompatible return value type" in failing.stdout
