"""Schedules: spec samples verbatim, semantics under a controlled clock, and real worker processes."""

from __future__ import annotations

import datetime
import re
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import types
import zoneinfo

import pytest
import time_machine
from croniter import croniter
from collections import Counter
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from django_toosimple_q.cron import Cron
from django_toosimple_q.decorators import register_task, schedule_task
from django_toosimple_q.engine import get_engine
from django_toosimple_q.models import ScheduleExec, TaskExec, WorkerStatus
from django_toosimple_q.registry import ConfigurationError, schedules_registry, tasks_registry
from django_toosimple_q.schedules import run_schedule_now
from tests.app.models import Record
from tests.conftest import schedule_problem, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_registry")]

UTC = datetime.timezone.utc
PARIS = zoneinfo.ZoneInfo("Europe/Paris")
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")


def utc(*args) -> datetime.datetime:
    return datetime.datetime(*args, tzinfo=UTC)


@pytest.fixture
def clock():
    """A frozen clock moved by the test: ``clock(datetime)``."""
    traveller = time_machine.travel(utc(2026, 1, 1), tick=False)
    coordinates = traveller.start()

    def move(moment: datetime.datetime) -> None:
        # move_to() also sets the process time zone (TZ) to the destination's; keep Django's.
        zone = os.environ.get("TZ")
        coordinates.move_to(moment)
        if zone is not None:
            os.environ["TZ"] = zone
            time.tzset()

    yield move
    traveller.stop()


def sample(source: str) -> types.SimpleNamespace:
    """Run a spec sample verbatim as the body of a module (so that default task names are dotted
    paths, as in a real tasks.py) and return what it defines."""
    namespace = {"__name__": "tests.spec_sample", "register_task": register_task, "schedule_task": schedule_task}
    exec(textwrap.dedent(source), namespace)
    return types.SimpleNamespace(**namespace)


def work(*args: str) -> None:
    """One pass of a worker in this process, then wait for the tasks it claimed."""
    call_command("worker", "--once", "--threads", "4", *args, verbosity=0)


def dues(task_name: str | None = None) -> list[datetime.datetime]:
    rows = TaskExec.objects.order_by("id")
    if task_name:
        rows = rows.filter(task_name=task_name)
    return [row.due for row in rows]


# -- spec samples, verbatim ------------------------------------------------------------------------


def test_spec_quickstart_schedule_sample(clock):
    sample(
        """
        from django_toosimple_q.decorators import register_task, schedule_task

        # Register and schedule tasks (each morning at 8:30)
        @schedule_task(cron="30 8 * * *", args=['John'])
        @register_task()
        def morning_routine(name):
            return f"Good morning {name} !"
        """
    )
    clock(utc(2026, 1, 5, 8))
    work()
    clock(utc(2026, 1, 5, 8, 30))
    work()
    assert [(e.due, e.result) for e in TaskExec.objects.all()] == [(utc(2026, 1, 5, 8, 30), "Good morning John !")]


def test_spec_sample_two_named_schedules(clock):
    sample(
        """
        @schedule_task(name="afternoon_routine", cron="30 16 * * *", args=['afternoon'])
        @schedule_task(name="morning_routine", cron="30 8 * * *", args=['morning'])
        @register_task()
        def my_task(time_of_day):
            return f"Good {time_of_day} John !"
        """
    )

    assert {"afternoon_routine", "morning_routine"} <= set(schedules_registry)
    clock(utc(2026, 1, 5, 7))
    work()  # first sight: waits for the next occurrence
    assert TaskExec.objects.count() == 0
    clock(utc(2026, 1, 5, 8, 30, 1))
    work()
    clock(utc(2026, 1, 5, 16, 30, 1))
    work()
    assert [e.result for e in TaskExec.objects.order_by("id")] == ["Good morning John !", "Good afternoon John !"]
    assert dues() == [utc(2026, 1, 5, 8, 30), utc(2026, 1, 5, 16, 30)]


def test_spec_sample_run_on_creation(clock):
    sample(
        """
        @schedule_task(cron="30 8 * * *", run_on_creation=True)
        @register_task()
        def my_task():
            ...
        """
    )

    clock(utc(2026, 1, 5, 12))
    work()
    assert dues() == [utc(2026, 1, 5, 12)]
    work()
    clock(utc(2026, 1, 6, 8, 30))
    work()
    assert dues() == [utc(2026, 1, 5, 12), utc(2026, 1, 6, 8, 30)]


