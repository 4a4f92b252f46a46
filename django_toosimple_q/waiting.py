"""Waiting for a row to reach a state: on PostgreSQL woken by ``NOTIFY toosimpleq_finished`` (sent by
the engine in the transaction that finishes executions), elsewhere by polling with back-off.

Knows nothing of the models: ``TaskExec.wait()`` passes the check to run, a callable opening a
PostgreSQL connection to LISTEN on (None: poll) and a key naming that connection's target.

On PostgreSQL one listener per process and per key serves every waiter: a daemon thread owning one
psycopg 3 connection (autocommit) that LISTENs on ``FINISHED_CHANNEL`` and sets the ``threading.Event``
of each waiter registered for an id a notification names. It reconnects with back-off when its
connection breaks, then wakes every waiter (notifications sent meanwhile are lost), and closes its
connection and ends after ``IDLE_CLOSE`` seconds without a waiter; the next wait starts a new one.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import threading
import time
from typing import Any, Callable, Hashable, TypeVar

from .errors import WaitTimeout

T = TypeVar("T")

logger = logging.getLogger("django_toosimple_q.waiting")

#: The channel the engine notifies when executions finish (payload: their ids, comma-separated).
FINISHED_CHANNEL = "toosimpleq_finished"
#: Polling: first interval and the longest one (seconds).
FIRST_POLL = 0.01
LONGEST_POLL = 0.5
#: With notifications: the check runs again at least this often (seconds), in case one was missed
#: (a row finished by hand, outside the engine).
SAFETY_CHECK = 5.0
#: The shared listener closes its connection and its thread ends after this long without a waiter
#: (seconds); read at each look, so a test can change it. 0 (the default): when its last waiter
#: returns, before that ``wait()`` returns, so no connection outlives the waits (a test database can be
#: dropped right after); longer keeps it open for waits that follow one another.
IDLE_CLOSE = 0.0
#: How long the last waiter waits for the listener's thread to close its connection (seconds).
CLOSE_TIMEOUT = 5.0
#: A broken listening connection is opened again after this delay, doubled at each failure up to the
#: longest (seconds).
FIRST_RECONNECT = 0.1
LONGEST_RECONNECT = 5.0
#: The listener thread looks at its waiters (to notice it is idle) at least this often (seconds).
LOOK_INTERVAL = 1.0


def wait_until(
    check: Callable[[], tuple[T | None, int]],
    timeout: float | None,
    connect: Callable[[], Any] | None,
    what: str,
    key: Hashable = None,
) -> T:
    """Return the first item of ``check()`` once it is not None; raise ``WaitTimeout`` after ``timeout``
    seconds (None: no limit). ``check()`` also returns the id of the row whose finish is awaited (the
    latest replacement): only a notification naming it runs the check again. ``connect``: opens a new
    PostgreSQL connection to LISTEN on (None: poll); ``key`` names its target (database alias and
    parameters): waits with the same key share one listener (None: ``connect`` itself is the key)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    found, row = check()
    if found is not None:
        return found
    if connect is None:
        return _poll(check, deadline, what, timeout)
    event = threading.Event()
    listener, listening = _join(connect if key is None else key, connect, event, row)
    registered = row
    try:
        delay = FIRST_POLL
        while True:
            if listening is None:  # the listener could not connect: poll
                return _poll(check, deadline, what, timeout)
            # Registered for ``row`` (and, when ``listening``, LISTEN in effect) before the check: a
            # finish committed after it sets the event; one committed before, the check sees.
            found, row = check()
            if found is not None:
                return found
            if row == registered:
                left = _left(deadline, what, timeout)
                if listening:
                    event.wait(min(left, SAFETY_CHECK))
                    delay = FIRST_POLL
                else:  # connecting, or reconnecting: poll until LISTEN is back (it wakes us)
                    event.wait(min(left, delay))
                    delay = min(delay * 2, LONGEST_POLL)
            event.clear()
            listening = listener.register(event, registered, row)
            registered = row
    finally:
        listener.unregister(event, registered)


def _poll(
    check: Callable[[], tuple[T | None, int]], deadline: float | None, what: str, timeout: float | None
) -> T:
    """The back-off loop, after a first check that found nothing."""
    delay = FIRST_POLL
    while True:
        left = _left(deadline, what, timeout)
        time.sleep(min(delay, left))
        delay = min(delay * 2, LONGEST_POLL)
        found, _row = check()
        if found is not None:
            return found


