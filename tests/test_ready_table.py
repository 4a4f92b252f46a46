"""PostgreSQL: ``toosimpleq_ready`` (migration 0027) holds exactly the QUEUED executions, whatever writes
them, and the claim takes them in order and removes them (see docs/architecture.md, "Storage and the
claim")."""

from __future__ import annotations

import datetime

import pytest
from django.db import connection
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_toosimple_q.engine import Selection, get_engine
from django_toosimple_q.models import TaskExec, WorkerStatus

States = TaskExec.States

pytestmark = [pytest.mark.postgresql_only]


def ready_rows() -> set[tuple]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, priority, due, task_name, queue FROM toosimpleq_ready")
        return set(cursor.fetchall())


def queued_rows() -> set[tuple]:
    rows = TaskExec.objects.filter(state=States.QUEUED).values_list("id", "priority", "due", "task_name", "queue")
    return set(rows)


def worker() -> WorkerStatus:
    now = timezone.now()
    return WorkerStatus.objects.create(label="w", host="h", pid=1, started=now, last_seen=now, timeout=60)


operations = st.lists(
    st.tuples(
        st.sampled_from(
            ["insert", "insert_sleeping", "wake", "cancel", "reprioritize", "claim", "release", "delete", "old_claim"]
        ),
        st.integers(min_value=-2, max_value=2),
    ),
    min_size=1,
    max_size=25,
)


@pytest.mark.django_db(transaction=True)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=operations)
def test_the_ready_table_follows_every_write(steps):
    TaskExec.objects.all().delete()
    engine = get_engine()
    owner = worker()
    selection = Selection(["add", "echo"], [], [])
    now = timezone.now()
    claimed: list[TaskExec] = []
    for kind, number in steps:
        rows = TaskExec.objects.order_by("id")
        if kind == "insert":
            engine.insert(TaskExec(task_name="add" if number % 2 else "echo", priority=number, due=now, created=now))
        elif kind == "insert_sleeping":
            later = now + datetime.timedelta(hours=1)
            engine.insert(TaskExec(task_name="add", priority=number, due=later, created=now, state=States.SLEEPING))
        elif kind == "wake":
            rows.filter(state=States.SLEEPING).update(state=States.QUEUED, due=now)
        elif kind == "cancel":
            engine.cancel(list(rows.filter(state=States.QUEUED).values_list("id", flat=True)[:1]), now)
        elif kind == "reprioritize":
            rows.filter(state=States.QUEUED).update(priority=number)
        elif kind == "claim":
            taken = engine.claim(owner, selection, abs(number) + 1, now)
            expected = sorted(queued_rows() | {(e.pk, e.priority, e.due, e.task_name, e.queue) for e in taken},
                              key=lambda r: (-r[1], r[2], r[0]))[: len(taken)]  # fmt: skip
            assert [e.pk for e in taken] == [r[0] for r in expected]
            claimed += taken
        elif kind == "release" and claimed:
            engine.release(claimed[:1], owner)
            claimed = claimed[1:]
        elif kind == "old_claim":  # a worker of the previous version (rolling deploy) claims without the ready table
            first = list(rows.filter(state=States.QUEUED).values_list("id", flat=True)[:1])
            TaskExec.objects.filter(pk__in=first).update(state=States.PROCESSING, worker=owner, started=now)
        elif kind == "delete":
            first = list(rows.filter(state=States.QUEUED).values_list("id", flat=True)[:1])
            TaskExec.objects.filter(pk__in=first).delete()
        assert ready_rows() == queued_rows(), kind


@pytest.mark.django_db(transaction=True)
def test_a_truncate_empties_the_ready_table_and_the_workers_vacuum_it():
    engine = get_engine()
    now = timezone.now()
    engine.insert_many([TaskExec(task_name="add", due=now, created=now) for _ in range(30)])
    assert len(ready_rows()) == 30
    taken = engine.claim(worker(), Selection(["add"], [], []), 10, now)
    assert len(taken) == 10 and len(ready_rows()) == 20
    engine.vacuum_ready()  # outside a transaction: runs (and must not fail)
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {TaskExec._meta.db_table} CASCADE")
    assert ready_rows() == set()
