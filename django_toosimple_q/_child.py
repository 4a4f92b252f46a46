"""Entry point of the child process that runs isolated executions (see ``worker.isolation``).

Kept apart from the worker package: a spawned child imports this module before Django is set up, so
nothing here may import models at module level.
"""

from __future__ import annotations

import signal
import sys
from multiprocessing.connection import Connection


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
    import os

    if os.getppid() != parent_pid:
        return  # the parent died before we could ask to follow it
    import django

    django.setup()
    from django.conf import settings

    # Same databases as the parent, including a test database name chosen at run time.
    for alias, name in db_names.items():
        settings.DATABASES[alias]["NAME"] = name

    from .worker.executor import failed_outcome, run_execution

    while True:
        try:
            execution = conn.recv()
        except EOFError:
            return  # the parent is gone
        if execution is None:
            return
        try:
            outcome = run_execution(execution)
        except BaseException as exc:  # noqa: BLE001 - a fault of ours: report it, keep serving
            outcome = failed_outcome(f"The worker failed to run the task: {exc!r}")
        try:
            conn.send(outcome)
        except Exception as exc:  # noqa: BLE001 - e.g. a result pickle cannot carry
            conn.send(failed_outcome(f"The task ran, but its outcome could not be sent to the worker: {exc!r}"))
