"""How workers end, and that nothing is lost: signals, SIGKILL + rescue, time limits, database faults."""

from __future__ import annotations

import signal
import time

import pytest
from django.db import connection
from django.utils import timezone

from django_toosimple_q.models import TaskExec, WorkerStatus
from django_toosimple_q.registry import tasks_registry
from django_toosimple_q.worker import Worker
from tests.app.models import Record

from .conftest import needs_pg_control, reconnect, restart_postgresql, wait_for

States = TaskExec.States


def processing(execution) -> bool:
    return TaskExec.objects.filter(pk=execution.pk, state=States.PROCESSING).exists()


def test_sigterm_interrupts_a_long_task_after_the_grace_period(workers):
    execution = tasks_registry["sleep_then_record"].queue("long", 60)
    proc = workers.start("--tick", "0.2", "--grace", "1", "-v", "2")
    proc.wait_output(f"Running sleep_then_record #{execution.pk}")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert time.monotonic() - started < 15
    execution.refresh_from_db()
    assert execution.state == States.INTERRUPTED and "grace period" in execution.error
    replacement = execution.replaced_by
    assert replacement.state == States.QUEUED and replacement.attempt == 2
    assert (replacement.args, replacement.kwargs) == (execution.args, execution.kwargs)
    status = WorkerStatus.objects.get()
    assert status.state == "TERMINATED" and status.exit_code == 0 and status.stopped
    assert Record.objects.count() == 0


def test_second_signal_interrupts_at_once(workers):
    execution = tasks_registry["sleep_then_record"].queue("long", 60)
    proc = workers.start("--tick", "0.2", "--grace", "120", "-v", "2")
    proc.wait_output(f"Running sleep_then_record #{execution.pk}")
    proc.send_signal(signal.SIGINT)
    proc.wait_output("Received SIGINT")  # two distinct deliveries, not one coalesced signal
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    execution.refresh_from_db()
    assert execution.state == States.INTERRUPTED and "stopped again" in execution.error
    assert execution.replaced_by.state == States.QUEUED
    assert WorkerStatus.objects.get().exit_signal == signal.SIGINT


def test_sigkill_then_rescue_exactly_once_by_several_workers(workers):
    execution = tasks_registry["sleep_then_record"].queue("rescued", 1)
    victim = workers.start("--tick", "0.2", "--timeout", "2", "-v", "2")
    victim.wait_output(f"Running sleep_then_record #{execution.pk}")
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    # Three workers notice the dead one at about the same moment.
    rescuers = [workers.start("--tick", "0.2", "--timeout", "30") for _ in range(3)]
    wait_for(lambda: Record.objects.filter(key="rescued").exists(), timeout=60)
    wait_for(lambda: TaskExec.objects.filter(state=States.SUCCEEDED).exists())
    for proc in rescuers:
        proc.send_signal(signal.SIGTERM)
    for proc in rescuers:
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
    execution.refresh_from_db()
    assert execution.state == States.INTERRUPTED and "stopped responding" in execution.error
    assert TaskExec.objects.count() == 2  # the original and exactly one replacement
    assert execution.replaced_by.state == States.SUCCEEDED
    dead = WorkerStatus.objects.get(pid=victim.pid)
    assert dead.state == "TIMEDOUT"


def test_time_limit_stops_the_task_for_real_and_the_worker_goes_on(workers):
    first = tasks_registry["sleepy_limited"].queue(30)
    dying = tasks_registry["exits_process"].queue()
    after = tasks_registry["record"].queue("after")
    result = workers.run("--until_done", "--tick", "0.2", timeout=120)
    assert result.returncode == 0, result.stderr
    first.refresh_from_db()
    assert first.state == States.FAILED and "TimeLimitExceeded" in first.error
    retry = first.replaced_by
    assert retry.state == States.FAILED and "Time limit of 1s exceeded" in retry.error
    assert retry.finished - retry.started < timezone.timedelta(seconds=10)
    dying.refresh_from_db()
    assert dying.state == States.FAILED and "ChildDied" in dying.error and "exit code 9" in dying.error
    after.refresh_from_db()
    assert after.state == States.SUCCEEDED


