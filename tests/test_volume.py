"""High-volume features: bulk enqueue, retention, a dedicated queue database, notifications."""

from __future__ import annotations

import datetime
import io
import signal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.utils import timezone

from django_toosimple_q.decorators import register_task
from django_toosimple_q.models import TaskExec, WorkerStatus
from django_toosimple_q.registry import Call, tasks_registry
from tests.app.models import Record

from .conftest import wait_for

States = TaskExec.States
pytestmark = pytest.mark.django_db(transaction=True)


@register_task(name="bulk_target")
def bulk_target(a, b=0):
    return a + b


@register_task(name="bulk_unique", unique=True)
def bulk_unique(key):
    return key


def test_queue_many_inserts_every_call_form():
    executions = bulk_target.queue_many([(1,), [2, 3], {"a": 4}, Call(5, b=6)] + [(i,) for i in range(2500)])
    assert len(executions) == 2504 and all(e.pk for e in executions)
    assert TaskExec.objects.count() == 2504
    call_command("worker", "--until_done", "--threads", "4", verbosity=0)
    results = dict(TaskExec.objects.values_list("id", "result"))
    assert [results[e.pk] for e in executions[:4]] == [1, 5, 4, 11]
    assert TaskExec.objects.filter(state=States.SUCCEEDED).count() == 2504


def test_queue_many_checks_every_call_before_writing():
    with pytest.raises(TypeError, match=r"Call #2: Task 'bulk_target' cannot be queued"):
        bulk_target.queue_many([(1,), (2,), (1, 2, 3)])
    with pytest.raises(TypeError, match=r"call #0 of queue_many\(\) is a int"):
        bulk_target.queue_many([7])
    assert TaskExec.objects.count() == 0


def test_queue_many_honours_unique():
    later = timezone.now() + datetime.timedelta(hours=1)
    waiting = bulk_unique.queue("a", due=later)
    executions = bulk_unique.queue_many([("a",), ("b",), ("b",), ("c",)])
    assert TaskExec.objects.count() == 3
    assert executions[0].pk == waiting.pk and executions[1].pk == executions[2].pk
    waiting.refresh_from_db()
    assert waiting.state == States.QUEUED and waiting.due < later  # moved earlier by the new call


def test_retention_deletes_old_finished_executions_only():
    old = timezone.now() - datetime.timedelta(days=40)
    done = [tasks_registry["add"].queue(i, i) for i in range(5)]
    call_command("worker", "--until_done", verbosity=0)
    TaskExec.objects.filter(pk__in=[e.pk for e in done[:3]]).update(finished=old)
    waiting = tasks_registry["add"].queue(9, 9, due=timezone.now() + datetime.timedelta(days=1))
    WorkerStatus.objects.update(stopped=old)
    call_command("toosimpleq_prune", "--batch", "2", stdout=io.StringIO())
    remaining = set(TaskExec.objects.values_list("pk", flat=True))
    assert remaining == {done[3].pk, done[4].pk, waiting.pk}
    assert WorkerStatus.objects.count() == 0


def test_prune_older_than_zero_keeps_running_workers_and_their_executions(workers):
    """``toosimpleq_prune --older_than 0``: every finished execution and stopped worker goes; a running
    worker's record and the execution it runs stay."""
    finished = tasks_registry["add"].queue(1, 1)
    call_command("worker", "--until_done", verbosity=0)  # leaves a STOPPED worker record
    stopped = WorkerStatus.objects.get()
    proc = workers.start("--tick", "0.2")
    running = tasks_registry["sleep_then_record"].queue("prune-live", 3)
    wait_for(lambda: TaskExec.objects.filter(pk=running.pk, state=TaskExec.States.PROCESSING).exists(), message=proc)
    live = WorkerStatus.objects.exclude(pk=stopped.pk).get()
    out = io.StringIO()
    call_command("toosimpleq_prune", "--older_than", "0", stdout=out)
    assert "Deleted 1 execution(s)" in out.getvalue() and "records of 1 worker(s)" in out.getvalue()
    assert not TaskExec.objects.filter(pk=finished.pk).exists()
    assert list(WorkerStatus.objects.values_list("pk", flat=True)) == [live.pk]
    wait_for(lambda: Record.objects.filter(key="prune-live").exists(), message=proc)
    running.refresh_from_db()
    assert running.worker_id == live.pk
    wait_for(lambda: TaskExec.objects.get(pk=running.pk).state == TaskExec.States.SUCCEEDED, message=proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)


