"""Executions with a time limit run in a child process, so that running past it stops them for real.

Python cannot stop a thread from the outside, so a task thread of the worker hands a time-limited
execution to its own child process (started once, with Django set up, and reused) and waits at most
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
from multiprocessing.connection import Connection
from typing import Any

from django.db import connections

from .._child import child_main
from ..models import TaskExec

logger = logging.getLogger("django_toosimple_q.worker")


class TimeLimitExceeded(Exception):
    pass


class ChildRunner:
    """One child process, owned by one task thread of the worker."""

    def __init__(self) -> None:
        self.process: multiprocessing.Process | None = None
        self.conn: Connection | None = None
        self.last_exitcode: int | None = None

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")  # never fork a process with threads and sockets
        parent_end, child_end = context.Pipe()
        db_names = {alias: str(connections[alias].settings_dict["NAME"]) for alias in connections}
        self.process = context.Process(
            target=child_main, args=(child_end, db_names, os.getpid()), name="toosimpleq-task-child", daemon=True
        )
        self.process.start()
        child_end.close()
        self.conn = parent_end

    def run(self, execution: TaskExec, timeout: float | None) -> dict[str, Any]:
        """Run ``execution`` in the child and return its outcome fields; raise TimeLimitExceeded
        (the child is killed) after ``timeout`` seconds (None: no limit), ChildDied if the child ended."""
        if self.process is None or not self.process.is_alive():
            self._start()
        self.conn.send(execution)
        if self.conn.poll(timeout):
            try:
                return self.conn.recv()
            except (EOFError, OSError):
                pass  # the child died (e.g. os._exit or a crash in the task)
            self.close(kill=True)
            raise ChildDied(f"The process running the task ended unexpectedly (exit code {self.last_exitcode}).")
        self.close(kill=True)
        raise TimeLimitExceeded(f"Time limit of {timeout:g}s exceeded: the task was stopped.")

    def close(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill and self.process.is_alive():
            os.kill(self.process.pid, signal.SIGKILL)
        elif self.process.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.process.join(timeout=10)
        self.conn.close()
        self.last_exitcode = self.process.exitcode
        self.process = None
        self.conn = None


class ChildDied(Exception):
    pass
