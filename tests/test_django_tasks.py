"""Django's tasks framework (``django.tasks``) on our queue: the public API, run by real workers.

Needs Django >= 6.0 (Python >= 3.12); on older Django only the refusal of the backend is tested.
The Django tasks used here are in tests/app/django_tasks.py, so that worker subprocesses know them.
"""

from __future__ import annotations

import datetime
import logging
import math

import django
import pytest
from asgiref.sync import async_to_sync
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from tests.conftest import run_worker_here
from django_toosimple_q.backends import AVAILABLE
from django_toosimple_q.engine import get_engine
from django_toosimple_q.models import TaskExec, WorkerStatus
from django_toosimple_q.decorators import as_registered_task
from django_toosimple_q.registry import tasks_registry
from tests.app.models import Record

from .conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)
needs_tasks = pytest.mark.skipif(not AVAILABLE, reason="Django's tasks framework (django.tasks) needs Django >= 6.0")
States = TaskExec.States

if AVAILABLE:
    from django.tasks import TaskResultStatus, default_task_backend
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist, TaskResultMismatch
    from django.tasks.signals import task_enqueued, task_finished, task_started

    from django_toosimple_q.backends import DjangoTaskAdapter, QueueBackend
    from tests.app import django_tasks as dt


@pytest.mark.skipif(AVAILABLE, reason="checks the refusal on Django < 6.0")
def test_backend_explains_it_needs_django_6():
    from django_toosimple_q.backends import QueueBackend, adapter_for

    with pytest.raises(ImproperlyConfigured, match=r"needs Django's tasks framework.*Django 6\.0"):
        QueueBackend("default", {})
    assert adapter_for(object()) is None


# -- enqueue and results ----------------------------------------------------------------------------


@needs_tasks
def test_enqueue_creates_a_waiting_execution():
    result = dt.dj_add.enqueue(2, b=3)
    execution = TaskExec.objects.get()
    assert result.id == str(execution.pk)
    assert (execution.task_name, execution.args, execution.kwargs) == ("tests.app.django_tasks.dj_add", [2], {"b": 3})
    assert (execution.queue, execution.priority, execution.state) == ("default", 0, States.QUEUED)
    assert result.status == TaskResultStatus.READY and not result.is_finished
    assert result.backend == "default" and result.task.func is dt.dj_add.func
    assert result.enqueued_at == execution.created and result.started_at is None and result.finished_at is None
    assert result.worker_ids == [] and result.errors == [] and result.attempts == 0
    with pytest.raises(ValueError, match="not finished"):
        result.return_value
    again = default_task_backend.get_result(result.id)
    assert (again.id, again.status, again.args, again.kwargs) == (result.id, TaskResultStatus.READY, [2], {"b": 3})


@needs_tasks
def test_enqueue_is_rolled_back_with_its_transaction():
    from django.db import transaction

    with pytest.raises(RuntimeError), transaction.atomic():
        dt.dj_record.enqueue("never")
        raise RuntimeError("roll back")
    assert TaskExec.objects.count() == 0


@needs_tasks
def test_arguments_must_be_json_and_fit_the_signature():
    with pytest.raises(TypeError, match="must be JSON-serializable"):
        dt.dj_record.enqueue(timezone.now())
    with pytest.raises(TypeError, match="cannot be queued with these arguments"):
        dt.dj_add.enqueue(1)
    assert TaskExec.objects.count() == 0
    # Values come back as JSON gives them, as Django's contract says.
    dt.dj_record.enqueue(("a", "tuple"))
    assert TaskExec.objects.get().args == [["a", "tuple"]]


