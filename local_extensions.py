"""Jinja filters for the template, loaded through `_extensions` in cookiecutter.json."""

import json

from cookiecutter.utils import simple_filter


@simple_filter
def quoted(value: object) -> str:
    """Render a string as a double-quoted literal that is valid in both TOML and Python.

    The pre-generation hook rejects control characters, so JSON escaping (quotes and
    backslashes) is all that is needed; non-ASCII text stays readable.
    """
    return json.dumps(str(value), ensure_ascii=False)
