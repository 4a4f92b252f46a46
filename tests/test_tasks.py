"""Core behaviour of tasks and the queue, on the real test database (spec samples verbatim where given)."""

from __future__ import annotations

import datetime
import decimal
import subprocess
import sys
import uuid
import warnings
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from django_toosimple_q.decorators import register_task
from django_toosimple_q.models import TaskExec
from django_toosimple_q.registry import ConfigurationError, tasks_registry

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_registry")]


def test_quickstart_sample():
    @register_task(name="my_task")
    def my_task(name):
        return f"Hello {name} !"

    my_task.queue("John")
    my_task.queue("Peter")
    call_command("worker", "--until_done", verbosity=0)
    assert sorted(e.result for e in TaskExec.objects.all()) == ["Hello John !", "Hello Peter !"]
    assert set(TaskExec.objects.values_list("state", flat=True)) == {TaskExec.States.SUCCEEDED}


@register_task()
def multiply(a, b):
    return a * b


def test_spec_result_sample():
    t = multiply.queue(3, 4)

    assert t.state == TaskExec.States.QUEUED
    assert t.result == None  # noqa: E711 - verbatim from the spec

    call_command("worker", "--until_done")

    t.refresh_from_db()
    assert t.state == TaskExec.States.SUCCEEDED
    assert t.result == 12
    assert t.started and t.finished and t.started <= t.finished
    assert t.worker is not None and t.worker.pid


def test_direct_call_runs_synchronously():
    @register_task(name="double")
    def double(x):
        return 2 * x

    assert double(21) == 42
    assert double.__name__ == "double"
    assert TaskExec.objects.count() == 0


def test_default_name_is_dotted_path():
    from tests.app import tasks

    assert tasks.add.name == "add"  # explicit name
    assert "tests.test_tasks.module_level_task" in tasks_registry


@register_task()
def module_level_task():
    return "ok"


def test_local_task_without_name_is_refused():
    with pytest.raises(ConfigurationError, match="local scope.*name="):

        @register_task()
        def local():
            pass


def test_registering_again_replaces_with_a_log_line(caplog):
    @register_task(name="again")
    def first():
        return 1

    with caplog.at_level("INFO", logger="django_toosimple_q"):

        @register_task(name="again")
        def second():
            return 2

    assert tasks_registry["again"].func is second.func
    assert "registered again" in caplog.text


@pytest.mark.parametrize(
    "options,message",
    [
        ({"priority": "high"}, "priority must be a whole number"),
        ({"retries": -1}, "retries must be"),
        ({"retry_delay": "soon"}, "retry_delay must be"),
        ({"queue": ""}, "queue must not be empty"),
    ],
)
def test_bad_options_are_refused_at_registration(options, message):
    with pytest.raises(ConfigurationError, match=message):
        register_task(name="bad", **options)(lambda: None)


def test_priority_higher_runs_first():
    order = []

    @register_task(name="low", priority=0)
    def low():
        order.append("low")

    @register_task(name="high", priority=1)
    def high():
        order.append("high")

    low.queue()
    high.queue()
    call_command("worker", "--until_done", verbosity=0)
    assert order == ["high", "low"]


def test_same_priority_runs_in_due_then_creation_order():
    order = []

    @register_task(name="step")
    def step(n):
        order.append(n)

    now = timezone.now()
    step.queue(1, due=now - timedelta(seconds=1))
    step.queue(2, due=now - timedelta(seconds=3))
    step.queue(3, due=now - timedelta(seconds=3))
    call_command("worker", "--until_done", verbosity=0)
    assert order == [2, 3, 1]