def _left(deadline: float | None, what: str, timeout: float | None) -> float:
    if deadline is None:
        return float("inf")
    left = deadline - time.monotonic()
    if left <= 0:
        raise WaitTimeout(f"{what} did not finish within {timeout} seconds")
    return left


# -- the shared listener -------------------------------------------------------------------------------

# Guards the registry and every listener's waiters and state: registering, dispatching, retiring.
_lock = threading.Lock()
_listeners: dict[Hashable, _Listener] = {}
_pid = os.getpid()


def _forget_inherited() -> None:
    """In a forked child: the parent's listeners (their threads did not survive the fork, their
    connections are the parent's) and a lock another thread may have held are not ours."""
    global _lock, _listeners, _pid
    _lock = threading.Lock()
    _listeners = {}
    _pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_inherited)


def _join(
    key: Hashable, connect: Callable[[], Any], event: threading.Event, row: int
) -> tuple[_Listener, bool | None]:
    """Register ``event`` for ``row`` with the listener for ``key``, started if there is none (or it
    retired). Returns it and whether its LISTEN is in effect (None: it failed, poll instead). One
    critical section, so a listener cannot retire between being found and being joined."""
    global _listeners, _pid
    with _lock:
        if os.getpid() != _pid:  # forked without the fork hook: start afresh
            _listeners, _pid = {}, os.getpid()
        listener = _listeners.get(key)
        if listener is None:
            listener = _listeners[key] = _Listener(key, connect)
            listener.thread.start()
        listening = listener.add(event, row)
    return listener, listening


def close_listeners(timeout: float = 5.0) -> None:
    """Close every listener of this process now (their waiters poll from then on) and wait for their
    threads to end: e.g. before dropping a test database, which PostgreSQL refuses while a listening
    connection is open. A later wait starts a new listener."""
    with _lock:
        closing = list(_listeners.values())
        _listeners.clear()
        for listener in closing:
            listener.end_waiters()
    for listener in closing:
        listener.stop()
    for listener in closing:
        listener.thread.join(timeout)


