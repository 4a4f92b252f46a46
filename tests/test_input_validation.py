"""Issue 11, input side: nothing the database would refuse later is accepted at registration or queue time.

Each refusal names the task (or setting) and what to change, and writes nothing; each value at the
edge of what is accepted is shown to be stored and read back by the database, and run by a real
worker subprocess, on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

import datetime
import math
import re

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

from django_toosimple_q.errors import InvalidCall
from django_toosimple_q import serialization, validation
from django_toosimple_q.backends import AVAILABLE
from django_toosimple_q.decorators import register_task, schedule_task
from django_toosimple_q.models import TaskExec
from django_toosimple_q.registry import Call, ConfigurationError, schedules_registry, tasks_registry
from tests.app import tasks as app_tasks
from tests.conftest import schedule_problem

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_registry")]
States = TaskExec.States
UTC = datetime.timezone.utc
DAYS_8 = 8 * 24 * 3600


def read_back(execution: TaskExec) -> TaskExec:
    """The row as the database returns it (not the object we saved)."""
    return TaskExec.objects.get(pk=execution.pk)


def nested_list(depth: int) -> list:
    return app_tasks._nested_list(depth)


# -- registration options -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options,message",
    [
        ({"priority": 2**31}, r"priority must be between -2147483648 and 2147483647.*not 2147483648"),
        ({"priority": -(2**31) - 1}, r"priority must be between"),
        ({"priority": True}, r"priority must be a whole number, not True"),
        ({"priority": 1.5}, r"priority must be a whole number"),
        ({"retries": True}, r"retries must be a whole number from 0 to 1000, not True"),
        ({"retries": -1}, r"retries must be a whole number from 0 to 1000"),
        ({"retries": 2**40}, r"retries must be a whole number from 0 to 1000, not 1099511627776"),
        ({"retries": 10**5000}, r"retries must be .* not an int of 16610 bits"),
        ({"retry_delay": math.nan}, r"retry_delay must be a finite number of seconds >= 0, not nan"),
        ({"retry_delay": math.inf}, r"retry_delay must be a finite number of seconds >= 0, not inf"),
        ({"retry_delay": 10**400}, r"retry_delay must be a finite number"),
        ({"retry_delay": -1}, r"retry_delay must be a finite number of seconds >= 0"),
        ({"retry_delay": True}, r"retry_delay must be a number of seconds, not True"),
        ({"retries": 3, "retry_delay": 1e12}, r"retry_delay is too long with retries=3.*lower retry_delay or retries"),
        ({"retries": 1000, "retry_delay": 1}, r"retry_delay is too long with retries=1000"),
        ({"timeout": math.nan}, r"timeout must be a number of seconds > 0 and at most 604800"),
        ({"timeout": math.inf}, r"timeout must be a number of seconds > 0"),
        ({"timeout": 0}, r"timeout must be"),
        ({"timeout": True}, r"timeout must be a number of seconds or None, not True"),
        ({"timeout": DAYS_8}, r"timeout must be .* at most 604800 \(7 days\)"),
        ({"queue": ""}, r"queue must not be empty"),
        ({"queue": "q" * 256}, r"queue must be at most 255 characters long, not 256"),
        ({"queue": "a\x00b"}, r"queue must not contain '\\x00' \(at position 1"),
        ({"queue": "a\ud800"}, r"queue must not contain '\\ud800'"),
        ({"queue": 5}, r"queue must be a string, not 5"),
    ],
)
def test_bad_options_are_refused_at_registration_naming_the_task(options, message):
    before = dict(tasks_registry)
    with pytest.raises(ConfigurationError, match=message) as refused:
        register_task(name="bad_options", **options)(lambda: None)
    assert str(refused.value).startswith("Task 'bad_options': ")
    assert tasks_registry == before


@pytest.mark.parametrize(
    "name,message",
    [
        ("", "must not be empty"),
        ("n" * 256, "must be at most 255 characters long, not 256"),
        ("task\x00name", r"must not contain '\\x00'"),
        ("task\udc80", r"must not contain '\\udc80'"),
    ],
)
def test_bad_task_names_are_refused(name, message):
    with pytest.raises(ConfigurationError, match=f"Task name .* {message}.*give the task another name"):
        register_task(name=name)(lambda: None)


def test_options_at_the_limits_are_accepted():
    register_task(name="edges", priority=-(2**31), retries=1000, retry_delay=0, timeout=7 * 24 * 3600)(lambda: None)
    register_task(name="edges", retries=2, retry_delay=app_tasks.LONGEST_RETRY_DELAY)(lambda: None)
    register_task(name="n" * 255, queue="🚀" * 255)(lambda: None)


def test_a_task_at_the_limits_is_stored_and_run_by_a_worker(workers):
    """Highest priority, a 255-character queue name with characters outside the BMP, the longest time
    limit: the database stores them as they are and a worker serving that queue runs the task."""
    execution = app_tasks.at_the_limits.queue("é\U0001f680")
    stored = read_back(execution)
    assert (stored.priority, stored.queue, stored.args) == (2**31 - 1, app_tasks.WIDEST_QUEUE, ["é\U0001f680"])
    finished = workers.run("--until_done", "--queue", app_tasks.WIDEST_QUEUE)
    assert finished.returncode == 0, finished.stderr
    stored = read_back(execution)
    assert (stored.state, stored.result) == (States.SUCCEEDED, "é\U0001f680")


def test_the_longest_retry_delays_do_not_overflow_in_the_worker(workers):
    """Issue 11 #3: the doubled delays stay storable: each retry is recorded, the worker never crashes."""
    first = app_tasks.fails_with_longest_retries.queue()
    harmless = app_tasks.add.queue(1, 2)
    finished = workers.run("--until_done")
    assert finished.returncode == 0, finished.stderr
    first = read_back(first)
    assert first.state == States.FAILED and read_back(harmless).result == 3
    retry = first.replaced_by
    assert retry.state == States.SLEEPING and retry.retries == 1
    wait = app_tasks.LONGEST_RETRY_DELAY
    assert abs((retry.due - first.finished).total_seconds() - wait) < 1
    # Make the retry due now: its own failure schedules the last retry, 2 * delay = 100 years later.
    TaskExec.objects.filter(pk=retry.pk).update(state=States.QUEUED, due=timezone.now())
    finished = workers.run("--until_done")
    assert finished.returncode == 0, finished.stderr
    retry = read_back(retry)
    last = retry.replaced_by
    assert retry.state == States.FAILED and last.state == States.SLEEPING and last.retries == 0
    assert abs((last.due - retry.finished).total_seconds() - 2 * wait) < 1
    assert math.isfinite(last.retry_delay)  # never used: no retry is left


