"""Any string for any answer: refused in one line that names it, or a project that parses.

Each example bakes for real (cookiecutter and both hooks, as `cookiecutter --no-input` runs them),
then compiles every Python file and parses every TOML, YAML and JSON file. The generated suites
are run by tests/test_bake.py for the few SUPPORTED answers only: this test is about breadth.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, TEMPLATE_ANSWERS, project_files
from cookiecutter.exceptions import FailedHookException
from cookiecutter.main import cookiecutter
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

# cookiecutter renders every answer as a Jinja template before any hook runs, so these open a
# Jinja tag and fail inside cookiecutter (see README, "Baking your own"); they are left out here,
# like a NUL in NAMES_OF_THE_DIRECTORY.
JINJA_DELIMITERS = ("{{", "{%", "{#")
# cookiecutter makes the project's directory, named by the slug, before the pre-generation hook
# runs: os.mkdir refuses a NUL (ValueError) and a lone surrogate the file system cannot encode
# (UnicodeEncodeError, '\ud800'; a command line's undecodable bytes, '\udcff', do encode), and no
# hook can turn those into a message.
NAMES_OF_THE_DIRECTORY = ("project_name", "project_slug")
EXAMPLES = 300
CHOICES = {name for name, value in TEMPLATE_ANSWERS.items() if isinstance(value, list)}

ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=30).filter(
    lambda text: not any(delimiter in text for delimiter in JINJA_DELIMITERS)
)
NEAR_MISSES = ["²", "٣", "05", "00", "-1", "+5", " 5", "5 ", "1_000", "1e3", "inf", "nan", ".5"]
INTEGER = st.one_of(st.from_regex(r"[0-9]{1,7}", fullmatch=True), st.sampled_from(NEAR_MISSES))
# Shaped strings reach the accepting side often; ANY_TEXT covers the rest of the space.
SHAPED = {
    "project_name": st.from_regex(r"[A-Za-z][A-Za-z0-9 _-]{0,20}", fullmatch=True),
    "project_slug": st.from_regex(r"[a-z][a-z0-9_-]{0,15}", fullmatch=True),
    "package_name": st.from_regex(r"[a-z_][a-z0-9_]{0,15}", fullmatch=True),
    "description": ANY_TEXT,
    "author_name": ANY_TEXT,
    "author_email": st.from_regex(r"[^@]{1,8}@[^@]{1,8}\.[a-z]{2,4}", fullmatch=True),
    "python_version": st.one_of(
        st.from_regex(r"3\.[0-9]{1,3}", fullmatch=True), st.sampled_from(["3.١٢", "3.011"])
    ),
    "database": st.sampled_from(TEMPLATE_ANSWERS["database"]),
    "pool_size": INTEGER,
    "max_overflow": INTEGER,
    "pool_timeout": st.one_of(
        st.from_regex(r"[0-9]{1,5}(\.[0-9]{1,4})?", fullmatch=True),
        st.sampled_from([*NEAR_MISSES, "5.", "0.0", "3600.0001", "1" + "0" * 400]),
    ),
    "git_init": st.sampled_from(TEMPLATE_ANSWERS["git_init"]),
}
ANSWER_AND_VALUE = st.sampled_from(sorted(SHAPED)).flatmap(
    lambda answer: st.tuples(
        st.just(answer),
        st.one_of(SHAPED[answer], ANY_TEXT).filter(
            lambda value: answer not in NAMES_OF_THE_DIRECTORY or can_name_a_directory(value)
        ),
    )
)


def can_name_a_directory(value: str) -> bool:
    try:
        os.fsencode(value)
    except UnicodeEncodeError:
        return False
    return "\x00" not in value


def test_every_answer_is_fed_arbitrary_strings() -> None:
    assert set(SHAPED) == {name for name in TEMPLATE_ANSWERS if not name.startswith("_")}


def bake(answers: dict[str, str], output: Path, config: Path) -> None:
    cookiecutter(
        str(ROOT),
        no_input=True,
        extra_context=answers,
        output_dir=str(output),
        config_file=str(config),
    )


def parse_every_file(project: Path) -> None:
    """Fails on the first file that does not compile or parse."""
    for name, content in project_files(project).items():
        if name.endswith(".py"):
            compile(content, name, "exec")
        elif name.endswith(".toml"):
            tomllib.loads(content.decode())
        elif name.endswith((".yml", ".yaml")):
            assert isinstance(yaml.safe_load(content), dict), name
        elif name.endswith(".json"):
            json.loads(content)


def check_refusal(answer: str, stderr: str, output: Path) -> None:
    """The hook's own lines; cookiecutter then logs its FailedHookException (pytest captures it)."""
    lines = stderr.splitlines()

    assert lines, "refused without saying why"
    assert all(line.startswith(f"ERROR: {answer}=") for line in lines), stderr
    assert all("Example of a good value: " in line for line in lines), stderr
    assert not [path for path in output.rglob("*") if path.is_file()]


@pytest.fixture
def cookiecutter_config(tmp_path: Path) -> Path:
    """Keeps cookiecutter's replay files and clones out of the home directory."""
    config = tmp_path / "cookiecutter-config.yaml"
    config.write_text(
        f"cookiecutters_dir: {tmp_path / 'cookiecutters'}\nreplay_dir: {tmp_path / 'replay'}\n"
    )
    return config


def test_any_answer_is_refused_in_one_line_or_bakes_a_project_that_parses(
    tmp_path: Path,
    cookiecutter_config: Path,
    capfd: pytest.CaptureFixture[str],
    record_property: pytest.RecordProperty,
) -> None:
    counts: Counter[str] = Counter()

    # The reported bugs and one answer per kind of text, before the generated ones.
    @example(("pool_size", "²"))
    @example(("pool_size", "05"))
    @example(("pool_timeout", "1e3"))
    @example(("description", "```"))
    @example(("project_name", "Café \u202eecivreS"))
    @example(("author_email", "Jane <jane@example.com>"))
    @example(("project_name", "\udcff"))  # an undecodable byte on the command line
    @example(("description", "\ud800"))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(ANSWER_AND_VALUE)
    def check(answer_and_value: tuple[str, str]) -> None:
        answer, value = answer_and_value
        output = tmp_path / f"bake-{sum(counts.values())}"
        capfd.readouterr()
        if answer in CHOICES and value not in TEMPLATE_ANSWERS[answer]:
            # cookiecutter checks a choice itself (the hook checks choices read from a replay).
            with pytest.raises(ValueError, match=f"choice variable {answer},"):
                bake({answer: value}, output, cookiecutter_config)
            assert not output.exists()
            counts["refused as no choice"] += 1
            return
        try:
            bake({answer: value}, output, cookiecutter_config)
        except FailedHookException:
            counts["refused by the hook"] += 1
            check_refusal(answer, capfd.readouterr().err, output)
            return
        counts["baked"] += 1
        (project,) = output.iterdir()
        parse_every_file(project)
        assert json.loads((project / ".cookiecutter.json").read_text())["cookiecutter"][answer] == (
            value
        )

    check()

    summary = f"answers tried: {sum(counts.values())}, " + ", ".join(
        f"{outcome}: {count}" for outcome, count in sorted(counts.items())
    )
    record_property("answers", summary)
    with capfd.disabled():
        print(f"\n{summary}")
    assert counts["refused by the hook"]
    assert counts["baked"]