def test_without_run_on_creation_first_sight_waits(clock):
    @schedule_task(cron="30 8 * * *")
    @register_task(name="waits")
    def waits():
        ...

    clock(utc(2026, 1, 5, 12))
    work()
    assert TaskExec.objects.count() == 0
    row = ScheduleExec.objects.get(name="waits")
    assert row.last_due == utc(2026, 1, 5, 12) and row.state == ScheduleExec.States.ACTIVE


def test_spec_sample_catch_up_after_downtime(clock):
    my_task = sample(
        """
        @schedule_task(cron="30 8 * * *", catch_up=True)
        @register_task()
        def my_task():
            ...
        """
    ).my_task

    clock(utc(2026, 1, 1, 9))
    work()
    clock(utc(2026, 1, 6, 9))  # five occurrences missed
    work()
    expected = [utc(2026, 1, day, 8, 30) for day in range(2, 7)]
    assert dues() == expected  # one each, oldest first
    row = ScheduleExec.objects.get(name=my_task.name)
    assert row.last_due == expected[-1] and row.last_task_id == TaskExec.objects.order_by("id").last().pk
    work()
    assert len(dues()) == 5


def test_without_catch_up_only_the_latest_missed_occurrence_runs(clock):
    @schedule_task(cron="30 8 * * *")
    @register_task(name="no_catch_up")
    def no_catch_up():
        ...

    clock(utc(2026, 1, 1, 9))
    work()
    clock(utc(2026, 1, 6, 9))
    work()
    assert dues() == [utc(2026, 1, 6, 8, 30)]
    clock(utc(2026, 1, 7, 8, 30))
    work()
    assert dues() == [utc(2026, 1, 6, 8, 30), utc(2026, 1, 7, 8, 30)]


@override_settings(TOOSIMPLEQ_SCHEDULE_CATCH_UP_MAX=5)
def test_catch_up_is_capped_with_a_log_line(clock, caplog):
    @schedule_task(cron="* * * * * */15", catch_up=True)
    @register_task(name="capped")
    def capped():
        ...

    clock(utc(2026, 1, 1))
    work()
    clock(utc(2026, 1, 2, 0, 0, 1))  # a day of 15-second occurrences missed
    with caplog.at_level(logging.WARNING, logger="django_toosimple_q"):
        work()
    assert dues() == [utc(2026, 1, 1, 23, 59) + datetime.timedelta(seconds=15 * i) for i in range(5)]
    assert "missed more than 5 occurrences" in caplog.text and "TOOSIMPLEQ_SCHEDULE_CATCH_UP_MAX" in caplog.text


def test_spec_sample_datetime_kwarg(clock):
    my_task = sample(
        """
        @schedule_task(cron="30 8 * * *", datetime_kwarg="scheduled_on", catch_up=True)
        @register_task()
        def my_task(scheduled_on):
            if scheduled_on:
                return f"This was scheduled for {scheduled_on.isoformat()}."
            else:
                return "This was not scheduled."
        """
    ).my_task

    clock(utc(2026, 1, 1, 9))
    work()
    clock(utc(2026, 1, 3, 9))
    work()
    runs = list(TaskExec.objects.order_by("id"))
    assert [e.result for e in runs] == [
        "This was scheduled for 2026-01-02T08:30:00+00:00.",
        "This was scheduled for 2026-01-03T08:30:00+00:00.",
    ]
    value = runs[0].kwargs["scheduled_on"]
    assert isinstance(value, datetime.datetime) and value.tzinfo is not None
    assert value == utc(2026, 1, 2, 8, 30) == runs[0].due
    # Outside of the schedule the argument is None.
    run_schedule_now(my_task.name)
    work()
    assert TaskExec.objects.order_by("id").last().result == "This was not scheduled."


