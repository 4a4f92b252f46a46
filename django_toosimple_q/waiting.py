"""Waiting for a row to reach a state: on PostgreSQL woken by ``NOTIFY toosimpleq_finished`` (sent by
the engine in the transaction that finishes executions), elsewhere by polling with back-off.

Knows nothing of the models: ``TaskExec.wait()`` passes the check to run and the connection
parameters of a PostgreSQL database to LISTEN on (None: poll).
"""

from __future__ import annotations

import selectors
import time
from typing import Any, Callable, TypeVar

from .errors import WaitTimeout

T = TypeVar("T")

#: The channel the engine notifies when executions finish (payload: their ids, comma-separated).
FINISHED_CHANNEL = "toosimpleq_finished"
#: Polling: first interval and the longest one (seconds).
FIRST_POLL = 0.01
LONGEST_POLL = 0.5
#: With notifications: the check runs again at least this often (seconds), in case one was missed
#: (a row finished by hand, outside the engine).
SAFETY_CHECK = 5.0


def wait_until(
    check: Callable[[], tuple[T | None, int]], timeout: float | None, connect: Callable[[], Any] | None, what: str
) -> T:
    """Return the first item of ``check()`` once it is not None; raise ``WaitTimeout`` after ``timeout``
    seconds (None: no limit). ``check()`` also returns the id of the row whose finish is awaited (the
    latest replacement): only a notification naming it runs the check again. ``connect``: opens a new
    PostgreSQL connection to LISTEN on (None: poll)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    if connect is not None:
        listener = _listen(connect)
        if listener is not None:
            try:
                return _wait_notified(listener, check, deadline, what)
            finally:
                listener.close()
    delay = FIRST_POLL
    while True:
        found, _row = check()
        if found is not None:
            return found
        left = _left(deadline, what, timeout)
        time.sleep(min(delay, left))
        delay = min(delay * 2, LONGEST_POLL)


def _left(deadline: float | None, what: str, timeout: float | None) -> float:
    if deadline is None:
        return float("inf")
    left = deadline - time.monotonic()
    if left <= 0:
        raise WaitTimeout(f"{what} did not finish within {timeout} seconds")
    return left


def _listen(connect: Callable[[], Any]) -> Any:
    """A psycopg 3 connection LISTENing on the channel, or None (psycopg 2: poll instead)."""
    conn = connect()
    if not hasattr(conn, "pgconn"):
        conn.close()
        return None
    conn.autocommit = True
    conn.execute(f"LISTEN {FINISHED_CHANNEL}")
    return conn


def _wait_notified(
    conn: Any, check: Callable[[], tuple[T | None, int]], deadline: float | None, what: str
) -> T:
    """LISTEN is in place before the first check, so a finish committed after the check wakes us."""
    timeout = None if deadline is None else deadline - time.monotonic()
    encoding = conn.info.encoding
    with selectors.DefaultSelector() as selector:
        selector.register(conn.fileno(), selectors.EVENT_READ)
        while True:
            found, row = check()
            if found is not None:
                return found
            awaited = str(row)
            safety = time.monotonic() + SAFETY_CHECK
            while True:
                left = _left(deadline, what, timeout)
                if time.monotonic() >= safety or _notified(conn, selector, min(left, safety - time.monotonic()), awaited, encoding):
                    break


def _notified(conn: Any, selector: selectors.BaseSelector, seconds: float, awaited: str, encoding: str) -> bool:
    """Wait up to ``seconds`` for notifications; True if one names row ``awaited``."""
    selector.select(timeout=max(seconds, 0.0))
    pgconn = conn.pgconn
    pgconn.consume_input()
    named = False
    while (notify := pgconn.notifies()) is not None:
        if awaited in notify.extra.decode(encoding).split(","):
            named = True
    return named