def test_queue_include_and_exclude():
    @register_task(name="long_task", queue="long_running")
    def long_task():
        return "long"

    @register_task(name="short_task")
    def short_task():
        return "short"

    long_exec = long_task.queue()
    short_exec = short_task.queue()
    assert long_exec.queue == "long_running" and short_exec.queue == "default"

    call_command("worker", "--until_done", "--exclude_queue", "long_running", verbosity=0)
    long_exec.refresh_from_db()
    short_exec.refresh_from_db()
    assert (long_exec.state, short_exec.state) == (TaskExec.States.QUEUED, TaskExec.States.SUCCEEDED)

    call_command("worker", "--until_done", "--queue", "long_running", verbosity=0)
    long_exec.refresh_from_db()
    assert long_exec.state == TaskExec.States.SUCCEEDED


def test_queue_and_exclude_queue_are_exclusive():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="not allowed with argument --queue"):
        call_command("worker", "--queue", "a", "--exclude_queue", "b")


def test_due_in_future_sleeps_and_is_not_run_early():
    @register_task(name="later")
    def later():
        return "done"

    t = later.queue(due=timezone.now() + timedelta(hours=1))
    assert t.state == TaskExec.States.SLEEPING
    call_command("worker", "--until_done", verbosity=0)
    t.refresh_from_db()
    assert t.state == TaskExec.States.SLEEPING

    TaskExec.objects.filter(pk=t.pk).update(due=timezone.now() - timedelta(seconds=1))
    call_command("worker", "--until_done", verbosity=0)
    t.refresh_from_db()
    assert t.state == TaskExec.States.SUCCEEDED


def test_spec_due_sample_fixed_and_naive_due_is_current_time_zone():
    @register_task(name="greet_later")
    def my_task(name):
        return name

    # The spec queues "John" for a task taking no argument; ours takes one.
    t = my_task.queue("John", due=datetime.datetime.now() + timedelta(hours=1))
    assert t.state == TaskExec.States.SLEEPING
    assert timezone.is_aware(t.due)
    assert abs((t.due - timezone.now()) - timedelta(hours=1)) < timedelta(minutes=1)


def test_queue_checks_the_signature():
    @register_task(name="no_args")
    def my_task():
        pass

    with pytest.raises(TypeError, match="'no_args' cannot be queued"):
        my_task.queue("John")
    assert TaskExec.objects.count() == 0


def test_unstorable_argument_is_refused_and_nothing_written():
    @register_task(name="takes_obj")
    def takes_obj(obj, other=None):
        pass

    with pytest.raises(TypeError, match=r"'takes_obj'.*positional argument 0.*object"):
        takes_obj.queue(object())
    with pytest.raises(TypeError, match=r"keyword argument 'other'"):
        takes_obj.queue(1, other=[1, {"x": lambda: 1}])
    assert TaskExec.objects.count() == 0


def test_rich_values_round_trip_through_the_database():
    value = {
        "dt": timezone.now(),
        "naive": datetime.datetime(2024, 3, 1, 12, 30),
        "date": datetime.date(2024, 2, 29),
        "time": datetime.time(23, 59, 1, 5),
        "delta": timedelta(days=-1, seconds=3, microseconds=7),
        "dec": decimal.Decimal("1.10"),
        "uuid": uuid.uuid4(),
        "tuple": (1, (2, "3")),
        "bytes": b"\x00\xff",
        "set": {1, 2},
        "intkeys": {1: "a", (1, 2): "b"},
        "tag": {"__tsq__": "not a tag"},
        "float": [1.5, float("inf")],
        "unicode": "héllo ✓",
        "none": None,
    }

    @register_task(name="identity")
    def identity(v):
        assert v == value
        return v

    t = identity.queue(value)
    call_command("worker", "--until_done", verbosity=0)
    t = TaskExec.objects.get(pk=t.pk)
    assert t.state == TaskExec.States.SUCCEEDED, t.error
    assert t.args == [value]
    assert t.result == value
    assert type(t.result["tuple"]) is tuple and type(t.result["dec"]) is decimal.Decimal


