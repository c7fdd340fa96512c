"""Everything between a request and the database.

Handlers import their dependency from here: `from .db import Connection, ReadConnection,
Session, ReadSession` (see dependencies.py for which to pick).
"""

from .database import Database
from .dependencies import (
    Connection,
    ReadConnection,
    ReadSession,
    Session,
    get_database,
    install_unit_of_work,
)
from .errors import DatabaseUnavailableError, PoolExhaustedError, ReadOnlyError
from .unit_of_work import ReadOnlyConnection, ReadOnlySession, UnitOfWork

__all__ = [
    "Connection",
    "Database",
    "DatabaseUnavailableError",
    "PoolExhaustedError",
    "ReadConnection",
    "ReadOnlyConnection",
    "ReadOnlyError",
    "ReadOnlySession",
    "ReadSession",
    "Session",
    "UnitOfWork",
    "get_database",
    "install_unit_of_work",
]