# -- due ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("due", [datetime.date(2030, 1, 1), "2030-01-01T00:00:00", 1893456000])
def test_due_of_the_wrong_type_is_a_type_error_naming_the_task(due):
    with pytest.raises(TypeError, match=r"Task 'add': due must be a datetime\.datetime, not "):
        app_tasks.add.queue(1, 2, due=due)
    with pytest.raises(TypeError, match=r"Task 'add': due must be a datetime\.datetime"):
        app_tasks.add.queue_many([(1, 2)], due=due)
    assert not TaskExec.objects.exists()


@pytest.mark.parametrize(
    "zone,due",
    [
        # Issue 11 #1: past year 9999 once in UTC (PostgreSQL stored it, then every worker crashed).
        ("America/New_York", datetime.datetime.max),
        # The mirror case: before year 1 once in UTC.
        ("Asia/Tokyo", datetime.datetime.min),
        # Representable, but less than a day from the end: unreadable in a zone east of UTC.
        ("UTC", datetime.datetime(9999, 12, 31, 12, tzinfo=UTC)),
        ("UTC", datetime.datetime(1, 1, 1, 12, tzinfo=UTC)),
        ("UTC", datetime.datetime.max.replace(tzinfo=datetime.timezone(datetime.timedelta(hours=-23)))),
    ],
)
def test_due_out_of_range_is_a_value_error_naming_the_task(zone, due):
    with override_settings(TIME_ZONE=zone):
        with pytest.raises(ValueError, match=r"Task 'add': due .* is out of range: it must lie between 0001-01-02"):
            app_tasks.add.queue(1, 2, due=due)
        with pytest.raises(ValueError, match=r"Task 'add': due .* is out of range"):
            app_tasks.add.queue_many([(1, 2), (3, 4)], due=due)
    assert not TaskExec.objects.exists()


@override_settings(USE_TZ=False)
def test_due_out_of_range_without_time_zones():
    with pytest.raises(ValueError, match="out of range"):
        app_tasks.add.queue(1, 2, due=datetime.datetime.max)
    # An aware due is converted to the local time the database holds.
    due = datetime.datetime(2030, 1, 1, 12, tzinfo=UTC)
    stored = read_back(app_tasks.add.queue(1, 2, due=due))
    assert stored.due == timezone.make_naive(due)