def test_datetime_kwarg_is_in_the_schedule_time_zone(clock):
    @schedule_task(name="paris_report", cron="0 9 * * *", datetime_kwarg="at", timezone="Europe/Paris")
    @register_task(name="report")
    def report(at):
        return at.isoformat()

    clock(utc(2026, 1, 5, 7))
    work()
    clock(utc(2026, 1, 5, 8, 0, 1))
    work()
    run = TaskExec.objects.get()
    assert run.result == "2026-01-05T09:00:00+01:00" and run.due == utc(2026, 1, 5, 8)


def test_run_on_creation_passes_the_latest_occurrence_of_the_cron(clock):
    """As in 1.x: the first run of a run_on_creation schedule stands for its cron's latest occurrence
    (here yesterday noon in Paris), though it runs now; the next ones follow the cron."""

    @schedule_task(name="noon", cron="0 12 * * *", run_on_creation=True, datetime_kwarg="at", timezone="Europe/Paris")
    @schedule_task(name="by_hand", cron="manual", run_on_creation=True, datetime_kwarg="at")
    @register_task(name="noon_report")
    def noon_report(at):
        return at.isoformat() if at else None

    clock(utc(2026, 1, 5, 0, 0))  # midnight UTC: 01:00 in Paris
    work()
    runs = {e.result: e.due for e in TaskExec.objects.all()}
    assert runs == {"2026-01-04T12:00:00+01:00": utc(2026, 1, 5), None: utc(2026, 1, 5)}
    clock(utc(2026, 1, 5, 11, 0, 1))  # 12:00:01 in Paris
    work()
    assert TaskExec.objects.filter(result="2026-01-05T12:00:00+01:00", due=utc(2026, 1, 5, 11)).exists()
    assert TaskExec.objects.count() == 3


def test_projects_with_use_tz_false(clock):
    with override_settings(USE_TZ=False, TIME_ZONE="Europe/Paris"):

        @schedule_task(cron="30 8 * * *", datetime_kwarg="at")
        @register_task(name="naive_project")
        def naive_project(at):
            return at.isoformat()

        clock(utc(2026, 1, 5, 7))
        work()
        clock(utc(2026, 1, 5, 7, 30, 1))  # 08:30:01 in Paris
        work()
        run = TaskExec.objects.get()
        assert run.result == "2026-01-05T08:30:00+01:00"
        assert run.due == datetime.datetime(2026, 1, 5, 8, 30)  # stored as naive local time
        assert ScheduleExec.objects.get().last_due == datetime.datetime(2026, 1, 5, 8, 30)


def test_spec_sample_queues(clock):
    sample(
        """
        @schedule_task(cron="30 8 * * *", queue='scheduler')
        @register_task(queue='worker')
        def task():
            ...

        # Then run those with these workers
        # manage.py worker --queue scheduler
        # manage.py worker --queue worker
        """
    )
    clock(utc(2026, 1, 5, 8))
    work("--queue", "scheduler")
    clock(utc(2026, 1, 5, 8, 30))
    work("--queue", "worker")
    work("--exclude_queue", "scheduler")
    assert TaskExec.objects.count() == 0  # neither serves the schedule's queue
    work("--queue", "scheduler")
    run = TaskExec.objects.get()
    assert (run.queue, run.state) == ("worker", TaskExec.States.QUEUED)  # created, not run there
    work("--queue", "worker")
    run.refresh_from_db()
    assert run.state == TaskExec.States.SUCCEEDED


def test_spec_sample_seconds_field(clock):
    sample(
        """
        from django_toosimple_q.decorators import register_task, schedule_task

        # A schedule running every 15 seconds
        @schedule_task(cron="* * * * * */15")
        @register_task()
        def morning_routine():
            return f"15 seconds passed !"
        """
    )

    clock(utc(2026, 1, 5, 10, 0, 1))
    work()
    for second in (14, 16, 29, 31):
        clock(utc(2026, 1, 5, 10, 0, second))
        work()
    runs = list(TaskExec.objects.order_by("id"))
    assert [e.due for e in runs] == [utc(2026, 1, 5, 10, 0, 15), utc(2026, 1, 5, 10, 0, 30)]
    assert {e.result for e in runs} == {"15 seconds passed !"}


# -- errors ----------------------------------------------------------------------------------------


@register_task(name="target")
def target():
    return "target"


