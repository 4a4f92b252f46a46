"""Flow control (#17): concurrency limits (global and per key), rate limits and paused queues, enforced
in the claim by the database across real worker processes (3 workers x 4 threads), checked on a
recorder table (``FlowRun``: each run's start and end) and on the executions' claim times.

The workers run with TOOSIMPLEQ_TEST_FLOW=1 (tests/settings.py: the queues' limits; tests/app/tasks.py:
the limited tasks of tests/app/flow_tasks.py).
"""

from __future__ import annotations

import datetime
import json
import signal
import time
from collections import defaultdict

import pytest
from django.core.management import call_command
from django.test import override_settings
from hypothesis import given, settings as hypothesis_settings, strategies as st

from django_toosimple_q import flow, limits
from django_toosimple_q.errors import ConfigurationError
from django_toosimple_q.models import FlowStart, TaskExec, WorkerStatus
from django_toosimple_q.registry import Task, tasks_registry
from tests.app import flow_tasks
from tests.app.models import FlowRun

from .conftest import wait_for

States = TaskExec.States
FLOW_ENV = {"TOOSIMPLEQ_TEST_FLOW": "1"}
TICK = "0.5"
#: Registered by the import above; taken out of the registry until this module's tests run, so that
#: workers run in-process by other tests keep their unlimited claims.
FLOW_TASKS = {task.name: task for task in vars(flow_tasks).values() if isinstance(task, Task)}
for _name in FLOW_TASKS:
    tasks_registry.pop(_name, None)


@pytest.fixture(autouse=True, scope="module")
def flow_tasks_registered():
    """The flow tasks are registered in this process while this module runs (see flow_tasks.py)."""
    tasks_registry.update(FLOW_TASKS)
    yield
    for name in FLOW_TASKS:
        tasks_registry.pop(name, None)


def start_workers(workers, count=3, threads=4, env=None, args=()):
    return [
        workers.start("--tick", TICK, "--threads", str(threads), *args, env_extra={**FLOW_ENV, **(env or {})})
        for _ in range(count)
    ]


