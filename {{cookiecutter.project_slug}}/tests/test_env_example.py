"""`.env.example` names every setting with its real default, so copying it changes nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }}.settings import Settings

from .conftest import PROJECT_ROOT

VARIABLE_LINE = re.compile(r"^# ([A-Z][A-Z0-9_]*)=(.*)$")


def example_variables() -> dict[str, str]:
    lines = (PROJECT_ROOT / ".env.example").read_text().splitlines()
    return {match[1]: match[2] for line in lines if (match := VARIABLE_LINE.match(line))}


def test_every_setting_is_in_the_example() -> None:
    assert set(example_variables()) == {name.upper() for name in Settings.model_fields}


def test_the_example_uncommented_gives_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    variables = example_variables()
    for name in variables:
        monkeypatch.delenv(name, raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in variables.items()))

    assert Settings(_env_file=env_file) == Settings(_env_file=None)