@pytest.mark.parametrize(
    "cron, timezone, message",
    [
        ("61 * * * *", None, "is not a valid cron expression"),
        ("* * *", None, "has 3 fields"),
        ("0 0 30 2 *", None, "never occurs"),
        ("* * * * * * *", None, "has 7 fields"),
        ("@reboot", None, "is not a valid cron expression"),
        ("0 8 * * *", "Mars/Olympus_Mons", "not a known IANA time zone"),
    ],
)
def test_invalid_cron_is_a_system_check_error_naming_schedule_and_expression(cron, timezone, message):
    schedule_task(name="bad_one", cron=cron, timezone=timezone)(target)  # no traceback at import
    problem = schedule_problem(lambda: None, "bad_one")
    assert message in problem and "Schedule 'bad_one'" in problem and repr(cron) in problem
    with pytest.raises(ConfigurationError, match=message):
        run_schedule_now("bad_one")
    # Declared again (e.g. fixed and reloaded), it is registered and the check passes.
    schedule_task(name="bad_one", cron="@daily")(target)
    assert "bad_one" in schedules_registry
    call_command("check")


def test_schedule_must_decorate_a_registered_task():
    with pytest.raises(ConfigurationError, match="put @schedule_task above @register_task"):

        @register_task(name="wrong_order")
        @schedule_task(cron="30 8 * * *")
        def wrong_order():
            ...


def test_unknown_task_is_refused():
    from django_toosimple_q.registry import Task

    def unregistered():
        ...

    with pytest.raises(ConfigurationError, match="Schedule 'ghost' \\(cron '@daily'\\): its task 'ghost' is not registered"):
        schedule_task(cron="@daily")(Task(func=unregistered, name="ghost"))


def test_arguments_the_task_cannot_take_are_refused():
    problem = schedule_problem(lambda: schedule_task(name="target_args", cron="@daily", args=[1])(target), "target_args")
    assert re.search("'target_args'.*cannot be queued", problem)
    problem = schedule_problem(
        lambda: schedule_task(name="target_kw", cron="@daily", datetime_kwarg="when")(target), "target_kw"
    )
    assert "cannot be queued" in problem


def test_name_clash_is_refused():
    with pytest.raises(ConfigurationError, match="clashes with schedule 'clashing'.*distinct name"):

        @schedule_task(cron="30 16 * * *")
        @schedule_task(cron="30 8 * * *")
        @register_task(name="clashing")
        def clashing():
            ...

    @register_task(name="other")
    def other():
        ...

    schedule_task(name="shared", cron="@daily")(other)
    with pytest.raises(ConfigurationError, match="clashes"):
        schedule_task(name="shared", cron="@hourly")(target)


def test_module_imported_again_replaces_its_schedule():
    def define():
        @schedule_task(cron="@daily")
        @register_task(name="reimported")
        def reimported():
            ...

        return reimported

    first, second = define(), define()
    assert schedules_registry["reimported"].task is second is not first


def test_system_check_reports_unknown_task_and_invalid_cron():
    @schedule_task(name="orphan", cron="@hourly")
    @register_task(name="soon_gone")
    def soon_gone():
        ...

    del tasks_registry["soon_gone"]
    schedule_task(name="later_broken", cron="@daily")(target)
    schedules_registry["later_broken"].cron = "99 * * * *"
    with pytest.raises(SystemCheckError) as error:
        call_command("check")
    text = str(error.value)
    assert "Schedule 'orphan'" in text and "'soon_gone' is not registered" in text
    assert "Schedule 'later_broken' (cron '99 * * * *')" in text


# -- worker options and lifecycle --------------------------------------------------------------------


def test_no_schedules_worker_never_touches_schedules(clock):
    @schedule_task(cron="* * * * *", run_on_creation=True)
    @register_task(name="untouched")
    def untouched():
        ...

    clock(utc(2026, 1, 5, 8))
    work("--no_schedules")
    clock(utc(2026, 1, 5, 9))
    work("--no_schedules")
    assert TaskExec.objects.count() == 0 and ScheduleExec.objects.count() == 0
    assert WorkerStatus.objects.last().schedules == sorted(schedules_registry)  # still advertised


