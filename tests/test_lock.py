"""The baked project's locks (`requirements.lock`, `requirements-dev.lock`) match its pyproject.

The locks name no template answer, so the default bake stands for every bake. Installing from
them is tested where it happens: tests/test_container.py runs the Dockerfile's RUN lines (the
runtime lock), and every bake's environment in tests/conftest.py comes from the dev lock.
"""

from __future__ import annotations

import re
import shlex
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import LOCK_DEV, run
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

LOCK = "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)
DEV_TOOLS = {"pytest", "mypy", "ruff", "pre-commit", "httpx", "asgi-lifespan", "matplotlib"}


def pins(lock: Path) -> dict[str, set[Version]]:
    """Every pinned version by package name (a universal lock may pin two, one per marker)."""
    pinned: dict[str, set[Version]] = {}
    for name, version in PIN.findall(lock.read_text()):
        pinned.setdefault(canonicalize_name(name), set()).add(Version(version))
    return pinned


def requirements(project: Path, *extras: str) -> list[Requirement]:
    """The project's requirements with these extras, leaving out its references to itself."""
    metadata = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    listed = list(metadata["dependencies"])
    for extra in extras:
        listed += metadata["optional-dependencies"][extra]
    parsed = [Requirement(requirement) for requirement in listed]
    return [
        requirement
        for requirement in parsed
        if canonicalize_name(requirement.name) != canonicalize_name(metadata["name"])
    ]


@pytest.mark.parametrize(("lock", "extras"), [(LOCK, ()), (LOCK_DEV, ("dev", "bench"))])
def test_lock_pins_every_requirement_of_pyproject_within_its_range(
    default_project: Path, lock: str, extras: tuple[str, ...]
) -> None:
    """Offline: a dependency added to pyproject.toml, or a raised floor, needs scripts/lock."""
    pinned = pins(default_project / lock)

    for requirement in requirements(default_project, *extras):
        versions = pinned.get(canonicalize_name(requirement.name), set())
        assert versions, f"{requirement} is not in {lock}: run scripts/lock"
        assert all(requirement.specifier.contains(v, prereleases=True) for v in versions), (
            f"{lock} pins {requirement.name} at {sorted(map(str, versions))}, "
            f"outside {requirement}: run scripts/lock"
        )


def test_runtime_lock_has_no_dev_tools(default_project: Path) -> None:
    assert not DEV_TOOLS & set(pins(default_project / LOCK))
    assert set(pins(default_project / LOCK)) <= set(pins(default_project / LOCK_DEV))


@pytest.mark.parametrize("lock", [LOCK, LOCK_DEV])
def test_lock_is_what_its_own_command_resolves_today(
    default_project: Path, tmp_path: Path, lock: str
) -> None:
    """The command in the lock's header, rerun: same pins, same hashes. Its --exclude-newer date
    keeps the answer fixed while pyproject.toml is; this needs PyPI (uv caches what it reads)."""
    text = (default_project / lock).read_text()
    command = shlex.split(text.splitlines()[1].removeprefix("#"))
    assert command[:3] == ["uv", "pip", "compile"]
    assert "--exclude-newer" in command
    output = tmp_path / lock
    command[command.index("-o") + 1] = str(output)
    uv = Path(sys.executable).with_name("uv")

    result = run([str(uv), *command[1:], "--quiet"], cwd=default_project, timeout=300)

    assert result.returncode == 0, result.stderr
    body = [line for line in output.read_text().splitlines() if not line.startswith("#")]
    assert body == [line for line in text.splitlines() if not line.startswith("#")], (
        f"{lock} is stale: run scripts/lock"
    )
