"""The update path: cruft bakes a project from this template and later brings template changes in.

Each test works on a git repository holding the template as it is in this working tree, so what
is tested is the template being changed, not its last commit.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, project_files, run

IGNORED = shutil.ignore_patterns(
    ".git", ".venv", ".cache", "build", "__pycache__", ".pytest_cache", ".ruff_cache"
)
ANSWERS = {"project_name": "Billing API", "database": "postgresql"}


@pytest.fixture
def git_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """git knows an author from this file only, for the template's commits and the bake's."""
    config = tmp_path / "gitconfig"
    config.write_text("[user]\n\tname = Template Tests\n\temail = tests@example.com\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


def git(repository: Path, *arguments: str) -> str:
    result = run(["git", *arguments], cwd=repository)
    assert result.returncode == 0, result.stderr
    return result.stdout


def cruft(*arguments: str, cwd: Path) -> Any:
    return run([sys.executable, "-m", "cruft", *arguments], cwd=cwd, timeout=300)


@pytest.fixture
def template(tmp_path: Path, git_environment: None) -> Path:
    repository = tmp_path / "template"
    shutil.copytree(ROOT, repository, ignore=IGNORED)
    git(repository, "init", "--quiet", "--initial-branch=main")
    git(repository, "add", "--all")
    git(repository, "commit", "--quiet", "--message", "The template as tested")
    return repository


def cruft_create(template: Path, output: Path, answers: dict[str, str]) -> Path:
    output.mkdir()
    created = cruft(
        "create",
        "--no-input",
        "--output-dir",
        str(output),
        "--extra-context",
        json.dumps(answers),
        str(template),
        cwd=output,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    (project,) = output.iterdir()
    return project


def test_cruft_create_bakes_what_cookiecutter_bakes(
    template: Path, tmp_path: Path, cookies: Any
) -> None:
    project = cruft_create(template, tmp_path / "cruft", ANSWERS)
    baked = cookies.bake(extra_context=ANSWERS)
    state = json.loads((project / ".cruft.json").read_text())

    files = project_files(project)
    del files[".cruft.json"]
    assert files == project_files(baked.project_path)
    assert state["template"] == str(template)
    assert state["commit"] == git(template, "rev-parse", "HEAD").strip()
    assert state["context"]["cookiecutter"]["project_name"] == "Billing API"


def test_cruft_update_brings_a_template_change_into_a_baked_project(
    template: Path, tmp_path: Path
) -> None:
    project = cruft_create(template, tmp_path / "cruft", {**ANSWERS, "git_init": "yes"})
    git(project, "add", ".cruft.json")
    git(project, "commit", "--quiet", "--message", "Record the template for cruft")
    recorded_answers = (project / ".cookiecutter.json").read_text()
    # The project's own change, and the template's: both must survive the update.
    with (project / ".gitignore").open("a") as gitignore:
        gitignore.write("local-notes/\n")
    git(project, "commit", "--quiet", "--all", "--message", "Ignore my notes")
    generated = template / "{{cookiecutter.project_slug}}"
    gitignore = generated / ".gitignore"
    gitignore.write_text("# Kept out of git\n" + gitignore.read_text())
    (generated / "CHANGELOG.md").write_text("# {{ cookiecutter.project_name }} changes\n")
    git(template, "add", "--all")
    git(template, "commit", "--quiet", "--message", "Add a changelog")

    behind = cruft("check", cwd=project)
    updated = cruft("update", "--skip-apply-ask", cwd=project)
    after = cruft("check", cwd=project)

    assert behind.returncode != 0
    assert updated.returncode == 0, updated.stdout + updated.stderr
    assert after.returncode == 0, after.stdout
    assert (project / "CHANGELOG.md").read_text() == "# Billing API changes\n"
    lines = (project / ".gitignore").read_text().splitlines()
    assert lines[0] == "# Kept out of git"
    assert lines[-1] == "local-notes/"
    assert (project / ".cookiecutter.json").read_text() == recorded_answers
    changed = {line[3:] for line in git(project, "status", "--porcelain").splitlines()}
    assert changed == {".cruft.json", ".gitignore", "CHANGELOG.md"}
    state = json.loads((project / ".cruft.json").read_text())
    assert state["commit"] == git(template, "rev-parse", "HEAD").strip()
