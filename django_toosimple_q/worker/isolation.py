"""Executions with a time limit run in a child process, so that running past it stops them for real.

Python cannot stop a thread from the outside, so a task thread of the worker hands a time-limited
execution (or one whose call already crashed a worker, see ``executor.runs_isolated``) to its own
child process (started once, with Django set up, and reused) and waits at most
the time limit for its outcome. When it is exceeded the child is killed (SIGKILL: whatever the task
was doing, it stops), the execution is marked FAILED with a timeout error (retried if it has retries
left) and a fresh child is started for the next one. Cost: one process per task thread that ever
runs a time-limited task, started on first use (about the time of a Django start-up), then a pipe
round trip per execution.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING

from django.db import connections

from ..errors import ChildDied, TimeLimitExceeded

if TYPE_CHECKING:  # this module is imported by the child before Django is set up: no models here
    from ..engine.outcome import Outcome
    from ..models import TaskExec

logger = logging.getLogger("django_toosimple_q.worker")


#: Seconds a new child process gets to set Django up before it counts as failed.
STARTUP_TIMEOUT = 120.0
#: What a child sends once it is ready to run executions.
READY = "ready"


class ChildRunner:
    """One child process, owned by one task thread of the worker."""

    def __init__(self) -> None:
        self.process: BaseProcess | None = None
        self.conn: Connection | None = None
        self.last_exitcode: int | None = None

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")  # never fork a process with threads and sockets
        parent_end, child_end = context.Pipe()
        db_names = {alias: str(connections[alias].settings_dict["NAME"]) for alias in connections}
        process = context.Process(
            target=child_main, args=(child_end, db_names, os.getpid()), name="toosimpleq-task-child", daemon=True
        )
        process.start()
        self.process = process
        child_end.close()
        self.conn = parent_end
        # A time limit counts the task's own time, not the child's start-up (a Django start-up, slower
        # on a loaded machine): wait until the child says it is ready.
        try:
            ready = parent_end.poll(STARTUP_TIMEOUT) and parent_end.recv() == READY
        except (EOFError, OSError):
            ready = False
        if not ready:
            self.close(kill=True)
            raise ChildDied(
                f"The process that runs isolated tasks did not start within {STARTUP_TIMEOUT:g}s "
                f"(exit code {self.last_exitcode})."
            )

    def run(self, execution: TaskExec, timeout: float | None) -> Outcome:
        """Run ``execution`` in the child and return its outcome fields; raise TimeLimitExceeded
        (the child is killed) after ``timeout`` seconds (None: no limit), ChildDied if the child ended."""
        if self.process is None or not self.process.is_alive():
            self._start()
        conn = self.conn
        assert conn is not None  # set by _start()
        conn.send(execution)
        if conn.poll(timeout):
            try:
                return conn.recv()
            except (EOFError, OSError):
                pass  # the child died (e.g. os._exit or a crash in the task, or killed by ``kill``)
            self.close(kill=True)
            raise ChildDied(f"The process running the task ended unexpectedly (exit code {self.last_exitcode}).")
        self.close(kill=True)
        raise TimeLimitExceeded(f"Time limit of {timeout:g}s exceeded: the task was stopped.")

    def kill(self) -> None:
        """Stop what the child runs, now (from any thread: the owning task thread then sees the child
        gone and cleans up with ``close``)."""
        process = self.process
        if process is not None and process.pid is not None and process.is_alive():
            try:
                os.kill(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self, kill: bool = False) -> None:
        """End the child (called by the owning task thread only)."""
        process, conn = self.process, self.conn
        if process is None or conn is None:
            return
        if kill and process.pid is not None and process.is_alive():
            os.kill(process.pid, signal.SIGKILL)
        elif process.is_alive():
            try:
                conn.send(None)
            except OSError:
                pass
        process.join(timeout=10)
        conn.close()
        self.last_exitcode = process.exitcode
        self.process = None
        self.conn = None


# -- in the child process ---------------------------------------------------------------------------


def die_with_parent(signum: int) -> None:
    """Ask the kernel to send ``signum`` to this process when its parent dies (Linux; elsewhere the
    caller's other safeguards apply): a worker killed with SIGKILL must not leave its children running."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
    except (OSError, AttributeError):  # no libc symbol: keep the other safeguards
        pass


def child_main(conn: Connection, db_names: dict[str, str], parent_pid: int) -> None:
    """Set Django up once, then run the executions the parent sends, one at a time, and send back
    their outcomes (the parent records them)."""
    # Only the parent worker decides when a task stops: a SIGTERM or SIGINT sent to the whole process
    # group (systemd, a terminal's Ctrl-C) must give the running task the grace period, not kill it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent(signal.SIGKILL)
    if os.getppid() != parent_pid:
        return  # the parent died before we could ask to follow it
    import django

    django.setup()
    from django.conf import settings

    # Same databases as the parent, including a test database name chosen at run time.
    for alias, name in db_names.items():
        settings.DATABASES[alias]["NAME"] = name

    from .executor import failed_outcome, run_execution

    conn.send(READY)
    while True:
        try:
            execution = conn.recv()
        except EOFError:
            return  # the parent is gone
        if execution is None:
            return
        try:
            outcome = run_execution(execution).without_exception()
        except BaseException as exc:  # noqa: BLE001 - a fault of ours: report it, keep serving
            outcome = failed_outcome(f"The worker failed to run the task: {exc!r}", type(exc))
        try:
            conn.send(outcome)
        except Exception as exc:  # noqa: BLE001 - e.g. a result pickle cannot carry
            conn.send(
                failed_outcome(
                    f"The task ran, but its outcome could not be sent to the worker: {exc!r}", type(exc), retry=False
                )
            )
