"""The hooks' functions, imported directly (the bake tests cover them end to end)."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import post_gen_project
import pre_gen_project
import pytest

from local_extensions import python_string, toml_string

DEFAULT_ANSWERS = {
    "project_name": "My Service",
    "project_slug": "my-service",
    "package_name": "my_service",
    "description": "A service.",
    "author_name": "Your Name",
    "author_email": "you@example.com",
    "python_version": "3.11",
    "database": "sqlite",
    "pool_size": "5",
    "max_overflow": "5",
    "pool_timeout": "5",
}


def test_default_answers_have_no_errors() -> None:
    assert pre_gen_project.find_errors(DEFAULT_ANSWERS) == []


def test_all_bad_answers_are_reported_together() -> None:
    answers = {**DEFAULT_ANSWERS, "pool_size": "0", "max_overflow": "x", "python_version": "2.7"}

    names = {error.answer for error in pre_gen_project.find_errors(answers)}

    assert names == {"pool_size", "max_overflow", "python_version"}


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("project_slug", "billing-api"),
        ("project_slug", "svc2"),
        ("package_name", "billing_api"),
        ("python_version", "3.11"),
        ("python_version", "3.14"),
        ("pool_size", "1"),
        ("max_overflow", "0"),
        ("pool_timeout", "0.25"),
        ("author_email", "a.b@example.co.uk"),
    ],
)
def test_good_answers_are_accepted(answer: str, value: str) -> None:
    assert pre_gen_project.find_errors({**DEFAULT_ANSWERS, answer: value}) == []


TRICKY_TEXT = ['He said "hi"', "back\\slash", "Ünïcødé ✓ 😀", "it's", "'\"' mixed \"'\""]


@pytest.mark.parametrize("text", TRICKY_TEXT)
def test_toml_string_filter_gives_a_valid_toml_string(text: str) -> None:
    assert tomllib.loads(f"value = {toml_string(text)}")["value"] == text


@pytest.mark.parametrize("text", TRICKY_TEXT)
def test_python_string_filter_gives_a_valid_python_literal(text: str) -> None:
    assert ast.literal_eval(python_string(text)) == text


def test_python_string_filter_prefers_the_quote_that_needs_no_escape() -> None:
    assert python_string('say "hi"') == """'say "hi"'"""
    assert python_string("it's") == '"it\'s"'


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_next_steps_name_the_commands(database: str) -> None:
    steps = post_gen_project.next_steps({**DEFAULT_ANSWERS, "database": database})

    assert "cd my-service" in steps
    assert "python -m my_service" in steps
    assert "python -m pytest" in steps
    assert ("TEST_DATABASE_URL" in steps) == (database == "postgresql")


def test_hooks_are_rendered_only_in_main() -> None:
    """The Jinja placeholder sits in main(), so tests can import every other function."""
    for hook in (Path(pre_gen_project.__file__), Path(post_gen_project.__file__)):
        tree = ast.parse(hook.read_text())
        rendered = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and "{{" in str(node.value)
        ]
        assert len(rendered) == 1
