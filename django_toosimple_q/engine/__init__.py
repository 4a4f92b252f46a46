"""The engine: all SQL the worker issues, one implementation per database vendor."""

from __future__ import annotations

from django.db import connections

from .base import Engine, Selection


def get_engine(db: str) -> Engine:
    vendor = connections[db].vendor
    if vendor == "postgresql":
        from .postgresql import PostgreSQLEngine

        return PostgreSQLEngine(db)
    if vendor == "mysql":
        from .mysql import MySQLEngine

        return MySQLEngine(db)
    return Engine(db)


__all__ = ["Engine", "Selection", "get_engine"]
