"""Shared by the system checks that read the database (airouter.W001, W003, W004)."""

from functools import cache

from django.db import DatabaseError, connection


@cache
def database_reachable() -> bool:
    """Ask once per process: with the database down, each check would otherwise wait out
    the connection timeout on its own before giving up."""
    try:
        connection.ensure_connection()
    except DatabaseError:
        return False
    return True
