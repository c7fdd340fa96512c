"""The hooks' functions, imported directly (the bake tests cover them end to end)."""

from __future__ import annotations

import ast
import json
import subprocess
import tomllib
from pathlib import Path

import post_gen_project
import pre_gen_project
import pytest
from conftest import ROOT
from cookiecutter.generate import generate_context
from cookiecutter.prompt import prompt_for_config
from markdown_it import MarkdownIt

from local_extensions import markdown_text, python_string, recorded_answers, toml_string

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
    "git_init": "no",
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
        ("git_init", "yes"),
    ],
)
def test_good_answers_are_accepted(answer: str, value: str) -> None:
    assert pre_gen_project.find_errors({**DEFAULT_ANSWERS, answer: value}) == []


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("pool_size", "05"),
        ("pool_size", "²"),
        ("pool_size", "٣"),
        ("pool_size", " 5"),
        ("pool_size", "+5"),
        ("pool_size", "262144"),
        ("max_overflow", "00"),
        ("max_overflow", "1_000"),
        ("pool_timeout", "1e3"),
        ("pool_timeout", "inf"),
        ("pool_timeout", "nan"),
        ("pool_timeout", "٣"),
        ("pool_timeout", "05"),
        ("pool_timeout", ".5"),
        ("pool_timeout", "0.0"),
        ("pool_timeout", "3601"),
        ("python_version", "3.١٢"),
        ("python_version", "3.011"),
        ("project_slug", "my-service\n"),
        ("author_email", "Jane <jane@example.com>"),
        ("author_email", "jane@example.com\x00"),
        ("description", "one\u2028two"),
        ("author_name", "Jane\x85"),
        ("project_name", "Service \u202eevil"),
        ("database", "mysql"),
    ],
)
def test_answers_are_checked_as_they_will_be_rendered(answer: str, value: str) -> None:
    errors = pre_gen_project.find_errors({**DEFAULT_ANSWERS, answer: value})

    assert [error.answer for error in errors] == [answer]
    assert "\n" not in str(errors[0])


def test_a_slug_derived_from_the_project_name_is_reported_as_the_name() -> None:
    answers = {
        **DEFAULT_ANSWERS,
        "project_name": "Café",
        "project_slug": "café",
        "package_name": "café",
    }

    (error,) = pre_gen_project.find_errors(answers)

    assert error.answer == "project_name"
    assert str(error).startswith("project_name='Café': gives project_slug='café', which must")


def test_the_hook_derives_names_as_cookiecutter_json_does() -> None:
    """derived_from() mirrors the defaults of project_slug and package_name: keep them in step."""
    context = generate_context(
        str(ROOT / "cookiecutter.json"), extra_context={"project_name": " Café_Billing API "}
    )
    answers = prompt_for_config(context, no_input=True)

    assert pre_gen_project.derived_from(answers, "project_slug") == "project_name"
    assert pre_gen_project.derived_from(answers, "package_name") == "project_name"


def test_a_typed_slug_is_reported_as_itself() -> None:
    answers = {**DEFAULT_ANSWERS, "project_slug": "2fast", "package_name": "2fast"}

    (error,) = pre_gen_project.find_errors(answers)

    assert error.answer == "project_slug"


MARKDOWN_TEXT = [
    "- a list?",
    "1. an ordered list?",
    "---",
    "```",
    "<!-- hidden?",
    "**bold** _em_ [link](url) &amp; `code` a\\",
    "C# #",
    "    indented",
    'Café "Ünïcode" Service',
]


@pytest.mark.parametrize("text", MARKDOWN_TEXT)
def test_markdown_text_filter_shows_the_text_as_written(text: str) -> None:
    tokens = MarkdownIt("commonmark").parseInline(markdown_text(text))[0].children or []

    assert [token.type for token in tokens] == ["text"] * len(tokens)
    assert "".join(token.content for token in tokens) == text.strip()


def test_markdown_text_filter_keeps_a_paragraph_a_paragraph() -> None:
    for text in MARKDOWN_TEXT:
        tokens = MarkdownIt("commonmark").parse(markdown_text(text))
        assert [token.type for token in tokens] == [
            "paragraph_open",
            "inline",
            "paragraph_close",
        ], text


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