@needs_tasks
def test_run_by_a_worker_process(workers):
    added = dt.dj_add.enqueue(2, 3)
    recorded = dt.dj_record.enqueue("k1")
    done = workers.run("--until_done")
    assert done.returncode == 0, done.stderr

    worker = WorkerStatus.objects.get()
    assert "tests.app.django_tasks.dj_add" in worker.tasks  # the worker knew them from tasks.py
    result = dt.dj_add.get_result(added.id)
    assert result.status == TaskResultStatus.SUCCESSFUL and result.is_finished
    assert result.return_value == {"sum": 5, "args": [2, 3]}
    assert result.worker_ids == [str(worker.pk)] and result.attempts == 1 and result.errors == []
    assert result.enqueued_at <= result.started_at == result.last_attempted_at <= result.finished_at
    assert Record.objects.get().key == "k1"

    recorded.refresh()
    assert recorded.status == TaskResultStatus.SUCCESSFUL and recorded.return_value == "k1"
    with pytest.raises(TaskResultMismatch):
        dt.dj_record.get_result(added.id)


@needs_tasks
def test_failure_reports_exception_class_and_traceback(workers):
    result = dt.dj_fail.enqueue("it broke")
    assert workers.run("--until_done").returncode == 0
    result.refresh()
    assert result.status == TaskResultStatus.FAILED and result.finished_at is not None
    [error] = result.errors
    assert error.exception_class_path == "tests.app.django_tasks.TaskBoom"
    assert error.exception_class is dt.TaskBoom
    assert error.traceback.startswith("Traceback") and "it broke" in error.traceback
    with pytest.raises(ValueError, match="failed"):
        result.return_value


@needs_tasks
def test_running_status_while_the_worker_runs_it(workers):
    result = dt.dj_sleep.enqueue(2)
    proc = workers.start("--tick", "0.2")
    wait_for(lambda: dt.dj_sleep.get_result(result.id).status == TaskResultStatus.RUNNING, message=proc)
    running = dt.dj_sleep.get_result(result.id)
    assert running.started_at is not None and running.finished_at is None and running.attempts == 1
    wait_for(lambda: dt.dj_sleep.get_result(result.id).status == TaskResultStatus.SUCCESSFUL, message=proc)


@needs_tasks
def test_unknown_ids_do_not_exist():
    from tests.app.tasks import add

    ours = add.queue(1, 2)
    for result_id in ["999999", "not-a-number", str(ours.pk)]:
        with pytest.raises(TaskResultDoesNotExist):
            default_task_backend.get_result(result_id)


@needs_tasks
def test_async_get_and_enqueue():
    result = async_to_sync(dt.dj_add.aenqueue)(1, 1)
    fetched = async_to_sync(dt.dj_add.aget_result)(result.id)
    assert fetched.id == result.id and fetched.status == TaskResultStatus.READY


# -- scheduling options -----------------------------------------------------------------------------


@needs_tasks
def test_run_after_defers_the_execution(workers):
    run_after = timezone.now() + datetime.timedelta(seconds=3)
    result = dt.dj_record.using(run_after=run_after).enqueue("later")
    execution = TaskExec.objects.get()
    assert (execution.state, execution.due) == (States.SLEEPING, run_after)
    assert dt.dj_record.get_result(result.id).task.run_after == run_after
    proc = workers.start("--tick", "0.2")
    wait_for(lambda: dt.dj_record.get_result(result.id).status == TaskResultStatus.SUCCESSFUL, message=proc)
    assert dt.dj_record.get_result(result.id).started_at >= run_after
    assert Record.objects.get().created >= run_after


@needs_tasks
def test_priority_orders_execution_like_our_own(workers):
    from tests.app.tasks import record

    for priority in (-100, 0, 100, -5, 50):
        dt.dj_record.using(priority=priority).enqueue(f"dj{priority}")
    ours = record.new_exec(["ours10"], {})
    ours.priority = 10
    ours.save()
    assert workers.run("--until_done").returncode == 0
    order = list(Record.objects.order_by("id").values_list("key", flat=True))
    assert order == ["dj100", "dj50", "ours10", "dj0", "dj-5", "dj-100"]
    result = default_task_backend.get_result(str(TaskExec.objects.get(args=["dj50"]).pk))
    assert result.task.priority == 50


