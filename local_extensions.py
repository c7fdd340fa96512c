"""Jinja filters for the template, loaded through `_extensions` in cookiecutter.json.

The pre-generation hook rejects control characters in free-text answers, so escaping quotes and
backslashes is all either filter has to do; non-ASCII text stays readable.
"""

import json

from cookiecutter.utils import simple_filter


def toml_string(value: object) -> str:
    """A TOML basic string (JSON's escapes are a subset of TOML's)."""
    return json.dumps(str(value), ensure_ascii=False)


def python_string(value: object) -> str:
    """A Python string literal, quoted the way ruff format would quote it."""
    text = str(value)
    if text.count('"') > text.count("'"):
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return json.dumps(text, ensure_ascii=False)


# What cookiecutter and cruft add about one particular run, not about the project.
RUN_KEYS = frozenset(
    {"_template", "_output_dir", "_repo_dir", "_checkout", "_commit", "__prompts__"}
)


def recorded_answers(context: dict[str, object]) -> str:
    """The rendered context as a cookiecutter replay file, without what differs between runs.

    `cookiecutter --replay-file .cookiecutter.json TEMPLATE` then bakes the same project again.
    """
    answers = {name: value for name, value in context.items() if name not in RUN_KEYS}
    return json.dumps({"cookiecutter": answers}, ensure_ascii=False, indent=2, sort_keys=True)


TomlStringFilter = simple_filter(toml_string)
PythonStringFilter = simple_filter(python_string)
RecordedAnswersFilter = simple_filter(recorded_answers)
