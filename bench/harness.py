"""What the measurements share: the database, worker processes, enqueuing, checking a drain.

Imported only after ``django.setup()`` (by ``run.py`` in its per-database child process).
"""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from django.db import connection
from django.utils import timezone

from django_toosimple_q import serialization
from django_toosimple_q.models import ScheduleExec, StepLink, TaskExec, WorkerStatus, Workflow

from .benchapp.tasks import append_line

ROOT = Path(__file__).resolve().parent.parent
States = TaskExec.States


def log(message: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- the database ----------------------------------------------------------------------------------


def reset() -> None:
    """Empty the queue's tables (fast: no ORM cascade over a million rows)."""
    qn = connection.ops.quote_name
    tables = [m._meta.db_table for m in (ScheduleExec, TaskExec, WorkerStatus, StepLink, Workflow)]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(qn(t) for t in tables)} RESTART IDENTITY")
        elif connection.vendor == "mysql":
            cursor.execute("SET FOREIGN_KEY_CHECKS = 0")
            for table in tables:
                cursor.execute(f"TRUNCATE TABLE {qn(table)}")
            cursor.execute("SET FOREIGN_KEY_CHECKS = 1")
        else:
            for table in tables:
                cursor.execute(f"DELETE FROM {qn(table)}")


def has_queue_many() -> bool:
    return hasattr(append_line, "queue_many")


def enqueue_lines(path: str, count: int, start: int = 0) -> str:
    """Queue ``count`` calls of ``append_line`` in bulk; returns how (for the table)."""
    calls = [(path, number) for number in range(start, start + count)]
    if has_queue_many():
        append_line.queue_many(calls)
        return "queue_many"
    TaskExec.objects.bulk_create([append_line.new_exec(call, {}) for call in calls], batch_size=1000)
    return "bulk_create fallback"


def insert_history(count: int, path: str) -> None:
    """Insert ``count`` SUCCEEDED executions directly in SQL, finished ten minutes ago (recent enough
    that no plausible retention setting deletes them during the measurement)."""
    qn = connection.ops.quote_name
    table = qn(TaskExec._meta.db_table)
    finished = timezone.now() - datetime.timedelta(minutes=10)
    started = finished - datetime.timedelta(milliseconds=1)
    field = TaskExec._meta.get_field("started")
    at_start = field.get_db_prep_value(started, connection)
    at_finish = field.get_db_prep_value(finished, connection)
    columns = [
        "task_name", "args", "kwargs", "queue", "priority", "due", "created", "started", "finished",
        "state", "output", "attempt", "retries", "retry_delay", "crashes", "is_unique", "upstream_left", "receives",
    ]  # fmt: skip
    values = [
        append_line.name, serialization.dumps([path, -1]), serialization.dumps({}), append_line.queue_name, 0,
        at_start, at_start, at_start, at_finish, States.SUCCEEDED, "", 1, 0, 0.0, 0, False, 0, False,
    ]  # fmt: skip
    placeholders = ", ".join(["%s"] * len(values))
    column_list = ", ".join(qn(c) for c in columns)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"INSERT INTO {table} ({column_list}) SELECT {placeholders} FROM generate_series(1, %s)",
                [*values, count],
            )
            cursor.execute(f"ANALYZE {table}")  # what autovacuum would soon do after a million inserts
        elif connection.vendor == "mysql":
            cursor.execute("SET SESSION max_recursive_iterations = %s", [count + 1])
            cursor.execute(
                f"INSERT INTO {table} ({column_list}) WITH RECURSIVE g(i) AS "
                f"(SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < %s) SELECT {placeholders} FROM g",
                [count, *values],
            )
        else:
            cursor.execute(
                f"WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < %s) "
                f"INSERT INTO {table} ({column_list}) SELECT {placeholders} FROM g",
                [count, *values],
            )