class _Listener:
    """One LISTENing connection and the waiters it wakes; its state changes under ``_lock``."""

    def __init__(self, key: Hashable, connect: Callable[[], Any]) -> None:
        self.key = key
        self.connect = connect
        self.waiters: dict[str, set[threading.Event]] = {}
        self.listening = False
        self.failed = False  # could not connect, or closed: waiters poll
        self.idle_since = time.monotonic()
        self.stopping = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self.thread = threading.Thread(target=self._run, name="toosimpleq-wait-listener", daemon=True)

    # -- waiters' side -----------------------------------------------------------------------------

    def add(self, event: threading.Event, row: int) -> bool | None:
        """Under ``_lock``."""
        if self.failed:
            return None
        self.waiters.setdefault(str(row), set()).add(event)
        return self.listening

    def register(self, event: threading.Event, previous: int, row: int) -> bool | None:
        """Move ``event`` from ``previous`` to ``row`` (never leaving the listener without it, so it
        cannot retire meanwhile); returns whether LISTEN is in effect (None: poll instead)."""
        with _lock:
            self._remove(event, previous)
            return self.add(event, row)

    def unregister(self, event: threading.Event, row: int) -> None:
        with _lock:
            self._remove(event, row)
            if self.waiters:
                return
            self.idle_since = time.monotonic()
            if IDLE_CLOSE > 0:
                return
            # The last waiter: retire in this critical section (a wait that starts now starts a new
            # listener), then close the connection before returning.
            if _listeners.get(self.key) is self:
                del _listeners[self.key]
            self.failed = True
            self.listening = False
        self.stop()
        if self.thread is not threading.current_thread():
            self.thread.join(CLOSE_TIMEOUT)

    def _remove(self, event: threading.Event, row: int) -> None:
        events = self.waiters.get(str(row))
        if events is not None:
            events.discard(event)
            if not events:
                del self.waiters[str(row)]

    def _wake_all(self) -> None:
        """Under ``_lock``."""
        for events in self.waiters.values():
            for event in events:
                event.set()

    def end_waiters(self) -> None:
        """Under ``_lock``: from now on its waiters poll."""
        self.failed = True
        self.listening = False
        self._wake_all()

    def stop(self) -> None:
        self.stopping.set()
        try:
            self._wake_w.send(b"x")
        except OSError:  # the thread already ended and closed it
            pass

    # -- the thread --------------------------------------------------------------------------------

    def _run(self) -> None:
        delay = FIRST_RECONNECT
        listened = False
        try:
            while not self.stopping.is_set():
                conn = None
                try:
                    conn = self.connect()
                    if not hasattr(conn, "pgconn"):  # psycopg 2: no access to notifications while idle
                        self._fail("LISTEN needs psycopg 3")
                        return
                    conn.autocommit = True
                    conn.execute(f"LISTEN {FINISHED_CHANNEL}")
                    listened = True
                    delay = FIRST_RECONNECT
                    if self._serve(conn):
                        return
                except Exception as exc:  # noqa: BLE001 - the waiters' safety re-check covers us meanwhile
                    if self.stopping.is_set():
                        return
                    if not listened:
                        self._fail(str(exc).strip())
                        return
                    logger.warning(
                        "wait(): LISTEN connection lost (%s); reconnecting in %.1fs", str(exc).strip(), delay
                    )
                finally:
                    with _lock:
                        self.listening = False
                    if conn is not None:
                        try:
                            conn.close()
                        except Exception:  # noqa: BLE001 - broken already
                            pass
                if self._retire_after(delay):
                    return
                delay = min(delay * 2, LONGEST_RECONNECT)
        finally:
            with _lock:
                self.failed = True
                self.listening = False
                if _listeners.get(self.key) is self:
                    del _listeners[self.key]
                self._wake_all()  # any left (closed by close_listeners()) poll
            self._wake_r.close()
            self._wake_w.close()

    def _fail(self, why: str) -> None:
        logger.warning("wait(): cannot LISTEN (%s); waiting by polling", why)
        with _lock:
            if _listeners.get(self.key) is self:
                del _listeners[self.key]
            self.end_waiters()

    def _serve(self, conn: Any) -> bool:
        """Dispatch notifications until idle for ``IDLE_CLOSE`` (True) or stopped (True); raises when
        the connection breaks."""
        with _lock:
            self.listening = True
            self._wake_all()  # notifications sent before LISTEN (or while disconnected) were not seen
        encoding = conn.info.encoding
        with selectors.DefaultSelector() as selector:
            selector.register(conn.fileno(), selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                wait = self._until_idle()
                if wait is None or self.stopping.is_set():
                    return True
                ready = selector.select(timeout=wait)
                if self.stopping.is_set():
                    return True
                if not ready:
                    continue
                pgconn = conn.pgconn
                pgconn.consume_input()  # raises when the connection is gone
                ids: list[str] = []
                while (notify := pgconn.notifies()) is not None:
                    ids.extend(notify.extra.decode(encoding).split(","))
                if ids:
                    self._dispatch(ids)
                if pgconn.status != 0:  # not CONNECTION_OK
                    raise ConnectionError("the LISTEN connection was closed")

    def _dispatch(self, ids: list[str]) -> None:
        with _lock:
            for row in ids:
                for event in self.waiters.get(row.strip(), ()):
                    event.set()

    def _until_idle(self) -> float | None:
        """Seconds to the next look at the waiters; None: retired (no waiter for ``IDLE_CLOSE`` s)."""
        with _lock:
            if self.waiters:
                return LOOK_INTERVAL
            left = self.idle_since + IDLE_CLOSE - time.monotonic()
            if left > 0:
                return min(left, LOOK_INTERVAL)
            # Retire in the same critical section as the look: a wait that starts now finds no
            # listener for this key and starts a new one.
            if _listeners.get(self.key) is self:
                del _listeners[self.key]
            self.failed = True
            return None

    def _retire_after(self, delay: float) -> bool:
        """Sleep ``delay`` before reconnecting; True if stopped or idle meanwhile (then end)."""
        end = time.monotonic() + delay
        while True:
            wait = self._until_idle()
            if wait is None:
                return True
            left = end - time.monotonic()
            if left <= 0:
                return False
            if self.stopping.wait(min(wait, left)):
                return True
