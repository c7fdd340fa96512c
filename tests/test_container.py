"""The Dockerfile's own steps, carried out in a venv instead of an image (no Docker engine here).

The build stage's COPY and RUN lines run as written, with /opt/venv mapped to a temporary venv;
the runtime stage's files, environment, CMD and HEALTHCHECK then run the service from that venv.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import dockerfile
import pytest
from conftest import find_python, run, skip_unless_required

VENV = "/opt/venv"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def copy_sources(project: Path, stage: dockerfile.Stage, workdir: Path) -> None:
    """What the stage's COPY lines (other than --from) put into its WORKDIR."""
    for sources, destination, options in stage.copies():
        if "from" in options:
            continue
        for source in sources:
            if destination.endswith("/"):
                target = workdir / destination / Path(source).name
            else:
                target = workdir / destination
            if (project / source).is_dir():
                shutil.copytree(project / source, target)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(project / source, target)


def in_venv(arguments: str, venv: Path) -> str:
    return arguments.replace(VENV, str(venv))


@pytest.fixture(scope="module")
def project(default_project: Path) -> Path:
    return default_project


@pytest.fixture(scope="module")
def image(project: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The build stage carried out: a venv built by exactly the Dockerfile's RUN lines."""
    arguments, (build, runtime) = dockerfile.parse(project / "Dockerfile")
    interpreter = find_python(arguments["PYTHON_VERSION"])
    if interpreter is None:
        skip_unless_required(
            f"no Python {arguments['PYTHON_VERSION']} to build the image's venv with",
            "REQUIRE_PYTHONS",
        )
    root = tmp_path_factory.mktemp("image")
    venv, context, app = root / "venv", root / "build", root / "app"
    context.mkdir()
    app.mkdir()
    copy_sources(project, build, context)
    shims = root / "shims"
    shims.mkdir()
    (shims / "python").symlink_to(interpreter)
    environment = {
        **os.environ,
        **build.environment(),
        "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}",
    }
    for instruction in build.all("RUN"):
        result = run(
            ["/bin/sh", "-c", in_venv(instruction.arguments, venv)],
            cwd=context,
            env=environment,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    copy_sources(project, runtime, app)
    return {"venv": venv, "app": app, "runtime": runtime}


def runtime_environment(image: dict[str, Any], **overrides: str) -> dict[str, str]:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("DB_", "DATABASE"))
    }
    for name, value in image["runtime"].environment().items():
        environment[name] = in_venv(value, image["venv"]).replace("$PATH", os.environ["PATH"])
    environment.update(overrides)
    return environment


def test_image_has_the_service_but_no_dev_tools(image: dict[str, Any], project: Path) -> None:
    python = str(image["venv"] / "bin" / "python")
    package = next((project / "src").iterdir()).name

    assert run([python, "-c", f"import {package}.app"]).returncode == 0
    for tool in ("pytest", "mypy", "ruff", "httpx", "asgi_lifespan"):
        assert run([python, "-c", f"import {tool}"]).returncode != 0, tool


def test_image_migrates_serves_and_reports_healthy(image: dict[str, Any], tmp_path: Path) -> None:
    runtime: dockerfile.Stage = image["runtime"]
    (cmd,) = runtime.all("CMD")
    (healthcheck,) = runtime.all("HEALTHCHECK")
    probe = healthcheck.arguments[healthcheck.arguments.index(" CMD ") + len(" CMD ") :]
    port = str(free_port())
    environment = runtime_environment(
        image, PORT=port, DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'app.db'}"
    )

    migrated = run(
        ["python", "-m", "alembic", "upgrade", "head"], cwd=image["app"], env=environment
    )
    assert migrated.returncode == 0, migrated.stderr
    server = subprocess.Popen(
        cmd.command(),
        cwd=image["app"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while run(["/bin/sh", "-c", probe], env=environment).returncode != 0:
            assert server.poll() is None, server.communicate()[0]
            assert time.monotonic() < deadline, "the health check never passed"
            time.sleep(0.2)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/items",
            data=b'{"name": "lamp"}',
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            created = response.status
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)

    assert created == 201
    assert f"http://0.0.0.0:{port}" in output
    assert run(["/bin/sh", "-c", probe], env=environment).returncode != 0
