"""The worker's housekeeping round (metrics totals, unknown tasks, retention, schedules, rescue of
stopped workers' leftovers): the first runs on its own; later ones ride in the tick's transaction, so
an idle worker commits once per tick (issue #16: idle cost), on every database."""

from __future__ import annotations

import datetime
import os
import socket
import threading

from django.db import connection
from django.utils import timezone

from django_toosimple_q.engine import get_engine
from django_toosimple_q.models import ExecutionTotal, TaskExec, WorkerStatus
from django_toosimple_q.registry import schedules_registry, tasks_registry
from django_toosimple_q.worker import duties as duties_module
from django_toosimple_q.worker.duties import Duties
from django_toosimple_q.worker.scheduler import Scheduler

States = TaskExec.States


def _duties():
    engine = get_engine()
    status = engine.register_worker(
        label="housekeeping-test", host=socket.gethostname(), pid=os.getpid(), queues=[], excluded_queues=[],
        tasks=sorted(tasks_registry), schedules=sorted(schedules_registry), timeout=600,
    )  # fmt: skip
    duties = Duties(engine, 10.0, 600.0, Scheduler(engine, dict(schedules_registry)), threading.Event())
    duties.registered(status, timezone.now())
    return duties


def _statements(run):
    """Run ``run()``; return, for each statement it sent, whether it ran inside a transaction."""
    inside: list[bool] = []

    def record(execute, sql, params, many, context):
        if sql.strip().upper() != "BEGIN":  # SQLite: Django opens the transaction with a statement
            inside.append(connection.in_atomic_block)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        run()
    return inside


def _commits():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
        cursor.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


def test_later_housekeeping_rounds_ride_in_the_tick_transaction(transactional_db, vendor, settings):
    settings.TOOSIMPLEQ_DELETE_FINISHED_AFTER = datetime.timedelta(days=1)
    duties = _duties()
    old = timezone.now() - datetime.timedelta(days=2)
    done = TaskExec.objects.create(task_name="anything", state=States.SUCCEEDED, due=old, created=old, finished=old)
    now = timezone.now()
    first = _statements(lambda: duties.run(now))
    assert not all(first), "the first round runs on its own transactions"
    assert not TaskExec.objects.filter(pk=done.pk).exists()  # its retention ran

    # A round later: everything it sends is inside the tick's one transaction.
    done = TaskExec.objects.create(task_name="anything", state=States.SUCCEEDED, due=old, created=old, finished=old)
    later = now + datetime.timedelta(seconds=duties_module.HOUSEKEEPING_INTERVAL + 1)
    before = _commits() if vendor == "postgresql" else None
    statements = _statements(lambda: duties.run(later))
    after = _commits() if vendor == "postgresql" else None
    assert statements and all(statements), statements
    assert not TaskExec.objects.filter(pk=done.pk).exists()  # the retention ran, inside
    assert ExecutionTotal.objects.filter(task_name="anything").exists()  # so did the metrics' totals
    if before is not None:
        # The tick's transaction, plus the statements of _commits() around it (each its own).
        assert after - before <= 3, "one transaction for the tick and its housekeeping round"

    # Between rounds, a tick is one transaction too.
    between = later + datetime.timedelta(seconds=11)
    assert all(_statements(lambda: duties.run(between)))


def test_a_refused_housekeeping_round_keeps_the_heartbeat(transactional_db, monkeypatch):
    """The round runs in a savepoint: if the database refuses it, the tick still commits (the worker
    stays alive for the others) and the error reaches the worker's loop, which backs off."""
    from django.db import DatabaseError

    duties = _duties()
    now = timezone.now()
    duties.run(now)
    later = now + datetime.timedelta(seconds=duties_module.HOUSEKEEPING_INTERVAL + 1)

    def refused(*args, **kwargs):
        TaskExec.objects.raw("SELECT * FROM no_such_table_here")[0]  # a real error from the database

    monkeypatch.setattr(duties.engine, "invalidate_unknown", refused)
    try:
        duties.run(later)
    except DatabaseError:
        pass
    else:
        raise AssertionError("the refused round's error must reach the loop")
    assert WorkerStatus.objects.get(pk=duties.status.pk).last_seen == later