def test_due_at_the_limits_is_stored_read_back_and_shown(workers, admin_client):
    """The earliest and latest accepted due times: stored, read back in any time zone, listed by the
    admin, and a worker runs what is due and leaves the rest asleep (issue 11 #1: it used to crash)."""
    earliest = app_tasks.add.queue(1, 1, due=validation.EARLIEST_DUE)
    latest = app_tasks.add.queue(2, 2, due=validation.LATEST_DUE)
    harmless = app_tasks.add.queue(3, 3)
    for zone in ("Pacific/Kiritimati", "Pacific/Pago_Pago", "America/New_York"):
        with override_settings(TIME_ZONE=zone):
            assert read_back(earliest).due == validation.EARLIEST_DUE
            assert read_back(latest).due == validation.LATEST_DUE
            timezone.localtime(read_back(latest).due)
            timezone.localtime(read_back(earliest).due)
            page = admin_client.get(reverse("admin:toosimpleq_taskexec_changelist"))
            assert page.status_code == 200
    finished = workers.run("--until_done")
    assert finished.returncode == 0, finished.stderr
    assert [read_back(e).state for e in (earliest, latest, harmless)] == [States.SUCCEEDED, States.SLEEPING, States.SUCCEEDED]


# -- arguments ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "report-\udcff.txt",  # a file name decoded with surrogateescape
        "\ud800\udc00",  # two lone surrogates stay two code points (JSON would merge the pair)
        "a\x00b",  # NUL: PostgreSQL refuses it in text, the JSON escape \u0000 goes through
        {"key\udcff": ["\ud800", "\x00"]},
        {"__tsq__": "\ud800"},
        10**3999,  # 4000 digits: the largest accepted
        -(10**3999),
        nested_list(serialization.MAX_DEPTH),
    ],
    ids=["surrogateescape", "surrogate-pair", "nul", "dict", "tag-key", "widest-int", "widest-negative", "deepest"],
)
def test_arguments_at_the_edges_are_stored_faithfully_and_run(value, workers):
    execution = app_tasks.identity.queue(value)
    assert read_back(execution).args == [value]
    finished = workers.run("--until_done")
    assert finished.returncode == 0, finished.stderr
    stored = read_back(execution)
    assert stored.state == States.SUCCEEDED and stored.result == value
    if value == "\ud800\udc00":
        assert len(stored.result) == 2


def test_unique_task_with_lone_surrogates_merges_identical_calls():
    @register_task(name="unique_echo", unique=True)
    def unique_echo(value):
        return value

    assert unique_echo.queue("\udcff").pk == unique_echo.queue("\udcff").pk
    assert unique_echo.queue("\udcfe").pk != unique_echo.queue("\udcff").pk
    deepest = nested_list(serialization.MAX_DEPTH)
    assert unique_echo.queue(deepest).pk == unique_echo.queue(deepest).pk


def _cycle() -> list:
    return app_tasks._self_containing_list()


def _dict_cycle() -> dict:
    value: dict = {"name": "x"}
    value["self"] = value
    return value


class HashableList(list):
    """A list that can be a dict key: it would read back as a plain, unhashable list."""

    __hash__ = object.__hash__  # type: ignore[assignment]


@pytest.mark.parametrize(
    "args,kwargs,message",
    [
        ((10**5000,), {}, r"positional argument 0 is an int of more than 4000 digits.*hex\(n\)"),
        ((-(10**4000),), {}, r"positional argument 0 is an int of more than 4000 digits"),
        ((_cycle(),), {}, r"positional argument 0\[0\] is a container that contains itself"),
        ((), {"value": _dict_cycle()}, r"keyword argument 'value'\['self'\] is a container that contains itself"),
        ((nested_list(serialization.MAX_DEPTH + 1),), {}, r"positional argument 0\[0\]\[0\].*more than 100 levels deep"),
        ((nested_list(5000),), {}, r"positional argument 0\[0\]\[0\]\[0\]\[0\]\[0\]\.\.\.\(90 more\)\.\.\.\[0\].* more than 100 levels deep"),
        (({HashableList([1]): 1},), {}, r"positional argument 0 key \[1\] is a HashableList, which would read back unhashable"),
        (({frozenset([1]): [object()]},), {}, r"positional argument 0\[frozenset\(\{1\}\)\]\[0\] is a builtins\.object"),
    ],
    ids=["huge-int", "huge-negative", "cycle", "dict-cycle", "too-deep", "very-deep", "unhashable-key", "object"],
)
def test_unstorable_arguments_are_type_errors_naming_the_task_and_the_argument(args, kwargs, message):
    @register_task(name="takes_anything")
    def takes_anything(*args, **kwargs):
        return None

    with pytest.raises(TypeError, match=r"Task 'takes_anything' cannot be queued: " + message) as refused:
        takes_anything.queue(*args, **kwargs)
    assert type(refused.value) is InvalidCall and isinstance(refused.value, TypeError)  # not ValueError, RecursionError or the driver's errors
    with pytest.raises(TypeError, match=r"Call #1: Task 'takes_anything' cannot be queued: " + message):
        takes_anything.queue_many([Call(1), Call(*args, **kwargs)])
    assert not TaskExec.objects.exists()


