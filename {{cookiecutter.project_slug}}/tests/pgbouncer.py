"""A real PgBouncer in transaction mode, on a free loopback port, in front of the test database."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from sqlalchemy.engine import URL

from .conftest import free_port

# PgBouncer refuses to run as root; as root it is started with `-u` as this user instead.
UNPRIVILEGED_USERS = ("postgres", "nobody")


def find_pgbouncer() -> str | None:
    """`PGBOUNCER`, or `pgbouncer` on PATH, or where Debian installs it (not on a user's PATH)."""
    for candidate in (os.environ.get("PGBOUNCER"), shutil.which("pgbouncer")):
        if candidate:
            return candidate
    debian = Path("/usr/sbin/pgbouncer")
    return str(debian) if debian.is_file() else None


def version(binary: str) -> tuple[int, int]:
    output = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    match = re.search(r"PgBouncer (\d+)\.(\d+)", output)
    assert match, f"unexpected `pgbouncer --version` output: {output!r}"
    return int(match.group(1)), int(match.group(2))


def quoted(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


class PgBouncer:
    """Started by `start()`, stopped by `stop()`; `url` reaches the database through it."""

    def __init__(self, binary: str, server: URL, pool_size: int) -> None:
        self.binary = binary
        self.server = server
        self.pool_size = pool_size
        self.port = free_port()
        # Server connections carry this name, so pg_stat_activity can count them.
        self.application_name = f"pgbouncer-test-{self.port}"
        self.directory = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        self.log = self.directory / "pgbouncer.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> URL:
        return self.server.set(host="127.0.0.1", port=self.port)

    def config(self) -> str:
        database = self.server.database or ""
        lines = [
            "[databases]",
            (
                f"{database} = host={self.server.host or '127.0.0.1'}"
                f" port={self.server.port or 5432}"
                f" dbname={database} application_name={self.application_name}"
            ),
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "pool_mode = transaction",
            f"default_pool_size = {self.pool_size}",
            "max_client_conn = 500",
            f"auth_type = {'scram-sha-256' if self.server.password else 'trust'}",
            f"auth_file = {self.directory / 'userlist.txt'}",
            "ignore_startup_parameters = extra_float_digits",
        ]
        if version(self.binary) >= (1, 21):
            # Newer PgBouncers can track protocol-level prepared statements themselves; turn that
            # off so the tests show what the service must do on a pooler that cannot.
            lines.append("max_prepared_statements = 0")
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        (self.directory / "pgbouncer.ini").write_text(self.config())
        userlist = self.directory / "userlist.txt"
        userlist.write_text(
            f"{quoted(self.server.username or '')} {quoted(self.server.password or '')}\n"
        )
        userlist.chmod(0o600)
        command = [self.binary, str(self.directory / "pgbouncer.ini")]
        if os.geteuid() == 0:
            user = next(name for name in UNPRIVILEGED_USERS if _user_exists(name))
            shutil.chown(self.directory, user)
            shutil.chown(userlist, user)
            command[1:1] = ["-u", user]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self._wait_until_listening()

    def _wait_until_listening(self, timeout: float = 15) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"PgBouncer did not start:\n{self.log_text()}") from None
                time.sleep(0.05)
            else:
                return

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        """SIGTERM is PgBouncer's immediate shutdown: it closes client and server connections."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
