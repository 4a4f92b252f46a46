"""Real worker processes on the real test database: exit codes, concurrency, reload."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from django_toosimple_q.models import TaskExec, WorkerStatus
from django_toosimple_q.registry import tasks_registry
from tests.app.models import Record

from .conftest import ROOT, wait_for

States = TaskExec.States


def queue_records(count: int, prefix: str = "r") -> None:
    task = tasks_registry["record"]
    TaskExec.objects.bulk_create([task.new_exec([f"{prefix}{i}"], {}) for i in range(count)], batch_size=500)


def test_until_done_and_once_exit_zero(workers):
    queue_records(3)
    once = workers.run("--once")
    assert once.returncode == 0, once.stdout + once.stderr
    assert Record.objects.count() == 1
    done = workers.run("--until_done")
    assert done.returncode == 0, done.stdout + done.stderr
    assert Record.objects.count() == 3
    assert "started" in done.stderr and "record" in done.stderr  # start-up line lists tasks
    statuses = list(WorkerStatus.objects.order_by("id"))
    assert [(w.exit_code, w.state) for w in statuses] == [(0, "STOPPED"), (0, "STOPPED")]


@pytest.mark.parametrize(
    "args",
    [
        ("--tick", "0"),
        ("--tick", "nan"),
        ("--tick", "inf"),
        ("--timeout", "inf"),
        ("--timeout", "-1"),
        ("--grace", "nan"),
        ("--grace", "-1"),
        ("--task_timeout", "0"),
        ("--threads", "0"),
        ("--threads", "two"),
        ("--once", "--until_done"),
        ("--queue", "a", "--exclude_queue", "b"),
    ],
)
def test_bad_arguments_exit_2_with_a_one_line_reason(workers, args):
    result = workers.run(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "error: argument" in result.stderr or "not allowed with argument" in result.stderr


def test_four_workers_drain_each_task_exactly_once(workers, vendor):
    count = 2000 if vendor != "sqlite" else 600
    queue_records(count)
    procs = [workers.start("--until_done", "--label", f"drain-{i}") for i in range(4)]
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out
        assert "database is locked" not in out
    assert TaskExec.objects.filter(state=States.SUCCEEDED).count() == count
    assert Record.objects.count() == count
    assert Record.objects.values("key").distinct().count() == count
    # Every worker took part (claims are spread), and each execution names the worker that ran it.
    assert TaskExec.objects.filter(worker__isnull=True).count() == 0
    assert len(set(Record.objects.values_list("pid", flat=True))) >= 2


UNIQUE_QUEUER = textwrap.dedent(
    """
    import django, sys
    django.setup()
    from django_toosimple_q.decorators import register_task

    @register_task(name="unique_target", unique=True)
    def unique_target(key):
        pass

    ids = {unique_target.queue("same").pk for _ in range(int(sys.argv[1]))}
    print(sorted(ids))
    """
)


def test_unique_holds_when_many_processes_queue_at_once(workers):
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", UNIQUE_QUEUER, "30"],
            env=workers.env(),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    printed = set()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        printed.add(out.strip())
    assert TaskExec.objects.filter(task_name="unique_target").count() == 1
    assert len(printed) == 1  # every call of every process got the same execution back


def test_sigterm_waits_for_the_running_task(workers):
    task = tasks_registry["sleep_then_record"]
    execution = task.queue("slow", 2)
    proc = workers.start("--tick", "0.2", "-v", "2")
    proc.wait_output(f"Running sleep_then_record #{execution.pk}")  # started, not only claimed
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    execution.refresh_from_db()
    assert execution.state == States.SUCCEEDED
    status = WorkerStatus.objects.get()
    assert status.state == "TERMINATED" and status.exit_code == 0 and "SIGTERM" in status.exit_log


def test_sigint_is_recorded_as_stopped_sigterm_as_terminated(workers):
    """As 1.x distinguished them: Ctrl-C is a deliberate quit (STOPPED), SIGTERM a termination."""
    for signum, state in ((signal.SIGINT, "STOPPED"), (signal.SIGTERM, "TERMINATED")):
        proc = workers.start("--tick", "0.2")
        status = wait_for(lambda: WorkerStatus.objects.filter(pid=proc.pid).first(), message="the worker's row")
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        status.refresh_from_db()
        assert (status.state, status.exit_code, status.exit_signal) == (state, 0, signum)


def test_reload_restarts_on_code_change_and_exit_status_is_right(workers):
    # DEBUG is False in the test settings: --reload always turns reloading on explicitly.
    proc = workers.start("--reload", "always", "--tick", "0.2")
    first = wait_for(lambda: WorkerStatus.objects.filter(stopped__isnull=True).first(), message="worker started")
    tasks_file = Path(ROOT) / "tests" / "app" / "tasks.py"

    def touched_and_reloaded() -> bool:
        # Touch a module the worker imported (the test app's tasks.py); again until the watcher,
        # which takes its first snapshot a moment after start-up, has seen a change.
        tasks_file.touch()
        return WorkerStatus.objects.filter(stopped__isnull=True).exclude(pk=first.pk).exists()

    wait_for(touched_and_reloaded, timeout=30, interval=0.5, message="a fresh worker after the reload")
    first.refresh_from_db()
    assert first.exit_code == 3 and first.stopped is not None
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert WorkerStatus.objects.filter(stopped__isnull=True).count() == 0


def test_reload_with_until_done_exits_with_the_worker_status(workers):
    queue_records(2)
    result = workers.run("--reload", "always", "--until_done")
    assert result.returncode == 0, result.stdout + result.stderr
    assert Record.objects.count() == 2