@needs_tasks
def test_queues_are_restricted_and_reach_the_right_workers(workers):
    with pytest.raises(InvalidTask, match="Queue 'nope' is not valid"):
        dt.dj_record.using(queue_name="nope")
    special = dt.dj_special.enqueue()
    plain = dt.dj_record.enqueue("plain")
    assert TaskExec.objects.get(pk=special.id).queue == "special"
    assert workers.run("--until_done", "--queue", "special").returncode == 0
    assert dt.dj_special.get_result(special.id).status == TaskResultStatus.SUCCESSFUL
    assert dt.dj_record.get_result(plain.id).status == TaskResultStatus.READY
    # A backend without QUEUES accepts any name.
    assert dt.dj_flaky.using(queue_name="anything").queue_name == "anything"


# -- context, retries, replacements ---------------------------------------------------------------


@needs_tasks
def test_context_attempt_on_a_retried_task(workers):
    result = dt.dj_flaky.enqueue("flaky")
    assert workers.run("--until_done").returncode == 0
    assert sorted(Record.objects.values_list("key", flat=True)) == ["flaky:1", "flaky:2"]
    first, retry = TaskExec.objects.order_by("id")
    assert (first.state, first.replaced_by_id, retry.attempt, retry.state) == (
        States.FAILED,
        retry.pk,
        2,
        States.SUCCEEDED,
    )
    assert first.retries == 2  # from TASKS["retrying"]["OPTIONS"]
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.attempts == 2
    worker = str(WorkerStatus.objects.get().pk)
    assert result.return_value == {"attempt": 2, "id": result.id, "workers": [worker, worker]}
    [error] = result.errors
    assert error.exception_class_path == "builtins.RuntimeError" and "first attempt fails" in error.traceback
    # Any execution of the call leads to the same result.
    assert default_task_backend.get_result(str(retry.pk)).id == result.id


@needs_tasks
@pytest.mark.skipif(django.VERSION < (6, 1), reason="@task passes extra options to the task class since Django 6.1")
def test_task_options_override_the_backend_options(workers):
    from django.tasks import task

    assert tasks_registry["tests.app.django_tasks.dj_fail_retried"].retries == 1
    result = dt.dj_fail_retried.enqueue("twice")
    assert TaskExec.objects.get().retries == 1
    assert workers.run("--until_done").returncode == 0
    result.refresh()
    assert result.status == TaskResultStatus.FAILED and result.attempts == 2 and Record.objects.count() == 2
    assert [e.exception_class_path for e in result.errors] == ["tests.app.django_tasks.TaskBoom"] * 2
    with pytest.raises(InvalidTask, match="retries must be a whole number"):
        task(retries=-1)(dt.dj_add.func)


@needs_tasks
def test_interrupted_execution_is_ready_again_then_runs(workers):
    result = dt.dj_record.enqueue("again")
    engine = get_engine("default")
    lost = WorkerStatus.objects.create(label="lost", timeout=1)
    [claimed] = engine.claim(lost, engine_selection(), 1, timezone.now())
    assert dt.dj_record.get_result(result.id).status == TaskResultStatus.RUNNING
    engine.interrupt(claimed, "Interrupted: its worker stopped responding.", timezone.now())

    waiting = dt.dj_record.get_result(result.id)
    assert waiting.status == TaskResultStatus.READY and waiting.worker_ids == [str(lost.pk)]
    [error] = waiting.errors
    assert error.exception_class_path == "django_toosimple_q.errors.ExecutionInterrupted"
    assert "stopped responding" in error.traceback
    assert workers.run("--until_done").returncode == 0
    done = dt.dj_record.get_result(result.id)
    assert done.status == TaskResultStatus.SUCCESSFUL and done.attempts == 2


