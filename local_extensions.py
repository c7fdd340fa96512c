"""Jinja filters for the template, loaded through `_extensions` in cookiecutter.json.

The pre-generation hook rejects control characters and line breaks in free-text answers, so
escaping quotes, backslashes and Markdown's punctuation is all these filters have to do; non-ASCII
text stays readable.
"""

import json
import re

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


# Inline Markdown (emphasis, code, links, HTML, entities, a heading's closing #s), escaped anywhere.
MARKDOWN_INLINE = re.compile(r"([\\`*_\[\]<>#&~|])")
# What would open a list, a thematic break or a setext heading at the start of a line.
MARKDOWN_LINE_START = re.compile(r"^([-+=])|^([0-9]+)([.)])")


def markdown_text(value: object) -> str:
    """One line of text that Markdown shows as written, inside a paragraph or a heading."""
    escaped = MARKDOWN_INLINE.sub(r"\\\1", str(value).strip())
    return MARKDOWN_LINE_START.sub(
        lambda match: "\\" + match[1] if match[1] else f"{match[2]}\\{match[3]}", escaped
    )


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
MarkdownTextFilter = simple_filter(markdown_text)