def test_recorded_answers_leave_out_what_differs_between_runs() -> None:
    kept = {
        **DEFAULT_ANSWERS,
        "__default_database_url": "sqlite+aiosqlite:///./my_service.db",
        "_extensions": ["local_extensions.TomlStringFilter"],
    }
    per_run = {
        "_template": "gh:someone/template",
        "_output_dir": "/home/someone/projects",
        "_repo_dir": "/home/someone/.cookiecutters/template",
        "_checkout": None,
        "_commit": "0123abcd",
        "__prompts__": {"project_name": "Project name"},
    }

    recorded = json.loads(recorded_answers({**kept, **per_run}))

    assert recorded == {"cookiecutter": kept}


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_next_steps_name_the_commands(database: str) -> None:
    steps = post_gen_project.next_steps({**DEFAULT_ANSWERS, "database": database})

    assert "cd my-service" in steps
    assert "python -m my_service" in steps
    assert "python -m pytest" in steps
    assert ("TEST_DATABASE_URL" in steps) == (database == "postgresql")


def test_git_init_must_be_yes_or_no() -> None:
    """A replay file is not checked against cookiecutter.json's choices, so the hook checks."""
    errors = pre_gen_project.find_errors({**DEFAULT_ANSWERS, "git_init": "maybe"})

    assert [error.answer for error in errors] == ["git_init"]


@pytest.mark.parametrize(
    ("database", "removed"),
    [("sqlite", ["compose.yaml", "deploy", "tests/test_kubernetes.py"]), ("postgresql", [])],
)
def test_postgresql_deployment_files_are_only_kept_for_postgresql(
    database: str, removed: list[str]
) -> None:
    answers = {**DEFAULT_ANSWERS, "database": database}

    assert post_gen_project.files_that_do_not_apply(answers) == removed


def test_remove_files_removes_files_and_whole_folders(tmp_path: Path) -> None:
    (tmp_path / "deploy" / "kubernetes").mkdir(parents=True)
    (tmp_path / "deploy" / "kubernetes" / "kustomization.yaml").write_text("kind: Kustomization\n")
    (tmp_path / "compose.yaml").write_text("services: {}\n")
    (tmp_path / "kept.txt").write_text("")

    post_gen_project.remove_files(tmp_path, ["compose.yaml", "deploy"])

    assert [path.name for path in tmp_path.iterdir()] == ["kept.txt"]


def test_next_steps_offer_compose_only_where_it_is_baked() -> None:
    for database in ("sqlite", "postgresql"):
        steps = post_gen_project.next_steps({**DEFAULT_ANSWERS, "database": database})
        assert ("docker compose up" in steps) == (database == "postgresql")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / "README.md").write_text("# Project\n")
    return project


def git_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str) -> None:
    """Only this file configures git: no system or user configuration leaks in."""
    config = tmp_path / "gitconfig"
    config.write_text(content)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for variable in ("NAME", "EMAIL"):
        for role in ("AUTHOR", "COMMITTER"):
            monkeypatch.delenv(f"GIT_{role}_{variable}", raising=False)


def git_output(project: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *arguments], cwd=project, capture_output=True, text=True, check=False
    )


def test_git_init_commits_everything_when_git_knows_the_author(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    git_config(tmp_path, monkeypatch, "[user]\n\tname = Jane\n\temail = jane@example.com\n")

    message = post_gen_project.init_git_repository(project)

    assert "first commit" in message
    assert git_output(project, "log", "--format=%an %s").stdout.strip() == (
        f"Jane {post_gen_project.INITIAL_COMMIT_MESSAGE}"
    )
    assert git_output(project, "status", "--porcelain").stdout == ""
    assert git_output(project, "branch", "--show-current").stdout.strip() == "main"


def test_git_init_without_an_author_leaves_the_commit_to_the_user(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    git_config(tmp_path, monkeypatch, "")

    message = post_gen_project.init_git_repository(project)

    assert (project / ".git").is_dir()
    assert git_output(project, "rev-parse", "--verify", "--quiet", "HEAD").returncode != 0
    assert "user.name" in message
    assert "git commit" in message


def test_missing_git_does_not_fail_the_bake(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools-here"))

    message = post_gen_project.init_git_repository(project)

    assert "git was not found" in message
    assert not (project / ".git").exists()


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