def engine_selection():
    from django_toosimple_q.engine import Selection

    return Selection(sorted(tasks_registry), [], [])


@needs_tasks
@pytest.mark.parametrize(
    "state,class_name", [("INVALID", "ExecutionInvalid"), ("CANCELLED", "ExecutionCancelled")]
)
def test_executions_that_never_ran_are_failed(state, class_name):
    result = dt.dj_record.enqueue("x")
    TaskExec.objects.filter(pk=result.id).update(state=state, error="why", finished=timezone.now())
    failed = dt.dj_record.get_result(result.id)
    assert failed.status == TaskResultStatus.FAILED and failed.finished_at is not None
    assert [e.exception_class_path for e in failed.errors] == [f"django_toosimple_q.errors.{class_name}"]


@needs_tasks
def test_time_limit_from_options_fails_the_task(workers):
    assert tasks_registry["tests.app.django_tasks.dj_limited"].timeout == 1  # TASKS["limited"]["OPTIONS"]
    result = dt.dj_limited.enqueue(30)
    done = workers.run("--until_done")
    assert done.returncode == 0, done.stderr
    failed = dt.dj_limited.get_result(result.id)
    assert failed.status == TaskResultStatus.FAILED
    assert failed.errors[0].exception_class_path == "django_toosimple_q.errors.TimeLimitExceeded"
    assert "Time limit of 1s exceeded" in failed.errors[0].traceback


# -- async tasks, signals, the adapter ------------------------------------------------------------


@needs_tasks
def test_async_task_runs_on_the_worker(workers):
    result = dt.dj_async.enqueue("from-async")
    assert workers.run("--until_done").returncode == 0
    done = dt.dj_async.get_result(result.id)
    assert done.status == TaskResultStatus.SUCCESSFUL and done.return_value == "from-async"
    assert Record.objects.get().key == "from-async"
    assert "async says from-async" in TaskExec.objects.get().output


@needs_tasks
def test_signals_are_sent(transactional_db):
    seen = []

    def receiver(signal_name):
        def receive(sender, task_result, **kwargs):
            seen.append((signal_name, sender, task_result.id, task_result.status, task_result.attempts))

        return receive

    receivers = {name: receiver(name) for name in ("enqueued", "started", "finished")}
    task_enqueued.connect(receivers["enqueued"])
    task_started.connect(receivers["started"])
    task_finished.connect(receivers["finished"])
    try:
        flaky = dt.dj_flaky.enqueue("signals")
        run_worker_here()  # in this process, so the receivers see it
    finally:
        task_enqueued.disconnect(receivers["enqueued"])
        task_started.disconnect(receivers["started"])
        task_finished.disconnect(receivers["finished"])
    R = TaskResultStatus
    assert seen == [
        ("enqueued", QueueBackend, flaky.id, R.READY, 0),
        ("started", QueueBackend, flaky.id, R.RUNNING, 1),
        ("started", QueueBackend, flaky.id, R.RUNNING, 2),  # the retry: the call is not finished before
        ("finished", QueueBackend, flaky.id, R.SUCCESSFUL, 2),
    ]


@needs_tasks
def test_adapter_is_a_registered_task():
    adapter = tasks_registry["tests.app.django_tasks.dj_special"]
    assert isinstance(adapter, DjangoTaskAdapter) and as_registered_task(dt.dj_special) is adapter
    assert (adapter.queue_name, adapter.priority, adapter.retries) == ("special", 0, 0)
    assert tasks_registry["tests.app.django_tasks.dj_flaky"].retries == 2
    # Our own API on a Django task, as a schedule would queue it: results read the same.
    execution = as_registered_task(dt.dj_add).queue(4, 5)
    assert dt.dj_add.get_result(str(execution.pk)).args == [4, 5]
    # .using() copies share the adapter.
    assert as_registered_task(dt.dj_add.using(priority=5)) is tasks_registry["tests.app.django_tasks.dj_add"]