def test_manual_schedule_never_fires_and_runs_on_demand(clock):
    @schedule_task(cron="manual", args=["by hand"])
    @register_task(name="manual_task")
    def manual_task(text):
        return text

    clock(utc(2026, 1, 5, 8))
    work()
    clock(utc(2027, 1, 5, 8))
    work()
    assert TaskExec.objects.count() == 0
    row = ScheduleExec.objects.get(name="manual_task")
    execution = run_schedule_now("manual_task")
    assert execution.state == TaskExec.States.QUEUED and execution.due == utc(2027, 1, 5, 8)
    work()
    execution.refresh_from_db()
    assert execution.result == "by hand"
    after = ScheduleExec.objects.get(name="manual_task")
    assert after.last_task_id == execution.pk and after.last_due == row.last_due
    with pytest.raises(LookupError, match="No schedule named 'nope'"):
        run_schedule_now("nope")


def test_run_schedule_now_takes_the_task_or_its_name_and_explains_a_wrong_name(clock):
    @schedule_task(cron="manual")
    @register_task(name="reports.tasks.nightly")
    def nightly():
        return "ran"

    @schedule_task(cron="0 * * * *", name="twice_a")
    @schedule_task(cron="30 * * * *", name="twice_b")
    @register_task(name="twice")
    def twice():
        ...

    @register_task(name="never_scheduled")
    def never_scheduled():
        ...

    clock(utc(2026, 1, 5, 8))
    execution = run_schedule_now(nightly)
    assert execution.task_name == "reports.tasks.nightly"
    assert ScheduleExec.objects.get(name="reports.tasks.nightly").last_task_id == execution.pk
    assert run_schedule_now("twice_b").task_name == "twice"
    with pytest.raises(LookupError, match=r"did you mean 'reports\.tasks\.nightly'\?"):
        run_schedule_now("nightly")
    with pytest.raises(LookupError, match=r"'twice' has several schedules \(twice_a, twice_b\): give the name"):
        run_schedule_now(twice)
    with pytest.raises(LookupError, match="'never_scheduled' has no schedule"):
        run_schedule_now(never_scheduled)
    with pytest.raises(LookupError, match=r"No schedule named 'nope' is registered\. A schedule is named"):
        run_schedule_now("nope")
    assert TaskExec.objects.count() == 2


def test_run_now_leaves_the_cron_timeline_alone(clock):
    @schedule_task(cron="0 * * * *")
    @register_task(name="hourly_task")
    def hourly_task():
        ...

    clock(utc(2026, 1, 5, 8, 10))
    work()
    clock(utc(2026, 1, 5, 8, 20))
    schedules_registry["hourly_task"].run_now()
    assert ScheduleExec.objects.get(name="hourly_task").last_due == utc(2026, 1, 5, 8, 10)
    clock(utc(2026, 1, 5, 9, 0, 1))
    work()
    assert dues() == [utc(2026, 1, 5, 8, 20), utc(2026, 1, 5, 9)]


def test_run_now_before_any_worker_saw_the_schedule(clock):
    @schedule_task(cron="0 * * * *")
    @register_task(name="fresh")
    def fresh():
        ...

    clock(utc(2026, 1, 5, 8, 10))
    run_schedule_now("fresh")
    assert ScheduleExec.objects.get(name="fresh").last_due == utc(2026, 1, 5, 8, 10)


def test_rows_of_removed_schedules_become_invalid_unless_an_online_worker_knows_them(clock):
    clock(utc(2026, 1, 5, 8))
    ScheduleExec.objects.create(name="removed", last_due=utc(2026, 1, 1))
    ScheduleExec.objects.create(name="old_code_only", last_due=utc(2026, 1, 1))
    # An older worker, still online during a rolling deploy, has "old_code_only" in its code.
    WorkerStatus.objects.create(label="old", timeout=600, schedules=["old_code_only"], last_seen=utc(2026, 1, 5, 8))
    work()
    states = dict(ScheduleExec.objects.values_list("name", "state"))
    assert states == {"removed": "INVALID", "old_code_only": "ACTIVE"}

    @schedule_task(cron="30 8 * * *")
    @register_task(name="removed")
    def removed():
        ...

    clock(utc(2026, 1, 5, 8, 31))
    work()  # back in the code: active again, its history kept (only the latest missed runs)
    row = ScheduleExec.objects.get(name="removed")
    assert row.state == "ACTIVE" and dues() == [utc(2026, 1, 5, 8, 30)] and row.last_due == utc(2026, 1, 5, 8, 30)