def test_exception_marks_failed_with_traceback():
    from tests.app.tasks import fail

    t = fail.queue("kaboom")
    call_command("worker", "--until_done", verbosity=0)
    t.refresh_from_db()
    assert t.state == TaskExec.States.FAILED
    assert "Traceback" in t.error and "ValueError: kaboom" in t.error
    assert t.replaced_by is None


def test_base_exceptions_in_task_do_not_stop_the_worker():
    @register_task(name="exits")
    def exits():
        raise SystemExit(3)

    @register_task(name="interrupts")
    def interrupts():
        raise KeyboardInterrupt

    a, b = exits.queue(), interrupts.queue()
    call_command("worker", "--until_done", verbosity=0)
    a.refresh_from_db()
    b.refresh_from_db()
    assert a.state == b.state == TaskExec.States.FAILED
    assert "SystemExit" in a.error and "KeyboardInterrupt" in b.error


def test_unstorable_result_is_reported_not_crashing():
    @register_task(name="returns_object")
    def returns_object():
        return object()

    t = returns_object.queue()
    call_command("worker", "--until_done", verbosity=0)
    t.refresh_from_db()
    assert t.state == TaskExec.States.FAILED
    assert "cannot be stored" in t.error and "Not retried" in t.error


def test_retries_with_doubling_delay():
    attempts = []

    @register_task(name="download_data", retries=2, retry_delay=60)
    def download_data():
        attempts.append(1)
        raise RuntimeError("network down")

    first = download_data.queue()
    call_command("worker", "--until_done", verbosity=0)
    first.refresh_from_db()
    assert first.state == TaskExec.States.FAILED
    second = first.replaced_by
    assert second.state == TaskExec.States.SLEEPING
    assert (second.retries, second.retry_delay) == (1, 120)
    assert timedelta(seconds=59) < second.due - first.finished <= timedelta(seconds=61)
    assert list(second.replaces.all()) == [first]

    # Not runnable before it is due...
    call_command("worker", "--until_done", verbosity=0)
    second.refresh_from_db()
    assert second.state == TaskExec.States.SLEEPING and len(attempts) == 1

    # ...then runnable, and the delay doubles again.
    TaskExec.objects.filter(pk=second.pk).update(due=timezone.now())
    call_command("worker", "--until_done", verbosity=0)
    second.refresh_from_db()
    third = second.replaced_by
    assert second.state == TaskExec.States.FAILED
    assert (third.retries, third.retry_delay) == (0, 240)
    assert timedelta(seconds=119) < third.due - second.finished <= timedelta(seconds=121)

    TaskExec.objects.filter(pk=third.pk).update(due=timezone.now())
    call_command("worker", "--until_done", verbosity=0)
    third.refresh_from_db()
    assert third.state == TaskExec.States.FAILED and third.replaced_by is None
    assert len(attempts) == 3


def test_unique_spec_sample():
    @register_task(name="cleanup", unique=True)
    def cleanup():
        ...

    a = cleanup.queue()
    b = cleanup.queue()  # this will be ignored as long as the first one is still queued
    assert a.pk == b.pk
    assert TaskExec.objects.count() == 1

    call_command("worker", "--until_done", verbosity=0)
    c = cleanup.queue()
    assert c.pk != a.pk and TaskExec.objects.count() == 2


def test_unique_distinguishes_arguments_and_moves_due_earlier():
    @register_task(name="refresh", unique=True)
    def refresh(key, full=False):
        ...

    later = timezone.now() + timedelta(hours=2)
    a = refresh.queue("x", due=later)
    assert refresh.queue("y", due=later).pk != a.pk
    assert refresh.queue("x", full=True, due=later).pk != a.pk

    b = refresh.queue("x", due=later + timedelta(hours=1))
    assert b.pk == a.pk and b.due == later  # a later due leaves it alone
    sooner = timezone.now() + timedelta(minutes=5)
    c = refresh.queue("x", due=sooner)
    assert c.pk == a.pk and c.due == sooner and c.state == TaskExec.States.SLEEPING
    d = refresh.queue("x")
    assert d.pk == a.pk and d.state == TaskExec.States.QUEUED
    assert TaskExec.objects.count() == 3