def test_dumps_raises_only_unstorable_value():
    """What the worker relies on to record an unstorable result as FAILED, not retried."""
    for value in (10**5000, _cycle(), nested_list(5000), object(), {HashableList(): 1}):
        with pytest.raises(serialization.UnstorableValue):
            serialization.dumps(value, "the result")


def test_results_say_why_they_cannot_be_stored_and_results_at_the_edges_are_stored(workers):
    """Issue 11 #4 (tests/test_poison.py checks that unstorable results are FAILED, not retried): the
    error says where and why; results at the edges of the limits are stored as they are."""
    reasons = {
        "huge_int": "The task ran, but the result is an int of more than 4000 digits, which cannot be stored",
        "cyclic": "The task ran, but the result[1] is a container that contains itself (a reference cycle)",
        "deep": "The task ran, but the result[0][0][0][0][0]...(90 more)...[0][0][0][0][0] nests containers more than 100",
        "object": "The task ran, but the result is a builtins.object, which cannot be stored",
    }
    unstorable = {kind: tasks_registry["poison_result"].queue(kind) for kind in reasons}
    edges = {kind: app_tasks.edge_result.queue(kind) for kind in app_tasks.EDGE_RESULTS}
    harmless = app_tasks.add.queue(2, 3)
    finished = workers.run("--until_done")
    assert finished.returncode == 0, finished.stderr
    assert read_back(harmless).result == 5
    for kind, execution in unstorable.items():
        stored = read_back(execution)
        assert stored.state == States.FAILED and stored.replaced_by is None, kind
        assert stored.error.startswith(reasons[kind]), stored.error
    for kind, execution in edges.items():
        stored = read_back(execution)
        assert stored.state == States.SUCCEEDED, (kind, stored.error)
        assert stored.result == app_tasks.EDGE_RESULTS[kind](), kind


# -- schedules ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options,message",
    [
        ({"queue": "q" * 256}, r"queue must be at most 255 characters long"),
        ({"queue": "timers\x00"}, r"queue must not contain '\\x00'"),
        ({"name": "every\x00day"}, r"the name must not contain '\\x00'.*@schedule_task\(name=...\)"),
        ({"name": "s" * 256}, r"the name must be at most 255 characters long"),
        ({"timezone": 5}, r"timezone must be the name of an IANA time zone .* not 5"),
        ({"timezone": "Europe/Paris\x00"}, r"'Europe/Paris\\x00' is not a known IANA time zone name"),
        ({"args": "ab"}, r"args must be a list or tuple of positional arguments, not 'ab'"),
        ({"kwargs": [("a", 1)]}, r"kwargs must be a dict of keyword arguments or None"),
        ({"args": [10**5000]}, r"Task 'scheduled_echo' cannot be queued: positional argument 0 is an int of more than"),
        ({"args": [_cycle()]}, r"Task 'scheduled_echo' cannot be queued: positional argument 0\[0\] is a container that"),
    ],
)
def test_bad_schedules_are_refused_naming_the_schedule(options, message):
    @register_task(name="scheduled_echo")
    def scheduled_echo(*args, **kwargs):
        return args

    options = {"name": "nightly", **options}
    problem = schedule_problem(lambda: schedule_task(cron="@daily", **options)(scheduled_echo), options["name"])
    assert re.search(r"Schedule .* \(cron '@daily'\): " + message, problem), problem


def test_schedule_arguments_with_lone_surrogates_are_stored_faithfully(run_worker):
    @register_task(name="scheduled_value")
    def scheduled_value(value):
        return value

    schedule_task(name="surrogates", cron="manual", args=["\udcff\x00"])(scheduled_value)
    execution = schedules_registry["surrogates"].run_now()
    run_worker("--until_done")
    assert read_back(execution).result == "\udcff\x00"


# -- settings of Django's tasks backend and contrib.mail --------------------------------------------------


