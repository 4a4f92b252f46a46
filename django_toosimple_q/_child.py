"""Entry point of the child process that runs time-limited executions (see ``worker.isolation``).

Kept apart from the worker package: a spawned child imports this module before Django is set up, so
nothing here may import models at module level.
"""

from __future__ import annotations

import signal
from multiprocessing.connection import Connection


def child_main(conn: Connection, db_names: dict[str, str]) -> None:
    """Set Django up once, then run the executions the parent sends, one at a time."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent worker decides when we stop
    import django

    django.setup()
    from django.conf import settings

    # Same databases as the parent, including a test database name chosen at run time.
    for alias, name in db_names.items():
        settings.DATABASES[alias]["NAME"] = name

    from .engine import get_engine
    from .models import TaskExec, WorkerStatus
    from .worker.executor import execute

    while True:
        try:
            message = conn.recv()
        except EOFError:
            return  # the parent is gone
        if message is None:
            return
        execution_pk, worker_pk, db = message
        execution = TaskExec.objects.using(db).get(pk=execution_pk)
        execute(execution, get_engine(db), WorkerStatus(pk=worker_pk))
        conn.send("done")
