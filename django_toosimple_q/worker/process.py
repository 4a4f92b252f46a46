"""A worker as the body of a process (``manage.py worker``): its exit code, and nothing left behind."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from typing import NoReturn

from django.db import connections

from ..errors import StartupError
from .worker import EXIT_CRASHED, Worker

logger = logging.getLogger("django_toosimple_q.worker")


def run_process(worker: Worker, own_process: bool = True) -> int:
    """Run ``worker`` as the body of a process and return its exit code.

    ``own_process``: the process exists only for this worker (``manage.py worker`` from the command
    line), so once the worker is done nothing may keep it alive: if the worker abandoned running tasks
    (their threads cannot be stopped, their executions are already INTERRUPTED) or a task left a
    non-daemon thread running, the process leaves at once. In-process callers (``call_command``) only
    get a warning about such threads.
    """
    try:
        code = worker.run()
    except StartupError as exc:
        logger.critical("%s", exc)
        return EXIT_CRASHED
    leftovers = [t for t in threading.enumerate() if not t.daemon and t is not threading.main_thread() and t.is_alive()]
    if leftovers:
        logger.warning(
            "Thread(s) started by tasks are still running after the worker stopped: %s%s",
            ", ".join(t.name for t in leftovers),
            "; leaving without waiting for them" if own_process else "",
        )
    if own_process:
        leave_now(code)
    return code


def leave_now(code: int) -> NoReturn:
    """End this worker's process: what it must do at exit (``atexit`` functions, e.g. an error
    reporter's flush; log handlers; database connections closed cleanly), then exit without the
    interpreter's teardown of every module, which takes a Django process 100-200 ms: the exit
    after SIGTERM stays prompt. Also the way out when threads are left running (abandoned tasks,
    non-daemon threads started by tasks), which would otherwise keep the process alive."""
    try:
        atexit._run_exitfuncs()
    except Exception:  # noqa: BLE001 - reported by atexit itself; we leave anyway
        pass
    try:
        connections.close_all()
    except Exception:  # noqa: BLE001 - a connection in use by an abandoned thread
        pass
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
