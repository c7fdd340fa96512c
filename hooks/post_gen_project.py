"""Finish a freshly baked project and tell the user what to run next."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

INITIAL_COMMIT_MESSAGE = "Bake the project from the pooled FastAPI service template"


def files_that_do_not_apply(answers: Mapping[str, object]) -> list[str]:
    """Whole files and folders that only make sense for other answers."""
    if answers["database"] != "postgresql":
        # Their whole point is running the service next to PostgreSQL (and PgBouncer): a SQLite
        # file next to each pod of a Deployment would be a database per pod.
        return ["compose.yaml", "deploy", "tests/test_kubernetes.py"]
    return []


def remove_files(project: Path, names: list[str]) -> None:
    for name in names:
        path = project / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def git(project: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *arguments], cwd=project, capture_output=True, text=True, check=False
    )


def git_knows_the_author(project: Path) -> bool:
    return all(
        git(project, "config", "--get", key).stdout.strip() for key in ("user.name", "user.email")
    )


def init_git_repository(project: Path) -> str:
    """`git init` and, when git knows who commits, a first commit; never fails the bake."""
    if shutil.which("git") is None:
        return "git was not found, so the project is not under version control yet."
    initialised = git(project, "init", "--quiet", "--initial-branch=main")
    if initialised.returncode != 0:
        return f"git init failed ({initialised.stderr.strip()}); the project is not a repository."
    if not git_knows_the_author(project):
        return (
            "Initialised a git repository. Set git's user.name and user.email, then commit:\n"
            "  git add --all && git commit -m 'Bake the project'"
        )
    git(project, "add", "--all")
    committed = git(project, "commit", "--quiet", "--message", INITIAL_COMMIT_MESSAGE)
    if committed.returncode != 0:
        return f"Initialised a git repository; the first commit failed: {committed.stderr.strip()}"
    return "Initialised a git repository with a first commit of everything baked."


def next_steps(answers: Mapping[str, object]) -> str:
    slug = answers["project_slug"]
    package = answers["package_name"]
    if answers["database"] == "postgresql":
        database = (
            "  export DATABASE_URL=postgresql+asyncpg://USER:PASSWORD@127.0.0.1:5432/DBNAME\n"
        )
        test_env = "TEST_DATABASE_URL=postgresql+asyncpg://USER:PASSWORD@127.0.0.1:5432/TEST_DB "
        compose = "Or run it with its PostgreSQL in containers: docker compose up --build\n"
    else:
        database = ""
        test_env = ""
        compose = ""
    return (
        f"\nCreated {slug}. Next steps:\n\n"
        f"  cd {slug}\n"
        "  python -m venv .venv && . .venv/bin/activate && pip install '.[dev]'\n"
        f"{database}"
        "  python -m alembic upgrade head\n"
        f"  python -m {package}            # serves on http://127.0.0.1:8000\n"
        f"  {test_env}python -m pytest      # runs the service's own tests\n\n"
        f"{compose}"
        "The Makefile has the same as make migrate, make run and make test (and lint, typecheck,\n"
        "format): see README.md.\n"
    )


def main() -> None:
    answers = json.loads(r"""{{ cookiecutter | tojson }}""")
    project = Path.cwd()
    remove_files(project, files_that_do_not_apply(answers))
    print(next_steps(answers))
    if answers["git_init"] == "yes":
        print(init_git_repository(project))


if __name__ == "__main__":
    main()
