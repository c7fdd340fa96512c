"""Reject bad template answers before cookiecutter writes a single project file."""

from __future__ import annotations

import json
import keyword
import re
import sys
from collections.abc import Callable, Mapping

MINIMUM_PYTHON = (3, 11)
SLUG_PATTERN = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
# Importing the service package must never pick up one of these instead.
RESERVED_PACKAGE_NAMES = frozenset(
    {
        "aiosqlite",
        "alembic",
        "anyio",
        "asgi_lifespan",
        "asyncpg",
        "fastapi",
        "httpx",
        "migrations",
        "pydantic",
        "pydantic_settings",
        "pytest",
        "sqlalchemy",
        "starlette",
        "tests",
        "uvicorn",
    }
)


class AnswerError(ValueError):
    """A template answer that cannot produce a working project."""

    def __init__(self, answer: str, value: object, problem: str, example: str) -> None:
        super().__init__(f"{answer}={value!r}: {problem}. Example of a good value: {example}")
        self.answer = answer


def validate_project_slug(slug: str) -> None:
    if not SLUG_PATTERN.match(slug):
        raise AnswerError(
            "project_slug",
            slug,
            "must start with a lowercase letter and contain only lowercase letters, digits "
            "and single '-' or '_' separators (it names the project directory and distribution)",
            "billing-api",
        )


def validate_package_name(name: str) -> None:
    example = "billing_api"
    if not name.isidentifier() or not name.isascii():
        raise AnswerError("package_name", name, "is not a Python identifier", example)
    if name != name.lower():
        raise AnswerError("package_name", name, "must be lowercase (PEP 8 package names)", example)
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise AnswerError("package_name", name, "is a Python keyword", example)
    if name in RESERVED_PACKAGE_NAMES or name in sys.stdlib_module_names:
        raise AnswerError(
            "package_name",
            name,
            "shadows a dependency or a standard-library module of the generated service",
            example,
        )


def validate_python_version(version: str) -> None:
    match = re.fullmatch(r"3\.(\d+)", version)
    if match is None or (3, int(match.group(1))) < MINIMUM_PYTHON:
        raise AnswerError(
            "python_version",
            version,
            f"must be a 3.x release, {MINIMUM_PYTHON[0]}.{MINIMUM_PYTHON[1]} or newer",
            "3.12",
        )


def validate_pool_size(value: str) -> None:
    if not value.isdigit() or int(value) < 1:
        raise AnswerError("pool_size", value, "must be a positive integer", "5")


def validate_max_overflow(value: str) -> None:
    if not value.isdigit():
        raise AnswerError("max_overflow", value, "must be an integer of 0 or more", "5")


def validate_pool_timeout(value: str) -> None:
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise AnswerError("pool_timeout", value, "must be a positive number of seconds", "5")


def validate_single_line(answer: str, value: str) -> None:
    if CONTROL_CHARACTERS.search(value):
        raise AnswerError(
            answer, value, "must be one line without control characters", "My Service"
        )
    if not value.strip():
        raise AnswerError(answer, value, "must not be empty", "My Service")


def validate_author_email(email: str) -> None:
    if not EMAIL_PATTERN.match(email):
        raise AnswerError("author_email", email, "is not an email address", "jane@example.com")


def validate_git_init(value: str) -> None:
    # A replay file is not checked against the choices in cookiecutter.json: check here.
    if value not in ("no", "yes"):
        raise AnswerError("git_init", value, "must be 'yes' or 'no'", "yes")


VALIDATORS: dict[str, Callable[[str], None]] = {
    "project_slug": validate_project_slug,
    "package_name": validate_package_name,
    "python_version": validate_python_version,
    "pool_size": validate_pool_size,
    "max_overflow": validate_max_overflow,
    "pool_timeout": validate_pool_timeout,
    "author_email": validate_author_email,
    "git_init": validate_git_init,
}
SINGLE_LINE_ANSWERS = ("project_name", "description", "author_name")


def find_errors(answers: Mapping[str, object]) -> list[AnswerError]:
    """Check every answer, so that one run reports all the problems at once."""
    errors: list[AnswerError] = []
    for answer in SINGLE_LINE_ANSWERS:
        try:
            validate_single_line(answer, str(answers[answer]))
        except AnswerError as error:
            errors.append(error)
    for answer, validate in VALIDATORS.items():
        try:
            validate(str(answers[answer]).strip())
        except AnswerError as error:
            errors.append(error)
    return errors


def main() -> int:
    answers = json.loads(r"""{{ cookiecutter | tojson }}""")
    errors = find_errors(answers)
    for error in errors:
        print(f"ERROR: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
