"""What a task leaves behind on its thread's database connections, cleaned up before the next one.

A task may leave a transaction open (``transaction.set_autocommit(False)`` without a commit, an
``atomic()`` entered by hand, a raw ``BEGIN``): its writes are not committed, and the next task on
the same thread would see them, then lose them with its own (PostgreSQL), or the worker would keep
SQLite's write lock forever. After every execution the worker rolls such a transaction back and
starts the next execution on a clean connection.
"""

from __future__ import annotations

import logging

import contextlib
from typing import Iterator

from django.db import connections

logger = logging.getLogger("django_toosimple_q.worker")


def _server_transaction_open(conn) -> bool:
    """Whether the driver connection is inside a transaction, asked without a round trip where the
    driver knows it (psycopg, sqlite3), with one otherwise (MySQLdb)."""
    raw = conn.connection
    if conn.vendor == "postgresql":
        info = getattr(raw, "info", None)
        if info is not None:  # psycopg 3: 0 means idle
            return info.transaction_status != 0
        return raw.get_transaction_status() != 0  # psycopg 2
    if conn.vendor == "sqlite":
        return raw.in_transaction
    if conn.vendor == "mysql":
        with raw.cursor() as cursor:
            cursor.execute("SELECT @@in_transaction")
            row = cursor.fetchone()
        return bool(row and row[0])
    return False


def roll_back_left_transactions(used: set[str] | None = None) -> list[str]:
    """Roll back the transactions a task left open on this thread's connections.

    Returns the aliases that had one (empty in normal operation). ``used``: aliases the task ran
    statements on (a round trip is spent only there on databases whose driver cannot tell locally);
    None means every open connection.
    """
    left: list[str] = []
    for conn in connections.all(initialized_only=True):
        if conn.connection is None:
            continue
        try:
            django_state = conn.in_atomic_block or not conn.get_autocommit()
            if not django_state:
                if conn.vendor == "mysql" and used is not None and conn.alias not in used:
                    continue
                if not _server_transaction_open(conn):
                    continue
        except Exception:  # noqa: BLE001 - a broken connection: the worker closes it anyway
            conn.close_if_unusable_or_obsolete()
            continue
        left.append(conn.alias)
        _reset(conn)
    return left


def _reset(conn) -> None:
    """Forget Django's transaction state on ``conn`` and close it: closing the session rolls back
    whatever was not committed, on every database, whatever the task did to the session."""
    conn.in_atomic_block = False
    conn.atomic_blocks = []
    conn.savepoint_ids = []
    conn.needs_rollback = False
    conn.commit_on_exit = True
    conn.closed_in_transaction = False
    try:
        conn.connection.rollback()
    except Exception:  # noqa: BLE001 - closing below discards the transaction anyway
        pass
    try:
        conn.close()
    except Exception:  # noqa: BLE001
        conn.connection = None



@contextlib.contextmanager
def tracking_statements() -> Iterator[set[str]]:
    """Collect the aliases of the MySQL/MariaDB connections that run a statement in this block (their
    driver cannot tell locally whether a transaction is open, so only those are asked afterwards)."""
    used: set[str] = set()
    aliases = _mysql_aliases()
    if not aliases:
        yield used
        return
    with contextlib.ExitStack() as stack:
        for alias in aliases:
            stack.enter_context(connections[alias].execute_wrapper(_Marker(used, alias)))
        yield used


_MYSQL_ALIASES: list[str] | None = None


def _mysql_aliases() -> list[str]:
    """The aliases of the MySQL/MariaDB databases (settings do not change while a worker runs)."""
    global _MYSQL_ALIASES
    if _MYSQL_ALIASES is None:
        _MYSQL_ALIASES = [alias for alias in connections if connections[alias].vendor == "mysql"]
    return _MYSQL_ALIASES


class _Marker:
    def __init__(self, used: set[str], alias: str):
        self.used = used
        self.alias = alias

    def __call__(self, execute, sql, params, many, context):
        self.used.add(self.alias)
        return execute(sql, params, many, context)