def test_a_lost_race_writes_nothing():
    """The conditional update arbitrates: two workers that read the same row cannot both queue."""
    schedule_task(name="race", cron="@hourly")(target)
    schedule = schedules_registry["race"]
    engine = get_engine("default")
    row = engine.ensure_schedule_row("race", utc(2026, 1, 5, 8, 10))
    occurrence = utc(2026, 1, 5, 9)
    first = engine.advance_schedule("race", row.last_due, occurrence, [schedule.new_exec(occurrence)])
    second = engine.advance_schedule("race", row.last_due, occurrence, [schedule.new_exec(occurrence)])
    assert len(first) == 1 and second is None
    assert TaskExec.objects.count() == 1
    assert ScheduleExec.objects.get(name="race").last_task_id == first[0].pk


# -- cron and daylight saving time -----------------------------------------------------------------


def local(instants, zone):
    return [i.astimezone(zone).strftime("%m-%d %H:%M:%S%z") for i in instants]


def test_cron_aliases_and_seconds():
    assert local(Cron("@hourly", UTC).occurrences(utc(2026, 1, 1), utc(2026, 1, 1, 2)), UTC) == [
        "01-01 01:00:00+0000",
        "01-01 02:00:00+0000",
    ]
    assert Cron("@daily", UTC).next_after(utc(2026, 1, 1, 5)) == utc(2026, 1, 2)
    assert Cron("* * * * * */20", UTC).next_after(utc(2026, 1, 1, 5, 0, 41)) == utc(2026, 1, 1, 5, 1)
    assert Cron("manual", UTC).next_after(utc(2026, 1, 1)) is None


def test_dst_spring_forward_paris():
    # 2026-03-29: clocks jump from 02:00 CET to 03:00 CEST.
    night = (utc(2026, 3, 28, 23), utc(2026, 3, 29, 3))
    # Pinned to the skipped hour: fires once, when the clocks jump.
    assert local(Cron("30 2 * * *", PARIS).occurrences(*night), PARIS) == ["03-29 03:00:00+0200"]
    assert local(Cron("*/20 2 * * *", PARIS).occurrences(*night), PARIS) == ["03-29 03:00:00+0200"]
    # Every hour: the wall clock goes on, nothing to make up for.
    assert local(Cron("30 * * * *", PARIS).occurrences(*night), PARIS) == [
        "03-29 00:30:00+0100",
        "03-29 01:30:00+0100",
        "03-29 03:30:00+0200",
        "03-29 04:30:00+0200",
    ]


def test_dst_fall_back_paris():
    # 2026-10-25: clocks go back from 03:00 CEST to 02:00 CET; 02:00-02:59 happens twice.
    night = (utc(2026, 10, 24, 22), utc(2026, 10, 25, 3))
    assert local(Cron("30 2 * * *", PARIS).occurrences(*night), PARIS) == ["10-25 02:30:00+0200"]
    assert local(Cron("0 * * * *", PARIS).occurrences(*night), PARIS) == [
        "10-25 01:00:00+0200",
        "10-25 02:00:00+0200",
        "10-25 02:00:00+0100",
        "10-25 03:00:00+0100",
        "10-25 04:00:00+0100",
    ]
    # Asked from inside each pass of the repeated hour.
    assert Cron("0 * * * *", PARIS).next_after(utc(2026, 10, 25, 0, 30)) == utc(2026, 10, 25, 1)
    assert Cron("30 2 * * *", PARIS).next_after(utc(2026, 10, 25, 1, 10)) == utc(2026, 10, 26, 1, 30)


def test_dst_new_york_both_ways():
    spring = (utc(2026, 3, 8, 5), utc(2026, 3, 8, 9))  # 02:00 EST -> 03:00 EDT
    assert local(Cron("15 2 * * *", NEW_YORK).occurrences(*spring), NEW_YORK) == ["03-08 03:00:00-0400"]
    fall = (utc(2026, 11, 1, 4), utc(2026, 11, 1, 8))  # 02:00 EDT -> 01:00 EST
    assert local(Cron("15 1 * * *", NEW_YORK).occurrences(*fall), NEW_YORK) == ["11-01 01:15:00-0400"]
    assert local(Cron("*/30 * * * *", NEW_YORK).occurrences(*fall), NEW_YORK) == [
        "11-01 00:30:00-0400",
        "11-01 01:00:00-0400",
        "11-01 01:30:00-0400",
        "11-01 01:00:00-0500",
        "11-01 01:30:00-0500",
        "11-01 02:00:00-0500",
        "11-01 02:30:00-0500",
        "11-01 03:00:00-0500",
    ]


