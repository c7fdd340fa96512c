"""Just enough of a Dockerfile parser to check a baked Dockerfile's meaning without Docker."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str

    def command(self) -> list[str]:
        """The arguments of RUN/CMD/ENTRYPOINT as a list: exec (JSON) form or shell form."""
        if self.arguments.startswith("["):
            return list(json.loads(self.arguments))
        return ["/bin/sh", "-c", self.arguments]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [instruction for instruction in self.instructions if instruction.keyword == keyword]

    def environment(self) -> dict[str, str]:
        variables: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for pair in shlex.split(instruction.arguments):
                name, _, value = pair.partition("=")
                variables[name] = value
        return variables

    def copies(self) -> list[tuple[list[str], str, dict[str, str]]]:
        """(sources, destination, --options) of every COPY."""
        result = []
        for instruction in self.all("COPY"):
            words = shlex.split(instruction.arguments)
            options = dict(
                word.removeprefix("--").partition("=")[::2]
                for word in words
                if word.startswith("--")
            )
            paths = [word for word in words if not word.startswith("--")]
            result.append((paths[:-1], paths[-1], options))
        return result


def instructions(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined; comments and blank lines dropped."""
    result: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1].strip() + " "
            continue
        logical = (pending + stripped).strip()
        pending = ""
        keyword, _, arguments = logical.partition(" ")
        result.append(Instruction(keyword.upper(), arguments.strip()))
    return result


def parse(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults, and the stages in order."""
    arguments: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in instructions(path.read_text()):
        if instruction.keyword == "FROM":
            words = instruction.arguments.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages and instruction.keyword == "ARG":
            name, _, default = instruction.arguments.partition("=")
            arguments[name] = default
        else:
            stages[-1].instructions.append(instruction)
    return arguments, stages