def test_worker_prunes_by_itself_and_setting_is_validated():
    done = tasks_registry["add"].queue(1, 1)
    call_command("worker", "--until_done", verbosity=0)
    TaskExec.objects.filter(pk=done.pk).update(finished=timezone.now() - datetime.timedelta(hours=2))
    with override_settings(TOOSIMPLEQ_DELETE_FINISHED_AFTER=3600):
        call_command("worker", "--once", verbosity=0)
    assert not TaskExec.objects.filter(pk=done.pk).exists()
    with override_settings(TOOSIMPLEQ_DELETE_FINISHED_AFTER="soon"), pytest.raises(Exception, match="timedelta"):
        call_command("toosimpleq_prune")
    with override_settings(TOOSIMPLEQ_DELETE_FINISHED_AFTER=None), pytest.raises(CommandError, match="older_than"):
        call_command("toosimpleq_prune")


@pytest.mark.django_db(transaction=True, databases=["default", "queue"])
def test_dedicated_queue_database():
    with override_settings(TOOSIMPLEQ_DATABASE="queue"):
        execution = tasks_registry["record"].queue("in the queue database")
        assert TaskExec.objects.using("queue").filter(pk=execution.pk).exists()
        assert not TaskExec.objects.using("default").exists()
        call_command("worker", "--until_done", verbosity=0)
        assert TaskExec.objects.using("queue").get(pk=execution.pk).state == States.SUCCEEDED
        assert WorkerStatus.objects.using("queue").count() == 1
        assert Record.objects.using("default").filter(key="in the queue database").exists()
    with override_settings(TOOSIMPLEQ_DATABASE="nope"), pytest.raises(Exception, match="not an alias in DATABASES"):
        tasks_registry["record"].queue("x")


def test_router_sends_the_queue_models_to_the_queue_database():
    from django_toosimple_q.routers import QueueRouter

    router = QueueRouter()
    with override_settings(TOOSIMPLEQ_DATABASE="queue"):
        assert router.db_for_write(TaskExec) == "queue" and router.db_for_read(WorkerStatus) == "queue"
        assert router.db_for_read(Record) is None
        assert router.allow_migrate("queue", "toosimpleq") and not router.allow_migrate("default", "toosimpleq")
        assert router.allow_migrate("default", "testapp") is None
    assert router.db_for_write(TaskExec) is None


def test_idle_worker_wakes_when_a_sleeping_execution_is_due(workers, vendor):
    if vendor != "postgresql":
        pytest.skip("elsewhere, an execution queued while the worker sleeps is seen at the next tick")
    proc = workers.start("--tick", "600")
    proc.wait_output("started")
    due = timezone.now() + datetime.timedelta(seconds=2)
    execution = tasks_registry["record"].queue("on time", due=due)
    wait_for(lambda: Record.objects.filter(key="on time").exists(), timeout=20, message=proc)
    execution.refresh_from_db()
    assert datetime.timedelta(0) <= execution.started - due < datetime.timedelta(seconds=5)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)


def test_postgresql_notifications_wake_an_idle_worker(workers, vendor):
    if vendor != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL only")
    proc = workers.start("--tick", "600")
    wait_for(lambda: WorkerStatus.objects.exists())
    proc.wait_output("started")
    for i in range(3):
        execution = tasks_registry["record"].queue(f"notified{i}")
        # With a 10-minute tick, only the notification can explain a start within seconds.
        wait_for(lambda: Record.objects.filter(key=f"notified{i}").exists(), timeout=20, message=proc)
        execution.refresh_from_db()
        assert execution.started - execution.created < datetime.timedelta(seconds=5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out


@pytest.mark.django_db(transaction=True, databases=["default", "queue"])
def test_admin_reads_the_queue_database(client, django_user_model):
    admin = django_user_model.objects.create_superuser("boss", "boss@example.com", "pw")
    client.force_login(admin)
    with override_settings(TOOSIMPLEQ_DATABASE="queue"):
        execution = tasks_registry["record"].queue("seen in the admin")
        page = client.get("/admin/toosimpleq/taskexec/")
        assert page.status_code == 200 and "record" in page.content.decode()
        assert not TaskExec.objects.using("default").exists()
        detail = client.get(f"/admin/toosimpleq/taskexec/{execution.pk}/change/")
        assert detail.status_code == 200 and "seen in the admin" in detail.content.decode()


def test_sqlite_wal_setting(vendor):
    if vendor != "sqlite":
        pytest.skip("SQLite only")
    from django.db import connection as conn

    from django_toosimple_q.apps import use_sqlite_wal

    use_sqlite_wal(None, conn)
    with conn.cursor() as cursor:
        assert cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert cursor.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    # Later tests share this file: back to the default journal.
    with conn.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode=DELETE")
