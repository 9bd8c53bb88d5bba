"""Whether the database is there: for the system checks that read it (airouter.W001, W003,
W004), and for telling an outage apart from a statement the database refused."""

from functools import cache

from django.db import DatabaseError, DataError, IntegrityError, ProgrammingError, connection
from psycopg_pool import PoolTimeout


@cache
def database_reachable() -> bool:
    """Ask once per process: with the database down, each check would otherwise wait out
    the connection timeout on its own before giving up."""
    try:
        connection.ensure_connection()
    except DatabaseError:
        return False
    return True


def is_database_down(exc: BaseException) -> bool:
    """The database cannot be reached (or its pool lends no connection in time), as opposed to
    a statement it refused."""
    return isinstance(exc, DatabaseError | PoolTimeout) and not isinstance(
        exc, IntegrityError | DataError | ProgrammingError
    )
