"""How the worker's main thread sleeps: until a timeout, a wake-up from another thread (an outcome, a
stop, a notification the listener thread read) or, on PostgreSQL, data on the listener's connection,
which the main thread then reads itself: a new task's notification wakes the thread that claims it,
without a hand-over from the listener thread (one thread wake-up fewer between the commit and the
task's start)."""

from __future__ import annotations

import select
import socket

#: The longest single sleep (seconds); callers always ask for less (a tick, a heartbeat).
LONGEST = 86_400.0


class Waker:
    """An event the main thread can wait on together with a socket (``threading.Event`` cannot).

    ``set()`` may be called from any thread and from a signal handler; the flag is the truth, the byte
    written to the socket pair only ends a sleep. As with an event that is cleared after its wait, a
    ``set()`` landing between the end of a sleep and its clearing is not kept: every caller's change
    of state is read by the worker's next pass, which follows each sleep.
    """

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._set = False
        # Kept from one sleep to the next (only the sleeping thread touches it): a busy worker sleeps
        # and wakes once per outcome.
        self._poller = select.poll()
        self._poller.register(self._reader, select.POLLIN)
        self._watched: int | None = None

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        try:
            self._writer.send(b"!")
        except OSError:  # full (already woken many times over) or closed (the worker has stopped)
            pass

    def is_set(self) -> bool:
        return self._set

    def wait(self, seconds: float, fd: int | None = None) -> bool:
        """Sleep up to ``seconds`` unless set; return whether ``fd`` (if given) became readable. Clears
        the flag before returning."""
        if self._set:
            self.clear()
            return False  # ``fd`` is not looked at: the pass that follows sleeps again, on it too
        if fd != self._watched:
            if self._watched is not None:
                self._poller.unregister(self._watched)
            if fd is not None:
                self._poller.register(fd, select.POLLIN)
            self._watched = fd
        # poll() retries after a signal handler ran (PEP 475); a handler's set() has written a byte.
        events = self._poller.poll(min(max(seconds, 0.0), LONGEST) * 1000)
        readable = woken = False
        for ready, _ in events:
            if ready == fd:
                readable = True
            else:
                woken = True
        if woken:
            self.clear()
        else:
            # Woken by ``fd`` or the timeout: no byte to drain, unless a set() is under way, whose byte
            # then ends the next sleep at once (and is drained then).
            self._set = False
        return readable

    def clear(self) -> None:
        # The flag first: a set() from now on writes a byte again, which the next wait() sees even if
        # the draining below takes it (the flag stays set).
        self._set = False
        try:
            while self._reader.recv(4096):
                pass
        except OSError:  # BlockingIOError: drained
            pass
