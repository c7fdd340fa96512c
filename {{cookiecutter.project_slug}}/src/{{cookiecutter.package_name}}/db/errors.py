"""What the data layer raises; `api/errors.py` turns each into an honest HTTP answer."""

from __future__ import annotations

# The read-write twin of each read-only dependency, named in ReadOnlyError.
READ_WRITE_TWIN = {"ReadConnection": "Connection", "ReadSession": "Session"}


class PoolExhaustedError(Exception):
    """No connection became free within the allowed wait."""

    def __init__(self, waited: float) -> None:
        super().__init__(f"no database connection became free within {waited:g} s")
        self.waited = waited


class DatabaseUnavailableError(Exception):
    """The pool could not open a connection: the server is down, unreachable or refuses us."""


class ReadOnlyError(Exception):
    """A statement that writes was sent through a read-only dependency; nothing was written."""

    def __init__(self, dependency: str) -> None:
        twin = READ_WRITE_TWIN.get(dependency, "a read-write dependency")
        super().__init__(
            f"{dependency} is read-only and this statement writes; nothing was written. "
            f"Use {twin} in a handler that writes."
        )
        self.dependency = dependency
