"""Reject bad template answers before cookiecutter writes a single project file."""

from __future__ import annotations

import json
import keyword
import math
import re
import sys
import unicodedata
from collections.abc import Callable, Mapping

MINIMUM_PYTHON = (3, 11)
# Patterns are matched whole (fullmatch) and spell digits [0-9]: `\d` also matches `²` and `٣`.
SLUG_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
PYTHON_VERSION_PATTERN = re.compile(r"3\.([1-9][0-9]?)")
# Python and TOML integer literals: no sign, no leading zero (`05` is a SyntaxError in Python 3).
POSITIVE_INTEGER_PATTERN = re.compile(r"[1-9][0-9]*")
NATURAL_INTEGER_PATTERN = re.compile(r"0|[1-9][0-9]*")
# A literal that reads the same in Python, TOML, YAML and a .env file: no exponent, inf or nan.
DECIMAL_PATTERN = re.compile(r"(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
# Characters that end a header, a name or an address in the email-style metadata of a wheel.
EMAIL_PATTERN = re.compile(r'[^@\s<>()\[\]\\,;:"]+@[^@\s<>()\[\]\\,;:"]+\.[^@\s<>()\[\]\\,;:".]+')
# PostgreSQL's largest max_connections: no pool can usefully be bigger.
MAX_CONNECTIONS = 262_143
# A client has given up long before a request waits an hour for a connection.
MAX_POOL_TIMEOUT_SECONDS = 3600
# Control characters (C0, C1), line and paragraph separators, lone surrogates (not UTF-8), and
# the bidirectional overrides that make source text read differently from what it does.
FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
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
        self.value = value
        self.problem = problem
        self.example = example


def validate_project_slug(slug: str) -> None:
    if not SLUG_PATTERN.fullmatch(slug):
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
        raise AnswerError("package_name", name, "is not an ASCII Python identifier", example)
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
    match = PYTHON_VERSION_PATTERN.fullmatch(version)
    if match is None or (3, int(match.group(1))) < MINIMUM_PYTHON:
        raise AnswerError(
            "python_version",
            version,
            f"must be a 3.x release, {MINIMUM_PYTHON[0]}.{MINIMUM_PYTHON[1]} or newer",
            "3.12",
        )


def validate_database(value: str) -> None:
    # A replay file is not checked against the choices in cookiecutter.json: check here.
    if value not in ("sqlite", "postgresql"):
        raise AnswerError("database", value, "must be 'sqlite' or 'postgresql'", "postgresql")


def validate_pool_size(value: str) -> None:
    if not POSITIVE_INTEGER_PATTERN.fullmatch(value) or int(value) > MAX_CONNECTIONS:
        raise AnswerError(
            "pool_size",
            value,
            f"must be a whole number from 1 to {MAX_CONNECTIONS}, in plain digits "
            "without a leading zero",
            "5",
        )


def validate_max_overflow(value: str) -> None:
    if not NATURAL_INTEGER_PATTERN.fullmatch(value) or int(value) > MAX_CONNECTIONS:
        raise AnswerError(
            "max_overflow",
            value,
            f"must be a whole number from 0 to {MAX_CONNECTIONS}, in plain digits "
            "without a leading zero",
            "5",
        )


def validate_pool_timeout(value: str) -> None:
    seconds = float(value) if DECIMAL_PATTERN.fullmatch(value) else math.nan
    if not 0 < seconds <= MAX_POOL_TIMEOUT_SECONDS:
        raise AnswerError(
            "pool_timeout",
            value,
            f"must be a number of seconds above 0 and at most {MAX_POOL_TIMEOUT_SECONDS}, "
            "written as plain digits with an optional decimal point (no exponent, no leading "
            "zero)",
            "0.5",
        )


def unsafe_characters(value: str) -> list[str]:
    """The characters of `value` that no generated file can hold as one line of plain text."""
    return [
        character
        for character in value
        if unicodedata.category(character) in FORBIDDEN_CATEGORIES or character in BIDI_CONTROLS
    ]


def validate_single_line(answer: str, value: str) -> None:
    unsafe = unsafe_characters(value)
    if unsafe:
        raise AnswerError(
            answer,
            value,
            f"must be one line without control characters (found {unsafe[0]!r})",
            "My Service",
        )
    if not value.strip():
        raise AnswerError(answer, value, "must not be empty", "My Service")


def validate_author_email(email: str) -> None:
    if unsafe_characters(email) or not EMAIL_PATTERN.fullmatch(email):
        raise AnswerError(
            "author_email",
            email,
            "is not a plain email address (one @, a dot in the domain, no spaces, quotes, "
            "brackets, commas or control characters)",
            "jane@example.com",
        )


def validate_git_init(value: str) -> None:
    # A replay file is not checked against the choices in cookiecutter.json: check here.
    if value not in ("no", "yes"):
        raise AnswerError("git_init", value, "must be 'yes' or 'no'", "yes")


VALIDATORS: dict[str, Callable[[str], None]] = {
    "project_slug": validate_project_slug,
    "package_name": validate_package_name,
    "python_version": validate_python_version,
    "database": validate_database,
    "pool_size": validate_pool_size,
    "max_overflow": validate_max_overflow,
    "pool_timeout": validate_pool_timeout,
    "author_email": validate_author_email,
    "git_init": validate_git_init,
}
SINGLE_LINE_ANSWERS = ("project_name", "description", "author_name")
DERIVED_EXAMPLES = {"project_name": "Billing API", "project_slug": "billing-api"}


def derived_from(answers: Mapping[str, object], answer: str) -> str | None:
    """The answer that `answer` was derived from, when it still has cookiecutter.json's default
    (mirrored here from the Jinja there).

    A bad slug derived from the project name is the name's problem, so the message says so.
    """
    name = str(answers["project_name"])
    slug = name.lower().strip().replace(" ", "-").replace("_", "-")
    if answer == "project_slug" and answers[answer] == slug:
        return "project_name"
    if answer == "package_name" and answers[answer] == str(answers["project_slug"]).replace(
        "-", "_"
    ):
        return derived_from(answers, "project_slug") or "project_slug"
    return None


def find_errors(answers: Mapping[str, object]) -> list[AnswerError]:
    """Check every answer, so that one run reports all the problems at once.

    Values are checked as they will be rendered, unstripped: a space is part of the answer.
    """
    errors: list[AnswerError] = []
    for answer in SINGLE_LINE_ANSWERS:
        try:
            validate_single_line(answer, str(answers[answer]))
        except AnswerError as error:
            errors.append(error)
    for answer, validate in VALIDATORS.items():
        try:
            validate(str(answers[answer]))
        except AnswerError as error:
            source = derived_from(answers, answer)
            if source is not None and any(known.answer == source for known in errors):
                continue
            if source is not None:
                error = AnswerError(
                    source,
                    answers[source],
                    f"gives {answer}={error.value!r}, which {error.problem}",
                    DERIVED_EXAMPLES[source],
                )
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