def fill_queued(count: int, path: str) -> None:
    """Insert ``count`` QUEUED executions of ``append_line(path, i)`` (i = 0..count-1) directly in SQL,
    untimed and fast: one ``INSERT ... SELECT`` over ``generate_series`` on PostgreSQL, over a recursive
    CTE on SQLite and MariaDB (in batches of 100,000 rows, so no statement holds a huge transaction).
    The rows are those ``queue()`` writes; ``args`` is the typed JSON ``["<path>",i]``."""
    qn = connection.ops.quote_name
    table = qn(TaskExec._meta.db_table)
    now = TaskExec._meta.get_field("due").get_db_prep_value(timezone.now(), connection)
    prefix = serialization.dumps([path, 0])[: -len("0]")]  # '["<path>",'
    columns = [
        "task_name", "args", "kwargs", "queue", "priority", "due", "created", "state", "output", "attempt",
        "crashes", "retries", "retry_delay", "is_unique", "upstream_left", "receives",
    ]  # fmt: skip
    values = [  # after task_name and args
        serialization.dumps({}), append_line.queue_name, append_line.priority, now, now,
        States.QUEUED, "", 1, 0, append_line.retries, append_line.retry_delay, False, 0, False,
    ]  # fmt: skip
    column_list = ", ".join(qn(c) for c in columns)
    placeholders = ", ".join(["%s"] * len(values))
    step = 100_000
    with connection.cursor() as cursor:
        if connection.vendor == "mysql":
            cursor.execute("SET SESSION max_recursive_iterations = %s", [step + 1])
        for start in range(0, count, step):
            stop = min(start + step, count) - 1
            if connection.vendor == "postgresql":
                cursor.execute(
                    f"INSERT INTO {table} ({column_list}) SELECT %s, %s || i::text || ']', {placeholders} "
                    f"FROM generate_series(%s, %s) AS i ORDER BY i",
                    [append_line.name, prefix, *values, start, stop],
                )
            elif connection.vendor == "mysql":
                cursor.execute(
                    f"INSERT INTO {table} ({column_list}) WITH RECURSIVE g(i) AS "
                    f"(SELECT %s UNION ALL SELECT i + 1 FROM g WHERE i < %s) "
                    f"SELECT %s, CONCAT(%s, i, ']'), {placeholders} FROM g ORDER BY i",
                    [start, stop, append_line.name, prefix, *values],
                )
            else:
                cursor.execute(
                    f"WITH RECURSIVE g(i) AS (SELECT %s UNION ALL SELECT i + 1 FROM g WHERE i < %s) "
                    f"INSERT INTO {table} ({column_list}) SELECT %s, %s || i || ']', {placeholders} FROM g",
                    [start, stop, append_line.name, prefix, *values],
                )
        if connection.vendor == "postgresql":
            cursor.execute(f"ANALYZE {table}")  # what autovacuum soon does after a bulk insert
        elif connection.vendor == "mysql":
            cursor.execute(f"ANALYZE TABLE {table}")
            cursor.fetchall()


# -- worker processes ------------------------------------------------------------------------------


class Workers:
    """``manage.py worker`` subprocesses on the bench database, each logging to its own file."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: list[tuple[subprocess.Popen, Path]] = []
        self._count = 0

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("BENCH_COUNT_SQL", None)
        env.update(extra or {})
        return env

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        self._count += 1
        log_path = self.log_dir / f"worker-{self._count}.log"
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "django", "worker", "--reload", "never", *args],
                env=self.env(env),
                cwd=ROOT,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        self.procs.append((proc, log_path))
        return proc

    def wait_all(self, timeout: float) -> bool:
        """Wait for every started process to exit; False if the deadline passed first."""
        deadline = time.monotonic() + timeout
        for proc, _ in self.procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                return False
        return True

    def exit_codes(self) -> list[int | None]:
        return [proc.poll() for proc, _ in self.procs]

    def tail(self, lines: int = 15) -> str:
        out = []
        for proc, path in self.procs:
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path} (exit {proc.poll()})\n" + "\n".join(text))
        return "\n".join(out)

    def stop_all(self, grace: float = 10.0) -> None:
        """SIGTERM each process we started (by pid), then SIGKILL the ones still running."""
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc, _ in self.procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []


def wait_registered(count: int, timeout: float = 60.0) -> None:
    """Wait until ``count`` workers have registered (their status row exists)."""
    deadline = time.monotonic() + timeout
    while WorkerStatus.objects.filter(stopped__isnull=True).count() < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} worker(s) did not register within {timeout:g}s")
        time.sleep(0.05)


def wait_listening(count: int, timeout: float = 60.0) -> None:
    """Wait until ``count`` workers trust their listener (PostgreSQL: notifications start their work)."""
    deadline = time.monotonic() + timeout
    while WorkerStatus.objects.filter(stopped__isnull=True, receives_notifications=True).count() < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} worker(s) did not receive notifications within {timeout:g}s")
        time.sleep(0.05)


def wait_result(pk: int, deadline: float) -> float | None:
    """The result of execution ``pk`` once it finished (None if it did not succeed, or not by ``deadline``,
    a ``time.time()``): the ``stamp`` task returns when it started."""
    rows = TaskExec.objects.filter(pk=pk)
    while time.time() < deadline:
        state, result = rows.values_list("state", "result").get()
        if state in TaskExec.States.finished():
            return result if state == TaskExec.States.SUCCEEDED else None
        time.sleep(0.003)
    return None


# -- checking a drain ------------------------------------------------------------------------------


def check_drain(path: str, count: int, min_id: int = 0, task_name: str = append_line.name) -> dict:
    """Every execution SUCCEEDED, and the file holds each number exactly once."""
    rows = TaskExec.objects.filter(id__gt=min_id, task_name=task_name)
    states = dict(Counter(rows.values_list("state", flat=True)))
    try:
        numbers = Path(path).read_text().split()
    except FileNotFoundError:
        numbers = []
    seen = Counter(numbers)
    duplicated = sum(1 for n in seen.values() if n > 1)
    ok = states.get(States.SUCCEEDED, 0) == count and len(numbers) == count and len(seen) == count
    return {"ok": ok, "states": states, "lines": len(numbers), "duplicated": duplicated}


def drain_window(min_id: int = 0) -> tuple[float | None, float | None]:
    """First ``started`` and last ``finished`` of the drained executions, as POSIX timestamps."""
    from django.db.models import Max, Min

    agg = TaskExec.objects.filter(id__gt=min_id, task_name=append_line.name).aggregate(
        first=Min("started"), last=Max("finished")
    )
    first, last = agg["first"], agg["last"]
    return (first.timestamp() if first else None, last.timestamp() if last else None)
