"""Which database errors mean "try again later" and which a retry of the batch cures."""

from __future__ import annotations

import psycopg
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError


def transient_database_error(exc: BaseException) -> bool:
    """The database cannot be reached, or the batch kept losing deadlocks and serialization races:
    nothing is wrong with the events, try them again later.

    Raw psycopg errors count too: the fixed statements run on the driver's cursor, whose errors
    SQLAlchemy does not wrap. A statement the server refused (a lock timeout, a full disk, a
    cancelled query) is not this: its batch goes the one-by-one way like any failure.
    """
    if isinstance(exc, (OperationalError, InterfaceError)):  # wrapped by SQLAlchemy
        if exc.connection_invalidated or not isinstance(exc.orig, psycopg.Error):
            return True  # a lost connection; SQLite: locked for longer than its timeout, or unreachable
        exc = exc.orig
    if not isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return False
    code = exc.sqlstate
    if code is None:  # the connection broke or could not be made, unless a cursor of ours was misused
        return "cursor" not in str(exc)
    # connection errors; transaction rollbacks (deadlock, serialization); the server shutting down
    return code.startswith(("08", "40")) or code in {"57P01", "57P02", "57P03"}


def retryable(exc: Exception) -> bool:
    """Deadlocks, serialization failures and unique-key races are retried; anything else is a bug."""
    if isinstance(exc, (IntegrityError, psycopg.IntegrityError)):
        return True
    code = getattr(exc, "sqlstate", None) or getattr(getattr(exc, "orig", None), "sqlstate", None)
    return code in {"40001", "40P01"} or "database is locked" in str(exc)
