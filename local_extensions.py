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


TomlStringFilter = simple_filter(toml_string)
PythonStringFilter = simple_filter(python_string)