def most_at_once(runs) -> int:
    """The largest number of runs in progress at one instant (each run: ``start`` to ``end``)."""
    events = sorted([(r.start, 1) for r in runs] + [(r.end, -1) for r in runs], key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def all_done(count: int, task: str | None = None):
    def check():
        rows = FlowRun.objects.filter(end__isnull=False)
        if task:
            rows = rows.filter(task=task)
        return rows.count() >= count

    return check


def drained(task: str | None = None):
    """Nothing waiting or running (the recorder's end is written just before the outcome is recorded)."""
    rows = TaskExec.objects.filter(state__in=[*States.waiting(), States.PROCESSING])
    if task:
        rows = rows.filter(task_name=task)
    wait_for(lambda: not rows.exists(), timeout=60, message=f"{task or 'every task'} drained")


def queue(name: str, calls) -> list[TaskExec]:
    return tasks_registry[name].queue_many(calls)


# -- concurrency ---------------------------------------------------------------------------------------


def test_queue_task_and_key_concurrency_limits_hold_while_others_flow(workers):
    queue("flow_queued", [(f"q{i}", 0.1) for i in range(16)])
    queue("flow_keyed", [{"customer": f"c{i % 4}", "seconds": 0.1} for i in range(32)])
    queue("flow_task_limited", [(f"t{i}", 0.1) for i in range(12)])
    queue("flow_plain", [(f"p{i}", 0.3) for i in range(24)])
    start_workers(workers)
    wait_for(all_done(16 + 32 + 12 + 24), timeout=120, message="every flow task ran")
    drained()

    runs = defaultdict(list)
    for run in FlowRun.objects.all():
        runs[run.task].append(run)
    # The queue flow_one (concurrency 2), the task flow_task_limited (3), each key of flow_keyed (2).
    # Never more than the limit; and more than one at a time (the limit is used, not only respected; how
    # close to it throughput gets is bench/'s business).
    assert most_at_once(runs["flow_queued"]) == 2
    assert 2 <= most_at_once(runs["flow_task_limited"]) <= 3
    by_key = defaultdict(list)
    for run in runs["flow_keyed"]:
        by_key[run.key].append(run)
    assert sorted(by_key) == ["c0", "c1", "c2", "c3"]
    assert all(most_at_once(key_runs) <= 2 for key_runs in by_key.values())
    # Other keys are not held back behind a full one: more than one key's worth ran at once.
    assert most_at_once(runs["flow_keyed"]) > 2
    # The unlimited queue kept flowing on every free thread.
    assert most_at_once(runs["flow_plain"]) > 3
    assert TaskExec.objects.exclude(state=States.SUCCEEDED).count() == 0
    keys = set(TaskExec.objects.filter(task_name="flow_keyed").values_list("concurrency_key", flat=True))
    assert keys == {"c0", "c1", "c2", "c3"}


def test_workflow_steps_obey_the_limits_of_their_queue(workers):
    """Steps are executions: a group in a limited queue runs within the queue's limit, and its fan-in
    callback (unlimited) runs once, after the last member, with every member's result in order."""
    from django_toosimple_q.workflows import chain, group

    members = group(tasks_registry["flow_queued"].s(f"w{i}", 0.1) for i in range(8))
    callback = chain(members, tasks_registry["flow_plain"].s(0.01)).queue()
    start_workers(workers)
    final = callback.wait(timeout=120)
    assert final.state == States.SUCCEEDED
    assert final.result == [f"w{i}" for i in range(8)]
    steps = list(FlowRun.objects.filter(task="flow_queued"))
    assert len(steps) == 8
    assert most_at_once(steps) == 2  # concurrency 2 in TOOSIMPLEQ_QUEUES: used, never exceeded
    (after,) = FlowRun.objects.filter(task="flow_plain")
    assert after.start >= max(run.end for run in steps)


def test_held_back_executions_stay_queued_in_order(workers):
    """One worker, one slot: the queue's executions start one at a time, in the claim order."""
    executions = queue("flow_queued", [(f"o{i}", 0.02) for i in range(6)])
    high = tasks_registry["flow_queued"].new_exec(["first"], {"seconds": 0.02}, priority=5)
    TaskExec.objects.bulk_create([high])
    start_workers(workers, count=1, threads=4)
    wait_for(all_done(7), timeout=60)
    order = list(FlowRun.objects.order_by("start").values_list("key", flat=True))
    assert order == ["first", *[f"o{i}" for i in range(6)]]
    assert most_at_once(list(FlowRun.objects.all())) <= 2
    assert [e.pk for e in executions] == sorted(e.pk for e in executions)


# -- rate limits ---------------------------------------------------------------------------------------


def starts(scope: str, key: str = "") -> list[datetime.datetime]:
    """The claim times (database clock) recorded for a rate limit (kept a minute past their period)."""
    return sorted(FlowStart.objects.filter(scope=scope, key=key).values_list("at", flat=True))


def assert_rate(times: list[datetime.datetime], count: int, period: float) -> None:
    """No window of ``period`` seconds holds more than ``count`` starts (database clock)."""
    for first, last in zip(times, times[count:]):
        assert (last - first).total_seconds() >= period, (first, last)


def test_rate_limits_hold_per_queue_and_per_key_across_workers(workers):
    queue("flow_rated", [(f"r{i}",) for i in range(60)])
    queue("flow_key_rated", [{"customer": c} for c in ["a", "b"] * 10])
    queue("flow_plain", [(f"p{i}", 0) for i in range(40)])
    began = time.monotonic()
    start_workers(workers)
    wait_for(all_done(60 + 20 + 40), timeout=120, message="every rate-limited task ran")
    elapsed = time.monotonic() - began
    rated = starts("queue:flow_rate")
    assert len(rated) == 60
    assert_rate(rated, 20, 1.0)  # "20/s" on the queue flow_rate
    for key in ("A", "B"):  # "4/s" per key, the key being customer.upper()
        times = starts("task:flow_key_rated", key)
        assert len(times) == 10
        assert_rate(times, 4, 1.0)
    # The limit is also reached, not only respected: 60 starts at 20/s take at least 2 s, and close to it.
    span = (rated[-1] - rated[0]).total_seconds()
    assert 2.0 <= span < 20, span
    assert elapsed < 60
    # The unlimited queue did not wait behind the rate-limited one (queued before it): most of it ran
    # while the rate limit still held executions back.
    last_rated = max(FlowRun.objects.filter(task="flow_rated").values_list("start", flat=True))
    plain = list(FlowRun.objects.filter(task="flow_plain").values_list("start", flat=True))
    assert len(plain) == 40
    assert sum(start < last_rated for start in plain) > 20


# -- paused queues -------------------------------------------------------------------------------------


def test_pause_stops_new_starts_within_a_tick_and_resume_restarts(workers, vendor):
    running = start_workers(workers)
    wait_for(lambda: WorkerStatus.objects.filter(stopped__isnull=True).count() == 3)
    if vendor == "postgresql":
        wait_for(lambda: WorkerStatus.objects.filter(receives_notifications=True).count() == 3, timeout=30)
    queue("flow_pausable", [(f"a{i}", 0.02) for i in range(600)])
    wait_for(lambda: FlowRun.objects.filter(task="flow_pausable").count() >= 20, timeout=30)
    assert flow.pause_queue("flow_pause") is True
    paused_at = time.time()
    assert flow.pause_queue("flow_pause") is False  # already paused
    assert flow.paused_queues() == ["flow_pause"]
    time.sleep(float(TICK) * 2 + 1)
    # Running executions finished; nothing started after the pause (with notifications: within 50 ms;
    # polling: within a tick).
    allowed = 0.05 if vendor == "postgresql" else float(TICK) + 0.3
    late = FlowRun.objects.filter(task="flow_pausable", start__gt=paused_at + allowed).count()
    assert late == 0
    assert TaskExec.objects.filter(task_name="flow_pausable", state=States.PROCESSING).count() == 0
    # Queuing still works while paused.
    queue("flow_pausable", [("while-paused", 0)])
    waiting = TaskExec.objects.filter(task_name="flow_pausable", state=States.QUEUED).count()
    assert waiting > 0
    # Other queues keep flowing.
    queue("flow_plain", [("other", 0)])
    wait_for(all_done(1, "flow_plain"), timeout=30)
    assert flow.resume_queue("flow_pause") is True
    assert flow.paused_queues() == []
    drained("flow_pausable")
    assert TaskExec.objects.filter(task_name="flow_pausable").exclude(state=States.SUCCEEDED).count() == 0
    assert FlowRun.objects.filter(task="flow_pausable").count() == 601
    assert all(proc.poll() is None for proc in running)


def test_pause_command(workers):
    result = workers.manage("toosimpleq_pause", "reports")
    assert result.returncode == 0, result.stderr
    assert flow.paused_queues() == ["reports"]
    assert "paused" in result.stdout
    result = workers.manage("toosimpleq_pause", "--resume", "reports")
    assert result.returncode == 0, result.stderr
    assert flow.paused_queues() == []
    result = workers.manage("toosimpleq_pause", "--list")
    assert result.returncode == 0 and "No queue is paused" in result.stdout


# -- a dead worker's slot --------------------------------------------------------------------------------


def test_a_killed_workers_slot_comes_back_after_rescue(workers):
    """The queue flow_kill allows one execution at a time; its worker is SIGKILLed while running one."""
    slow = workers.start("--tick", TICK, "--threads", "2", "--timeout", "2", env_extra={**FLOW_ENV, "FLOW_SLOW": "1"})
    queue("flow_kill", [("held",)])
    wait_for(lambda: FlowRun.objects.filter(task="flow_kill").exists(), timeout=30)
    queue("flow_kill", [("next",)])
    time.sleep(1)
    assert FlowRun.objects.filter(task="flow_kill").count() == 1  # the only slot is taken
    slow.send_signal(signal.SIGKILL)
    slow.wait(timeout=10)
    start_workers(workers, count=1, threads=2, args=("--timeout", "2"))
    wait_for(all_done(2, "flow_kill"), timeout=60, message="the slot of the killed worker came back")
    drained("flow_kill")
    held = [e.state for e in TaskExec.objects.filter(task_name="flow_kill").order_by("id") if e.args == ["held"]]
    assert held == [States.INTERRUPTED, States.SUCCEEDED]
    done = FlowRun.objects.filter(task="flow_kill", end__isnull=False)
    assert sorted(done.values_list("key", flat=True)) == ["held", "next"]


# -- status ----------------------------------------------------------------------------------------------


@override_settings(TOOSIMPLEQ_QUEUES={"flow_one": {"concurrency": 2}, "flow_rate": {"rate_limit": "20/s"}})
def test_status_reports_limits_use_and_pauses(transactional_db, capsys):
    queue("flow_queued", [("s1",), ("s2",)])
    flow.pause_queue("flow_pause")
    by_name = {(s.kind, s.name): s for s in flow.flow_status()}
    assert by_name[("queue", "flow_one")].concurrency == 2
    assert by_name[("queue", "flow_one")].queued == 2
    assert by_name[("queue", "flow_rate")].rate_limit == "20/s"
    assert by_name[("queue", "flow_rate")].rate_used == 0
    assert by_name[("queue", "flow_pause")].paused is True
    assert by_name[("task", "flow_keyed")].per_key is True
    call_command("toosimpleq_status", "--json", "--min-workers", "0")
    report = json.loads(capsys.readouterr().out)
    queues = {q["name"]: q for q in report["flow"] if q["kind"] == "queue"}
    assert queues["flow_pause"]["paused"] is True
    assert queues["flow_one"]["concurrency"] == 2


# -- settings and options --------------------------------------------------------------------------------


@given(count=st.integers(1, limits.MAX_RATE_COUNT), multiple=st.sampled_from(["", "1", "10", "2.5"]), unit=st.sampled_from(sorted(limits.UNITS)))
def test_parse_rate_reads_every_written_rate(count, multiple, unit):
    text = f"{count}/{multiple}{unit}"
    period = (float(multiple) if multiple else 1.0) * limits.UNITS[unit]
    if period > limits.MAX_PERIOD:
        with pytest.raises(ValueError, match="period"):
            limits.parse_rate(text)
        return
    rate = limits.parse_rate(text)
    assert (rate.count, rate.period, rate.text) == (count, period, text)
    assert limits.parse_rate(f" {count} / {multiple}{unit}s ".upper()).period == period  # spaces, plural, case


@given(st.text(max_size=20))
@hypothesis_settings(max_examples=300)
def test_parse_rate_refuses_with_a_value_error_only(text):
    try:
        rate = limits.parse_rate(text)
    except ValueError as exc:
        assert "rate limit" in str(exc)
    else:
        assert 1 <= rate.count <= limits.MAX_RATE_COUNT and 0 < rate.period <= limits.MAX_PERIOD


@pytest.mark.parametrize(
    "value, problem",
    [
        ({"q": {"concurrency": 0}}, "concurrency"),
        ({"q": {"concurrency": True}}, "concurrency"),
        ({"q": {"rate_limit": "14 per second"}}, "rate_limit"),
        ({"q": {"rate_limit": "0/s"}}, "between 1 and"),
        ({"q": {"paralel": 2}}, "unknown keys"),
        ({"q": 3}, "must be a dict"),
        ({"": {"concurrency": 1}}, "queue names"),
        (["q"], "must be a dict"),
    ],
)
def test_bad_queue_settings_are_refused_naming_the_queue(settings, value, problem):
    settings.TOOSIMPLEQ_QUEUES = value
    with pytest.raises(ConfigurationError, match=problem):
        limits.queue_limits()


@given(
    st.dictionaries(
        st.sampled_from(["concurrency", "rate_limit", "paralel"]),
        st.one_of(st.none(), st.integers(-3, 3), st.booleans(), st.text(max_size=6), st.sampled_from(["2/s", "0/s", "5/2min"])),
    )
)
def test_queue_settings_give_a_limit_or_an_error_naming_the_queue(options):
    try:
        limit = limits.queue_limit("reports", options)
    except ConfigurationError as exc:
        assert "['reports']" in str(exc)
    else:
        assert set(options) <= {"concurrency", "rate_limit"}
        assert limit.concurrency == options.get("concurrency")
        rate = options.get("rate_limit")
        assert (limit.rate.text if limit.rate else None) == (rate.strip() if isinstance(rate, str) else rate)


@given(
    concurrency=st.one_of(st.none(), st.integers(-5, 5), st.booleans(), st.floats(allow_nan=True)),
    rate=st.one_of(st.none(), st.text(max_size=8), st.sampled_from(["1/s", "5/10min", "0/s", "3/0s"])),
)
def test_task_flow_options_are_checked_at_registration(concurrency, rate):
    def func(customer):
        return customer

    ok_concurrency = concurrency is None or (type(concurrency) is int and concurrency >= 1)
    ok_rate = rate is None or limits.rate_problem(rate) is None
    if ok_concurrency and ok_rate:
        task = Task(func=func, name="flow_hypothesis", concurrency=concurrency, rate_limit=rate)
        assert bool(task.limit) == (concurrency is not None or rate is not None)
    else:
        with pytest.raises(ConfigurationError, match="flow_hypothesis"):
            Task(func=func, name="flow_hypothesis", concurrency=concurrency, rate_limit=rate)


def test_concurrency_key_must_name_an_argument_and_need_a_limit():
    def func(customer, amount=0):
        return customer

    with pytest.raises(ConfigurationError, match="'flow_bad'.*not an argument"):
        Task(func=func, name="flow_bad", concurrency=1, concurrency_key="client")
    with pytest.raises(ConfigurationError, match="'flow_bad'.*needs concurrency"):
        Task(func=func, name="flow_bad", concurrency_key="customer")
    with pytest.raises(ConfigurationError, match="'flow_bad'.*callable"):
        Task(func=func, name="flow_bad", concurrency=1, concurrency_key=3)
    task = Task(func=func, name="flow_ok", concurrency=1, concurrency_key="customer")
    assert task.key_of(("acme",), {}) == "acme"
    assert task.key_of((), {"customer": 7}) == "7"
    assert task.key_of(("x" * 300,), {}).startswith("sha256:")
    assert len(task.key_of(("x" * 300,), {})) <= 255


# -- the admin -----------------------------------------------------------------------------------------


def test_admin_pause_button_needs_its_permission_and_is_logged(transactional_db, login):
    from django.contrib.admin.models import LogEntry
    from django.urls import reverse

    url = reverse("admin:toosimpleq_pause_queue")
    viewer = login("view_taskexec")
    assert viewer.post(url, {"queue": "reports", "action": "pause"}).status_code == 403
    assert "Pause queue" not in viewer.get(reverse("admin:toosimpleq_dashboard")).content.decode()
    assert flow.paused_queues() == []

    operator = login("view_taskexec", "pause_queue")
    assert operator.get(url).status_code == 405  # a change is a POST
    response = operator.post(url, {"queue": "reports", "action": "pause"})
    assert response.status_code == 302
    assert flow.paused_queues() == ["reports"]
    page = operator.get(reverse("admin:toosimpleq_dashboard")).content.decode()
    assert "PAUSED" in page and 'value="Resume"' in page
    operator.post(url, {"queue": "reports", "action": "resume"})
    assert flow.paused_queues() == []
    messages = list(LogEntry.objects.order_by("id").values_list("change_message", flat=True))
    assert messages == ["Paused queue reports.", "Resumed queue reports."]
    operator.post(url, {"queue": "", "action": "pause"})  # refused with a message, nothing paused
    assert flow.paused_queues() == []


# -- Django's tasks framework ----------------------------------------------------------------------------


def test_django_tasks_backend_takes_queue_limits(settings):
    from django_toosimple_q.backends import AVAILABLE

    if not AVAILABLE:
        pytest.skip("Django's tasks framework (django.tasks) needs Django >= 6.0")
    from django.core.exceptions import ImproperlyConfigured

    from django_toosimple_q.backends import QueueBackend

    backend = QueueBackend("flow", {"OPTIONS": {"queue_limits": {"reports": {"concurrency": 1, "rate_limit": "14/s"}}}})
    assert backend.options["queue_limits"]["reports"]["concurrency"] == 1
    with pytest.raises(ImproperlyConfigured, match="reports"):
        QueueBackend("flow", {"OPTIONS": {"queue_limits": {"reports": {"concurrency": 0}}}})
    settings.TASKS = {
        "default": {
            "BACKEND": "django_toosimple_q.backends.QueueBackend",
            "OPTIONS": {"queue_limits": {"reports": {"concurrency": 1, "rate_limit": "14/s"}}},
        }
    }
    assert limits.queue_limits()["reports"] == limits.Limit(1, limits.parse_rate("14/s"))


def test_bad_queue_settings_stop_the_worker_at_its_system_check(workers):
    result = workers.manage("check", env_extra={**FLOW_ENV, "TOOSIMPLEQ_TEST_BAD_QUEUES": "1"})
    assert result.returncode != 0
    assert "toosimpleq.E003" in result.stderr and "'flow_one'" in result.stderr and "concurrency" in result.stderr


def test_workers_do_not_spin_on_held_back_work(workers, vendor):
    """Executions held back behind a full slot: the workers wait (ticks, notifications), they do not
    claim in a loop. Counted in transactions on PostgreSQL (pg_stat_database)."""
    if vendor != "postgresql":
        pytest.skip("transactions are counted by PostgreSQL's statistics")
    from django.db import connection

    slow = workers.start("--tick", TICK, "--threads", "2", env_extra={**FLOW_ENV, "FLOW_SLOW": "1"})
    queue("flow_kill", [("held",)])
    wait_for(lambda: FlowRun.objects.filter(task="flow_kill").exists(), timeout=30)
    queue("flow_kill", [(f"waiting{i}",) for i in range(20)])  # held back: the queue allows one at a time
    start_workers(workers, count=2, threads=4)
    wait_for(lambda: WorkerStatus.objects.filter(stopped__isnull=True).count() == 3)
    time.sleep(2)

    def commits() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_force_next_flush()")
            cursor.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
            return cursor.fetchone()[0]

    before, began = commits(), time.monotonic()
    time.sleep(6)
    rate = (commits() - before) / (time.monotonic() - began)
    # Three workers ticking every 0.5 s make about 6 transactions per second (and this test's reads a
    # few); a worker claiming in a loop would make hundreds.
    assert rate < 20, rate
    assert FlowRun.objects.filter(task="flow_kill").count() == 1
    assert slow.poll() is None
