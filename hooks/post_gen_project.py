"""Finish a freshly baked project and tell the user what to run next."""

from __future__ import annotations

import json
from collections.abc import Mapping


def next_steps(answers: Mapping[str, object]) -> str:
    slug = answers["project_slug"]
    package = answers["package_name"]
    if answers["database"] == "postgresql":
        database = (
            "  export DATABASE_URL=postgresql+asyncpg://USER:PASSWORD@127.0.0.1:5432/DBNAME\n"
        )
        test_env = "TEST_DATABASE_URL=postgresql+asyncpg://USER:PASSWORD@127.0.0.1:5432/TEST_DB "
    else:
        database = ""
        test_env = ""
    return (
        f"\nCreated {slug}. Next steps:\n\n"
        f"  cd {slug}\n"
        "  python -m venv .venv && . .venv/bin/activate && pip install '.[dev]'\n"
        f"{database}"
        "  python -m alembic upgrade head\n"
        f"  python -m {package}            # serves on http://127.0.0.1:8000\n"
        f"  {test_env}python -m pytest      # runs the service's own tests\n"
    )


def main() -> None:
    answers = json.loads(r"""{{ cookiecutter | tojson }}""")
    print(next_steps(answers))


if __name__ == "__main__":
    main()