def reference_occurrences(expression, zone, start, end):
    """The DST rule, checked minute by minute: the slow, obvious definition of what Cron computes."""
    every_hour = Cron(expression, zone).every_hour
    found = []
    moment = start
    while moment < end:
        moment += datetime.timedelta(minutes=1)
        wall = moment.astimezone(zone).replace(tzinfo=None)
        previous = (moment - datetime.timedelta(minutes=1)).astimezone(zone)
        if every_hour:
            if croniter.match(expression, wall):
                found.append(moment)
            continue
        # Fixed hours: an existing wall time fires at its first pass...
        if croniter.match(expression, wall) and wall.replace(tzinfo=zone, fold=0).astimezone(UTC) == moment:
            found.append(moment)
        # ... and wall times skipped by a jump forward fire once, at the jump.
        if moment.astimezone(zone).utcoffset() > previous.utcoffset() and moment not in found:
            skipped = previous.replace(tzinfo=None) + datetime.timedelta(minutes=1)
            while skipped < wall and not croniter.match(expression, skipped):
                skipped += datetime.timedelta(minutes=1)
            if skipped < wall:
                found.append(moment)
    return found


@pytest.mark.parametrize("zone_name", ["Europe/Paris", "Australia/Lord_Howe", "America/Santiago"])
@pytest.mark.parametrize("expression", ["*/15 * * * *", "30 2 * * *", "*/20 2 * * *", "0 0-3 * * *"])
def test_dst_rule_matches_a_minute_by_minute_reference(zone_name, expression):
    """Around every 2026 clock change of zones with 1-hour, 30-minute, and midnight changes."""
    zone = zoneinfo.ZoneInfo(zone_name)
    day = utc(2026, 1, 1)
    while day.year == 2026:
        if day.astimezone(zone).utcoffset() != (day + datetime.timedelta(days=1)).astimezone(zone).utcoffset():
            start, end = day - datetime.timedelta(hours=3), day + datetime.timedelta(hours=27)
            expected = reference_occurrences(expression, zone, start, end)
            assert list(Cron(expression, zone).occurrences(start, end)) == expected, (zone_name, day)
            # Asked from any moment, not only from the previous occurrence (e.g. a first sight).
            cron, moment = Cron(expression, zone), start
            while moment < expected[-1]:
                assert cron.next_after(moment) == min(e for e in expected if e > moment), (zone_name, moment)
                moment += datetime.timedelta(minutes=7, seconds=13)
        day += datetime.timedelta(days=1)


@pytest.mark.parametrize(
    "start, end, expected",
    [
        (
            utc(2026, 3, 28, 22),
            utc(2026, 3, 29, 2),
            ["03-29 00:00:00+0100", "03-29 01:00:00+0100", "03-29 03:00:00+0200", "03-29 04:00:00+0200"],
        ),
        (
            utc(2026, 10, 24, 21),
            utc(2026, 10, 25, 3),
            [
                "10-25 00:00:00+0200",
                "10-25 01:00:00+0200",
                "10-25 02:00:00+0200",
                "10-25 02:00:00+0100",
                "10-25 03:00:00+0100",
                "10-25 04:00:00+0100",
            ],
        ),
    ],
)
def test_dst_nights_through_the_worker_each_occurrence_once(clock, start, end, expected):
    """A worker passing every 10 minutes through the night, in the project's TIME_ZONE."""
    with override_settings(TIME_ZONE="Europe/Paris"):

        @schedule_task(name="pinned", cron="30 2 * * *", args=["pinned"], datetime_kwarg="at")
        @schedule_task(name="hourly", cron="0 * * * *", args=["hourly"], datetime_kwarg="at")
        @register_task(name="night_task")
        def night_task(label, at):
            return at.isoformat()

        moment = start
        while moment <= end:
            clock(moment)
            work()
            moment += datetime.timedelta(minutes=10)
        runs = list(TaskExec.objects.order_by("id"))
        hourly = [e.kwargs["at"] for e in runs if e.args == ["hourly"]]
        pinned = [e.kwargs["at"] for e in runs if e.args == ["pinned"]]
        assert all(e.due == e.kwargs["at"] and e.state == TaskExec.States.SUCCEEDED for e in runs)
    assert local(hourly, PARIS) == expected
    # 02:30 skipped: fires when the clocks jump; repeated: fires in the first pass only.
    assert local(pinned, PARIS) == (["03-29 03:00:00+0200"] if start.month == 3 else ["10-25 02:30:00+0200"])


