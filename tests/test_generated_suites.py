"""The runner of the baked suites (tests/generated_suites.py) passes on what a suite printed, and
stops a suite that outlives its limit, with the servers it started, instead of waiting for it."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from generated_suites import run_pytest

SLOW_SUITE = """
import subprocess, sys, time
from pathlib import Path

def test_that_hangs():
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    Path("server.pid").write_text(str(server.pid))
    time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_failing_suite_reports_its_output(tmp_path: Path) -> None:
    (tmp_path / "test_failing.py").write_text("def test_fails():\n    assert 1 == 2, 'marker'\n")

    result = run_pytest(Path(sys.executable), tmp_path, dict(os.environ), 60, set())

    assert result.returncode == 1
    assert "AssertionError: marker" in result.stdout
    assert result.summary.startswith("1 failed")


def test_a_suite_past_its_limit_is_stopped_with_the_servers_it_started(tmp_path: Path) -> None:
    (tmp_path / "test_slow.py").write_text(SLOW_SUITE)
    running: set[object] = set()

    # A limit long enough for pytest to start the server on a busy machine; the suite would run
    # for ten minutes.
    result = run_pytest(Path(sys.executable), tmp_path, dict(os.environ), 10, running)

    assert result.returncode is None
    assert result.seconds < 45
    assert not running
    server = int((tmp_path / "server.pid").read_text())
    deadline = time.monotonic() + 10
    while alive(server):
        assert time.monotonic() < deadline, "the suite's server outlived it"
        time.sleep(0.1)