def test_unique_call_merges_into_sleeping_retry():
    calls = []

    @register_task(name="flaky_unique", unique=True, retries=1, retry_delay=3600)
    def flaky_unique():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("first time fails")

    first = flaky_unique.queue()
    call_command("worker", "--until_done", verbosity=0)
    first.refresh_from_db()
    retry = first.replaced_by
    assert retry.state == TaskExec.States.SLEEPING

    again = flaky_unique.queue()
    assert again.pk == retry.pk and again.state == TaskExec.States.QUEUED
    call_command("worker", "--until_done", verbosity=0)
    retry.refresh_from_db()
    assert retry.state == TaskExec.States.SUCCEEDED and len(calls) == 2


def test_rolled_back_queue_writes_nothing():
    from tests.app.tasks import add

    with pytest.raises(RuntimeError):
        with transaction.atomic():
            add.queue(1, 2)
            raise RuntimeError
    assert TaskExec.objects.count() == 0


def test_unknown_task_is_invalid_and_worker_goes_on():
    from tests.app.tasks import add

    ghost = TaskExec.objects.create(task_name="no.such.task", args=[], kwargs={})
    ok = add.queue(1, 2)
    call_command("worker", "--until_done", verbosity=0)
    ghost.refresh_from_db()
    ok.refresh_from_db()
    assert ghost.state == TaskExec.States.INVALID
    assert "registered" in ghost.error
    assert ok.state == TaskExec.States.SUCCEEDED and ok.result == 3


def test_undecodable_arguments_are_invalid():
    from tests.app.tasks import add

    t = add.queue(1, 2)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE toosimpleq_taskexec SET args = %s WHERE id = %s", ["[1, {not json", t.pk])
    mismatched = add.queue(1, 2)
    TaskExec.objects.filter(pk=mismatched.pk).update(kwargs={"c": 3})
    call_command("worker", "--until_done", verbosity=0)
    t.refresh_from_db()
    mismatched.refresh_from_db()
    assert t.state == TaskExec.States.INVALID and "cannot be decoded" in t.error
    assert mismatched.state == TaskExec.States.INVALID and "signature" in mismatched.error


def test_output_is_captured_per_execution():
    from tests.app.tasks import echo

    a, b = echo.queue("first"), echo.queue("second")
    call_command("worker", "--until_done", "--threads", "2", verbosity=0)
    a.refresh_from_db()
    b.refresh_from_db()
    assert a.output == "echo: first\n" and b.output == "echo: second\n"


def test_once_runs_one_pass():
    from tests.app.tasks import add

    for i in range(3):
        add.queue(i, i)
    call_command("worker", "--once", verbosity=0)
    assert TaskExec.objects.filter(state=TaskExec.States.SUCCEEDED).count() == 1
    call_command("worker", "--once", "--threads", "2", verbosity=0)
    assert TaskExec.objects.filter(state=TaskExec.States.SUCCEEDED).count() == 3


def test_queuing_while_apps_load_warns_pointing_at_the_line(tmp_path, transactional_db):
    """A ``.queue()`` at the module level of a tasks.py runs at every start of Django: it is warned
    about (with the file and line), and still queued."""
    from tests.conftest import env_with_app

    env = env_with_app(
        tmp_path,
        "queued_on_import",
        "from django_toosimple_q.decorators import register_task\n"
        "\n"
        "@register_task(name='queued_on_import')\n"
        "def queued_on_import():\n"
        "    return 1\n"
        "\n"
        "queued_on_import.queue()\n",
    )
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "tasks.py:7: RuntimeWarning: Task 'queued_on_import' is queued while Django is still loading" in done.stderr
    assert TaskExec.objects.filter(task_name="queued_on_import").count() == 1

    @register_task(name="queued_later")
    def queued_later():
        return 1

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        queued_later.queue()  # apps are ready: no warning
