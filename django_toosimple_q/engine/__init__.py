"""The engine: all SQL the worker issues, one implementation per database vendor."""

from __future__ import annotations

from django.db import connections

from ..conf import queue_database
from .base import Engine, Selection


def get_engine(db: str | None = None) -> Engine:
    """The engine of database ``db``; by default, of the database holding the queue."""
    if db is None:
        db = queue_database()
    vendor = connections[db].vendor
    if vendor == "postgresql":
        from .postgresql import PostgreSQLEngine

        return PostgreSQLEngine(db)
    if vendor == "mysql":
        from .mysql import MySQLEngine

        return MySQLEngine(db)
    if vendor == "sqlite":
        import sqlite3

        if sqlite3.sqlite_version_info < (3, 35):
            from django.core.exceptions import ImproperlyConfigured

            raise ImproperlyConfigured(
                f"django-toosimple-q needs SQLite 3.35 or newer (UPDATE ... RETURNING); this Python has "
                f"{sqlite3.sqlite_version}. Use a newer Python/SQLite, or PostgreSQL or MariaDB."
            )
    return Engine(db)


__all__ = ["Engine", "Selection", "get_engine"]