@needs_tasks
def test_tasks_of_other_backends_are_not_adapted():
    from django.tasks import task

    from django_toosimple_q.registry import ConfigurationError

    immediate = task(backend="immediate")(dt.plain_function)
    with pytest.raises(ConfigurationError, match="declared with TASKS\\['immediate'\\].*QueueBackend"):
        as_registered_task(immediate)
    assert as_registered_task(dt.plain_function) is None


@needs_tasks
@pytest.mark.parametrize(
    "options,message",
    [
        ({"retries": -1}, "retries"),
        ({"retry_delay": "soon"}, "retry_delay.*number of seconds"),
        ({"retries": None}, "retries must be a whole number.*not None"),
        ({"timeout": 0}, "timeout"),
        ({"retires": 3}, "unknown keys"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        QueueBackend("bad", {"OPTIONS": options})


@needs_tasks
def test_cron_schedule_on_a_django_task():
    from django_toosimple_q.decorators import schedule_task
    from django_toosimple_q.registry import schedules_registry
    from django_toosimple_q.schedules import run_schedule_now

    try:
        # Stacked on Django's @task: a seconds cron, first run as soon as a worker sees it.
        returned = schedule_task(name="dj_add_every_second", cron="* * * * * *", args=[2, 3], run_on_creation=True)(
            dt.dj_add
        )
        schedule_task(name="dj_add_on_demand", cron="manual", args=[4, 5])(dt.dj_add)
        assert returned is dt.dj_add  # the module keeps its Django Task
        run_worker_here()
        scheduled = TaskExec.objects.filter(task_name=as_registered_task(dt.dj_add).name).order_by("id")
        # The run on creation, and one more if the worker's run crossed a second boundary (a loaded machine).
        assert 1 <= scheduled.count() <= 2 and all(e.args == [2, 3] for e in scheduled)
        result = dt.dj_add.get_result(str(scheduled[0].pk))
        assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value["sum"] == 5

        on_demand = run_schedule_now("dj_add_on_demand")
        run_worker_here()
        assert dt.dj_add.get_result(str(on_demand.pk)).return_value["sum"] == 9
    finally:
        schedules_registry.pop("dj_add_every_second", None)
        schedules_registry.pop("dj_add_on_demand", None)


@needs_tasks
def test_djangos_log_line_of_a_failed_task_carries_its_traceback(run_worker, caplog):
    """Django's task_finished receiver logs with sys.exc_info(), as its own backends send the signal in
    the exception handler: ours gives it the task's exception."""
    dt.dj_fail.enqueue("logged boom")
    with caplog.at_level(logging.INFO, logger="django.tasks"):
        run_worker("--until_done")
    failed = [r for r in caplog.records if r.name == "django.tasks" and "state=FAILED" in r.getMessage()]
    assert len(failed) == 1 and failed[0].levelno == logging.ERROR
    assert failed[0].exc_info and failed[0].exc_info[0] is dt.TaskBoom
    assert "logged boom" in caplog.text and "Traceback" in caplog.text


@needs_tasks
def test_result_args_are_the_values_passed_as_django_normalises_them():
    result = dt.dj_add.enqueue(float("nan"), b=(1, 2))
    assert math.isnan(result.args[0]) and result.kwargs == {"b": [1, 2]}
    again = dt.dj_add.get_backend().get_result(result.id)
    assert math.isnan(again.args[0]) and again.kwargs == {"b": [1, 2]}


@needs_tasks
def test_a_result_json_cannot_hold_fails_the_call_without_retrying_it(run_worker):
    result = dt.dj_returns_object.enqueue()
    run_worker("--until_done")
    execution = TaskExec.objects.get()  # one attempt only, although the backend retries failures
    assert execution.state == States.FAILED and "must be JSON-serializable" in execution.error
    assert execution.exception_class == "django_toosimple_q.errors.UnstorableValue"
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
