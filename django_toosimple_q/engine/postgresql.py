"""PostgreSQL: the portable claim plus row locks skipped by concurrent workers."""

from __future__ import annotations

from .base import Engine


class PostgreSQLEngine(Engine):
    lock_clause = " FOR UPDATE SKIP LOCKED"

    def is_busy_error(self, exc: Exception) -> bool:
        return "deadlock detected" in str(exc) or "could not serialize" in str(exc)