@pytest.mark.skipif(not AVAILABLE, reason="Django's tasks framework needs Django >= 6.0")
@pytest.mark.parametrize(
    "params,message",
    [
        ({"OPTIONS": {"retries": 2**40}}, r"\['OPTIONS'\]: retries must be a whole number from 0 to 1000"),
        ({"OPTIONS": {"retry_delay": math.inf}}, r"\['OPTIONS'\]: retry_delay must be a finite number"),
        ({"OPTIONS": {"retries": 3, "retry_delay": 1e12}}, r"\['OPTIONS'\]: retry_delay is too long with retries=3"),
        ({"OPTIONS": {"timeout": math.nan}}, r"\['OPTIONS'\]: timeout must be a number of seconds > 0"),
        ({"QUEUES": ["ok", "bad\x00"]}, r"\['QUEUES'\]: a queue name must not contain '\\x00'"),
        ({"QUEUES": ["q" * 256]}, r"\['QUEUES'\]: a queue name must be at most 255 characters"),
    ],
)
def test_django_backend_settings_use_the_same_rules(params, message):
    from django_toosimple_q.backends import QueueBackend

    with pytest.raises(ImproperlyConfigured, match=r"TASKS\['bad'\]" + message):
        QueueBackend("bad", params)


@pytest.mark.skipif(not AVAILABLE, reason="Django's tasks framework needs Django >= 6.0")
def test_django_enqueue_refuses_what_cannot_be_stored():
    from tests.app import django_tasks as dt

    name = "tests.app.django_tasks.dj_add"
    with pytest.raises(ValueError, match=rf"Task '{name}': due .* is out of range"):
        dt.dj_add.using(run_after=datetime.datetime.max.replace(tzinfo=UTC)).enqueue(1, 2)
    with pytest.raises(TypeError, match=r"The arguments of tests\.app\.django_tasks\.dj_add must be JSON-serializable"):
        dt.dj_add.enqueue(_cycle(), 2)
    with pytest.raises(TypeError, match=r"must be JSON-serializable: maximum recursion depth"):
        dt.dj_add.enqueue(nested_list(5000), 2)
    with pytest.raises(TypeError, match=rf"Task '{name}' cannot be queued: positional argument 0.*more than 100 levels"):
        dt.dj_add.enqueue(nested_list(serialization.MAX_DEPTH + 1), 2)
    assert not TaskExec.objects.exists()
    # Lone surrogates and NUL go through JSON and are stored faithfully.
    result = dt.dj_add.enqueue("\udcff", "\x00")
    assert read_back(TaskExec.objects.get(pk=result.id)).args == ["\udcff", "\x00"]


@pytest.mark.parametrize(
    "setting,value,message",
    [
        ("TOOSIMPLEQ_EMAIL_RETRIES", 2**40, r"TOOSIMPLEQ_EMAIL_RETRIES must be a whole number from 0 to 1000"),
        ("TOOSIMPLEQ_EMAIL_RETRY_DELAY", math.nan, r"TOOSIMPLEQ_EMAIL_RETRY_DELAY must be a finite number"),
        ("TOOSIMPLEQ_EMAIL_RETRY_DELAY", 1e12, r"TOOSIMPLEQ_EMAIL_RETRY_DELAY is too long with retries=10"),
        ("TOOSIMPLEQ_EMAIL_QUEUE", "mail\x00", r"TOOSIMPLEQ_EMAIL_QUEUE \(a queue name\) must not contain"),
    ],
)
def test_mail_settings_use_the_same_rules(setting, value, message):
    from django.core.mail import EmailMessage

    from django_toosimple_q.contrib.mail.tasks import queue_emails

    with override_settings(**{setting: value}):
        with pytest.raises(ImproperlyConfigured, match=message):
            queue_emails([EmailMessage("subject", "body", "from@example.com", ["to@example.com"])])
    assert not TaskExec.objects.exists()


def test_every_refusal_is_a_toosimpleq_error_and_the_builtin_it_always_was(clean_registry):
    """One base class to catch them all, without breaking code that catches TypeError/ValueError."""
    from django_toosimple_q.decorators import register_task
    from django_toosimple_q.errors import ConfigurationError, InvalidCall, InvalidDue, ToosimpleQError

    @register_task(name="one_arg")
    def one_arg(x):
        return x

    with pytest.raises(InvalidCall) as refused:
        one_arg.queue()
    assert isinstance(refused.value, (ToosimpleQError, TypeError))
    with pytest.raises(InvalidCall) as refused:
        one_arg.queue(object())
    assert isinstance(refused.value, (ToosimpleQError, TypeError))
    with pytest.raises(InvalidDue) as refused:
        one_arg.queue(1, due=datetime.datetime.max.replace(tzinfo=datetime.timezone.utc))
    assert isinstance(refused.value, (ToosimpleQError, ValueError))
    with pytest.raises(ConfigurationError) as refused:
        register_task(name="bad", retries=-1)(lambda: None)
    assert isinstance(refused.value, (ToosimpleQError, ValueError))
