"""Entry point of the child process that runs time-limited executions (see ``worker.isolation``).

Kept apart from the worker package: a spawned child imports this module before Django is set up, so
nothing here may import models at module level.
"""

from __future__ import annotations

import signal
from multiprocessing.connection import Connection


def child_main(conn: Connection, db_names: dict[str, str]) -> None:
    """Set Django up once, then run the executions the parent sends, one at a time, and send back
    their outcomes (the parent records them)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent worker decides when we stop
    import django

    django.setup()
    from django.conf import settings

    # Same databases as the parent, including a test database name chosen at run time.
    for alias, name in db_names.items():
        settings.DATABASES[alias]["NAME"] = name

    from .worker.executor import run_execution

    while True:
        try:
            execution = conn.recv()
        except EOFError:
            return  # the parent is gone
        if execution is None:
            return
        conn.send(run_execution(execution))