def test_worker_default_time_limit(workers):
    execution = tasks_registry["sleep_then_record"].queue("too slow", 30)
    quick = tasks_registry["sleep_then_record"].queue("quick", 0)
    result = workers.run("--until_done", "--task_timeout", "1")
    assert result.returncode == 0, result.stderr
    execution.refresh_from_db()
    quick.refresh_from_db()
    assert execution.state == States.FAILED and "TimeLimitExceeded" in execution.error
    assert quick.state == States.SUCCEEDED
    assert list(Record.objects.values_list("key", flat=True)) == ["quick"]


def test_a_crashing_worker_records_its_traceback(transactional_db):
    class Broken(Worker):
        def _pass(self):
            raise RuntimeError("bug in the loop")

    execution = tasks_registry["record"].queue("never")
    code = Broken(tick=0.1).run()
    assert code == 1
    status = WorkerStatus.objects.get()
    assert status.state == "CRASHED" and "RuntimeError: bug in the loop" in status.exit_log
    execution.refresh_from_db()
    assert execution.state == States.QUEUED


def test_rolling_deploy_leaves_tasks_another_version_knows(workers):
    # A "new version" worker knows a task the old one does not, and serves another queue.
    new = workers.start("--tick", "0.2", "--queue", "elsewhere", env_extra={"TOOSIMPLEQ_TEST_NEW_VERSION": "1"})
    wait_for(lambda: WorkerStatus.objects.filter(tasks__contains="only_in_new_version").exists())
    execution = TaskExec.objects.create(task_name="only_in_new_version", args=[], kwargs={})
    old = workers.run("--until_done", "--tick", "0.2")
    assert old.returncode == 0
    execution.refresh_from_db()
    assert execution.state == States.QUEUED  # not invalidated: an online worker knows it

    new.send_signal(signal.SIGTERM)
    new.communicate(timeout=30)
    old = workers.run("--until_done", "--tick", "0.2")
    execution.refresh_from_db()
    assert execution.state == States.INVALID and "No online worker" in execution.error


def test_worker_survives_dropped_connections(workers, vendor):
    if vendor == "sqlite":
        pytest.skip("SQLite has no server connection to drop")
    proc = workers.start("--tick", "0.2", "--threads", "2")
    tasks_registry["record"].queue("before")
    wait_for(lambda: Record.objects.filter(key="before").exists())
    with connection.cursor() as cursor:
        if vendor == "postgresql":
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        else:
            cursor.execute("SELECT id FROM information_schema.processlist WHERE db = DATABASE() AND id <> CONNECTION_ID()")
            for (pid,) in cursor.fetchall():
                cursor.execute(f"KILL {int(pid)}")
    # The first task on a dropped connection fails like any task would; its retry succeeds.
    for i in range(5):
        tasks_registry["record_with_retries"].queue(f"after{i}")
    wait_for(lambda: Record.objects.filter(key__startswith="after").count() == 5, timeout=60, message=proc)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert not TaskExec.objects.filter(state__in=[States.QUEUED, States.PROCESSING]).exists()
    assert Record.objects.values("key").distinct().count() == Record.objects.count() == 6


@needs_pg_control
def test_worker_survives_a_postgresql_restart(workers, vendor):
    if vendor != "postgresql":
        pytest.skip("restarts the PostgreSQL server")
    proc = workers.start("--tick", "0.2")
    slow = tasks_registry["sleep_then_record"].queue("across the restart", 2)
    wait_for(lambda: processing(slow))
    connection.close()
    restart_postgresql()
    reconnect()
    for i in range(3):
        tasks_registry["record_with_retries"].queue(f"after{i}")
    wait_for(lambda: Record.objects.filter(key__startswith="after").count() == 3, timeout=90)
    wait_for(lambda: not TaskExec.objects.filter(state__in=[States.QUEUED, States.PROCESSING]).exists(), timeout=60)
    slow.refresh_from_db()
    # The slow task's own insert may have hit the restart (then it failed and was recorded as such);
    # either way its outcome is recorded, nothing is left PROCESSING.
    assert slow.state in (States.SUCCEEDED, States.FAILED)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "Database unavailable" in out