# -- real worker processes ---------------------------------------------------------------------------


def test_worker_wakes_up_for_the_next_occurrence_despite_a_long_tick(workers, monkeypatch):
    monkeypatch.setenv("TOOSIMPLEQ_TEST_SCHEDULES", "every_2s")
    proc = workers.start("--tick", "30")
    wait_for(lambda: TaskExec.objects.filter(state=TaskExec.States.SUCCEEDED).count() >= 4, timeout=60)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=30)
    runs = list(TaskExec.objects.filter(state=TaskExec.States.SUCCEEDED).order_by("due"))
    for run in runs:
        assert run.due.second % 2 == 0 and run.due.microsecond == 0
        late = (run.started - run.due).total_seconds()
        assert 0 <= late < 1.5, (run, late, output)
    assert [b.due - a.due for a, b in zip(runs, runs[1:])] == [datetime.timedelta(seconds=2)] * (len(runs) - 1)


def test_exactly_once_with_three_workers(workers, monkeypatch):
    """Each one-second occurrence yields one execution, whichever of three racing workers wins."""
    monkeypatch.setenv("TOOSIMPLEQ_TEST_SCHEDULES", "every_second")
    procs = [workers.start("--tick", "5", "--label", f"racer-{i}") for i in range(3)]
    wait_for(lambda: WorkerStatus.objects.filter(stopped__isnull=True).count() == 3, timeout=60)
    wait_for(lambda: TaskExec.objects.filter(state=TaskExec.States.SUCCEEDED).count() >= 32, timeout=120)
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    outputs = [proc.communicate(timeout=30)[0] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), outputs

    executions = list(TaskExec.objects.filter(task_name="record_occurrence").order_by("due"))
    due_times = [e.due for e in executions]
    assert len(due_times) == len(set(due_times)), "an occurrence was queued twice"
    # catch_up=True: no occurrence may be skipped either, between the first and the last.
    assert [b - a for a, b in zip(due_times, due_times[1:])] == [datetime.timedelta(seconds=1)] * (len(due_times) - 1)
    assert all(e.kwargs["at"] == e.due for e in executions)
    finished = [e for e in executions if e.state == TaskExec.States.SUCCEEDED]
    keys = list(Record.objects.values_list("key", flat=True))
    assert len(keys) == len(set(keys)) == len(finished) >= 32
    row = ScheduleExec.objects.get(name="every_second")
    assert row.last_due == due_times[-1] and row.last_task_id == executions[-1].pk
    print("executions per worker:", Counter(e.worker_id for e in finished))


def test_invalid_cron_in_an_apps_tasks_module_stops_check_and_worker_without_a_traceback(tmp_path, transactional_db):
    from tests.conftest import env_with_app

    env = env_with_app(
        tmp_path,
        "bad_cron_app",
        "from django_toosimple_q.decorators import register_task, schedule_task\n"
        "\n"
        "@schedule_task(cron='61 * * * *')\n"
        "@register_task(name='bad_cron_task')\n"
        "def bad_cron_task():\n"
        "    return 1\n",
    )
    for command in (["check"], ["worker", "--once"]):
        done = subprocess.run(
            [sys.executable, "-m", "django", *command], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode != 0, (command, done.stdout, done.stderr)
        assert "toosimpleq.E001" in done.stderr and "Schedule 'bad_cron_task' (cron '61 * * * *')" in done.stderr
        assert "Traceback" not in done.stderr, done.stderr
