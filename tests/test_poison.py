"""No poison pill: nothing a task prints, raises, returns or does to its process stops the queue.

Each test queues a poison execution next to a harmless one and runs real worker processes: the
harmless one must succeed exactly once, the worker must go on (or exit normally when asked), and the
poison must end in a final state with a readable error.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from django.db import connection

from django_toosimple_q.models import TaskExec, WorkerStatus
from django_toosimple_q.registry import tasks_registry
from tests.app.models import Record

from .conftest import wait_for

States = TaskExec.States


def queue(name, *args, **kwargs) -> TaskExec:
    return tasks_registry[name].queue(*args, **kwargs)


def final(execution: TaskExec) -> TaskExec:
    execution.refresh_from_db()
    return execution


def harmless() -> TaskExec:
    return queue("record", "harmless")


def assert_harmless_ran_once(execution: TaskExec) -> None:
    assert final(execution).state == States.SUCCEEDED
    assert Record.objects.filter(key="harmless").count() == 1


def drain(workers, *args: str) -> str:
    """Run a worker until nothing is left; it must exit normally."""
    result = workers.run("--until_done", "--tick", "0.2", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


# -- outcomes the database would refuse ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text, shown",
    [("lone \\ud800 surrogate", "lone \\ud800 surrogate"), ("NUL \\x00 inside", "NUL \\x00 inside"), ("\\udcff\\x00e", "\\udcff\\x00e")],
)
def test_printed_text_a_database_refuses_is_stored_escaped(workers, text, shown):
    poison = queue("poison_print", text)
    ok = harmless()
    drain(workers, "--threads", "2")
    poison = final(poison)
    assert poison.state == States.SUCCEEDED and poison.replaced_by is None
    assert poison.output.startswith(shown + "\n")
    assert "shown escaped" in poison.output
    assert_harmless_ran_once(ok)


def test_an_error_message_with_nul_and_surrogates_is_stored_escaped(workers):
    poison = queue("poison_raise", "bad \\x00 and \\ud800")
    ok = harmless()
    drain(workers)
    poison = final(poison)
    assert poison.state == States.FAILED
    assert "bad \\x00 and \\ud800" in poison.error and "shown escaped" in poison.error
    assert_harmless_ran_once(ok)


@pytest.fixture
def refusing_trigger(transactional_db):
    """Make the database itself refuse any outcome whose output contains REFUSE-ME (a real refusal
    by the database, like a value it cannot hold), on every vendor."""
    table = TaskExec._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION tsq_refuse() RETURNS trigger AS $$ BEGIN "
                "IF NEW.output LIKE '%%REFUSE-ME%%' THEN RAISE EXCEPTION 'refused by the test trigger'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            cursor.execute(f"CREATE TRIGGER tsq_refuse BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION tsq_refuse()")
        elif connection.vendor == "sqlite":
            cursor.execute(
                f"CREATE TRIGGER tsq_refuse BEFORE UPDATE ON {table} WHEN NEW.output LIKE '%REFUSE-ME%' "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END"
            )
        else:
            cursor.execute(
                f"CREATE TRIGGER tsq_refuse BEFORE UPDATE ON {table} FOR EACH ROW BEGIN "
                "IF NEW.output LIKE '%REFUSE-ME%' THEN "
                "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by the test trigger'; END IF; END"
            )
    yield
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"DROP TRIGGER IF EXISTS tsq_refuse ON {table}")
            cursor.execute("DROP FUNCTION IF EXISTS tsq_refuse()")
        else:
            cursor.execute("DROP TRIGGER IF EXISTS tsq_refuse")


def test_a_batch_the_database_refuses_records_the_others_and_fails_the_refused_one(workers, refusing_trigger):
    others = [queue("record", f"other-{i}") for i in range(5)]
    poison = queue("poison_print", "REFUSE-ME please")
    retried = queue("poison_fail_retry")
    ok = harmless()
    out = drain(workers, "--threads", "4")
    poison = final(poison)
    assert poison.state == States.FAILED and poison.replaced_by is None
    assert "database refused its outcome" in poison.error and "Not retried" in poison.error
    for execution in others:
        assert final(execution).state == States.SUCCEEDED
    assert Record.objects.filter(key__startswith="other-").count() == 5
    # A failure with a replacement recorded in the same careful batch keeps its chain.
    chain = [final(retried)]
    while chain[-1].replaced_by_id:
        chain.append(chain[-1].replaced_by)
    assert [e.state for e in chain] == [States.FAILED] * 4
    assert not TaskExec.objects.filter(state=States.INTERRUPTED).exists(), out
    assert_harmless_ran_once(ok)


# -- results that cannot be stored ------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["poison_result", "poison_result_limited"])
@pytest.mark.parametrize("kind", ["huge_int", "cyclic", "deep", "object"])
def test_an_unstorable_result_is_failed_and_not_retried(workers, task, kind):
    poison = queue(task, kind)
    ok = harmless()
    drain(workers)
    poison = final(poison)
    assert poison.state == States.FAILED
    assert poison.replaced_by is None, "the task ran: it must not be retried"
    assert "The task ran, but" in poison.error and "Not retried" in poison.error
    assert "ChildDied" not in poison.error and "worker failed" not in poison.error
    assert_harmless_ran_once(ok)


def test_a_huge_retry_delay_in_a_row_does_not_crash_the_worker(workers):
    poison = queue("poison_fail_retry")
    # As written by another version or by hand: more than a datetime can add.
    TaskExec.objects.filter(pk=poison.pk).update(retry_delay=1e300)
    ok = harmless()
    drain(workers)
    poison = final(poison)
    assert poison.state == States.FAILED
    retry = poison.replaced_by
    assert retry.state == States.SLEEPING and retry.due.year >= 2100
    assert_harmless_ran_once(ok)


# -- tasks that kill their process -------------------------------------------------------------------------


def test_a_task_that_kills_its_worker_runs_isolated_after_the_first_death(workers):
    poison = queue("exit_process")
    ok = harmless()
    victim = workers.start("--tick", "0.2", "--timeout", "1")
    victim.wait(timeout=60)
    assert victim.returncode == 7
    rescuer = workers.start("--tick", "0.2", "--timeout", "30")
    wait_for(lambda: final(poison).replaced_by_id and final(poison.replaced_by).state == States.FAILED, timeout=60,
             message=rescuer)
    poison = final(poison)
    assert poison.state == States.INTERRUPTED and poison.crashes == 1
    retry = poison.replaced_by
    assert retry.crashes == 1 and "ChildDied" in retry.error and "exit code 7" in retry.error
    wait_for(lambda: final(ok).state == States.SUCCEEDED, message=rescuer)
    rescuer.send_signal(signal.SIGTERM)
    out, _ = rescuer.communicate(timeout=30)
    assert rescuer.returncode == 0, out
    assert Record.objects.filter(key="exit_process").count() == 2  # once in the worker, once in a child
    assert_harmless_ran_once(ok)


def test_a_call_whose_runs_keep_killing_workers_ends_failed(workers):
    poison = queue("kill_worker")
    ok = harmless()
    deaths = 0
    while deaths < 3:
        # One thread: nothing else runs when the worker dies (what runs beside it is charged too).
        victim = workers.start("--tick", "0.2", "--timeout", "1")
        victim.wait(timeout=60)
        assert victim.returncode == -signal.SIGKILL, victim.output
        deaths += 1
    survivor = workers.start("--tick", "0.2", "--timeout", "30")
    chain = [poison]

    def ended():
        chain[:] = [final(poison)]
        while chain[-1].replaced_by_id:
            chain.append(chain[-1].replaced_by)
        return chain[-1].state == States.FAILED

    wait_for(ended, timeout=60, message=lambda: f"{[(e.pk, e.state, e.crashes) for e in chain]}\n{survivor.output}")
    assert [e.state for e in chain] == [States.INTERRUPTED, States.INTERRUPTED, States.FAILED]
    assert [e.crashes for e in chain] == [1, 2, 3]
    assert "died 3 times" in chain[-1].error and "TOOSIMPLEQ_MAX_CRASHES" in chain[-1].error
    wait_for(lambda: final(ok).state == States.SUCCEEDED, message=survivor)
    survivor.send_signal(signal.SIGTERM)
    out, _ = survivor.communicate(timeout=30)
    assert survivor.returncode == 0, out
    assert Record.objects.filter(key="kill_worker").count() == 3
    assert_harmless_ran_once(ok)


def test_graceful_interruptions_do_not_use_the_crash_budget(workers):
    execution = queue("sleep_then_record", "slow", 60)
    for _ in range(4):
        proc = workers.start("--tick", "0.2", "--grace", "0", "-v", "2")
        pending = TaskExec.objects.get(state__in=States.waiting())
        proc.wait_output(f"Running sleep_then_record #{pending.pk}")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
    chain = TaskExec.objects.order_by("id")
    assert [e.state for e in chain] == [States.INTERRUPTED] * 4 + [States.QUEUED]
    assert {e.crashes for e in chain} == {0}
    assert final(execution).state == States.INTERRUPTED


# -- signals to the whole process group (systemd) ---------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_group_signal_lets_a_time_limited_task_finish_within_the_grace_period(workers, signum):
    execution = queue("limited_sleep_then_record", "limited", 2)
    proc = workers.start("--tick", "0.2", "--grace", "30", "-v", "2", new_session=True)
    wait_for(lambda: Record.objects.filter(key="limited-started").exists(), message=proc)
    os.killpg(proc.pid, signum)  # like systemd: the worker and its child process
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    execution = final(execution)
    assert execution.state == States.SUCCEEDED, (execution.error, out)
    assert Record.objects.filter(key="limited").count() == 1


def test_a_sigkilled_worker_takes_its_time_limited_child_with_it(workers):
    queue("limited_sleep_then_record", "orphan", 5)
    proc = workers.start("--tick", "0.2", "--timeout", "1", "-v", "2")
    wait_for(lambda: Record.objects.filter(key="orphan-started").exists(), message=proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    time.sleep(7)  # longer than the task: had the child survived, it would have recorded by now (an absence)
    assert not Record.objects.filter(key="orphan").exists()


# -- tasks that leave a transaction open ------------------------------------------------------------------


@pytest.mark.parametrize("how", ["autocommit_off", "atomic_entered", "raw_begin"])
def test_a_transaction_left_open_is_rolled_back_and_the_next_task_starts_clean(workers, how, vendor):
    if how == "raw_begin" and vendor == "sqlite":
        pytest.skip("Django's SQLite driver starts transactions itself; a raw BEGIN is the autocommit_off case")
    left = queue("leave_transaction_open", "uncommitted", how)
    after = queue("count_records", "after")
    ok = harmless()
    proc = workers.start("--tick", "0.2", "--threads", "1", "-v", "2")
    wait_for(lambda: final(ok).state == States.SUCCEEDED and final(after).state == States.SUCCEEDED, message=proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    left = final(left)
    assert left.state == States.FAILED and "left a transaction open" in left.error
    assert "left a transaction open" in out
    assert not Record.objects.filter(key="uncommitted").exists()
    assert Record.objects.get(key="after").pid == 0, "the next task saw the uncommitted row"
    assert_harmless_ran_once(ok)


# -- what a worker process leaves behind -----------------------------------------------------------------


def test_a_thread_left_by_a_task_does_not_keep_a_stopped_worker_alive(workers):
    execution = queue("start_thread", 120)
    proc = workers.start("--tick", "0.2")
    wait_for(lambda: final(execution).state == States.SUCCEEDED, message=proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "left-by-task" in out


def test_an_autoreloading_workers_child_never_outlives_its_parent(workers):
    proc = workers.start("--reload", "always", "--tick", "0.2", new_session=True)
    status = wait_for(lambda: WorkerStatus.objects.filter(stopped__isnull=True).first(), message=proc)
    assert status.pid != proc.pid  # the child runs the worker
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)

    def child_gone():
        try:
            os.kill(status.pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(child_gone, timeout=30)
    status.refresh_from_db()
    assert status.stopped is not None and status.exit_code == 0  # it stopped gracefully


# -- start-up --------------------------------------------------------------------------------------------


def test_a_worker_started_before_migrate_says_so_in_one_line(workers, vendor, tmp_path):
    if vendor != "sqlite":
        pytest.skip("an empty SQLite file stands for a database that was never migrated")
    result = workers.run("--tick", "0.2", env_extra={"TOOSIMPLEQ_TEST_DB_NAME": str(tmp_path / "empty.sqlite3")})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "python manage.py migrate" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr


def test_a_worker_started_before_its_database_waits_for_it(workers, vendor):
    if vendor == "sqlite":
        pytest.skip("SQLite has no server to wait for")
    port = {"postgresql": "PGPORT", "mysql": "MYSQL_PORT"}[vendor]
    proc = workers.start("--tick", "0.2", env_extra={port: "1"})
    wait_for(lambda: proc.output.count("unreachable") >= 2, message=proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    assert all(len(line) < 400 for line in out.splitlines())
