"""The schedules page of the admin, with Django's test client: every schedule of the code and of the
database, human descriptions, next/last due times, "run now", permissions and escaping."""

from __future__ import annotations

import datetime
import re

import pytest
import time_machine
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone, translation

from django_toosimple_q.cron import describe_cron
from django_toosimple_q.decorators import register_task
from django_toosimple_q.models import ScheduleExec, TaskExec
from django_toosimple_q.registry import schedules_registry
from django_toosimple_q.schedules import Schedule, register_schedule

pytestmark = pytest.mark.django_db
UTC = datetime.timezone.utc
States = TaskExec.States

SCHEDULES = reverse("admin:toosimpleq_scheduleexec_changelist")
EVIL = '<script>alert("x")</script>'


def detail(row: ScheduleExec) -> str:
    return reverse("admin:toosimpleq_scheduleexec_change", args=[row.pk])


@pytest.fixture(autouse=True)
def registries(clean_registry):
    """Schedules (and their task) declared by a test only; the registries are restored afterwards."""
    schedules_registry.clear()


@pytest.fixture
def task():
    @register_task(name="report", queue="reports")
    def report(*args, **kwargs):
        return args

    return report


def schedule(task, name: str, cron: str = "30 8 * * 1-5", **options) -> Schedule:
    return register_schedule(Schedule(name=name, task=task, cron=cron, **options))


def line(html: str, name: str) -> str:
    """The table row of schedule ``name`` (as escaped in the page)."""
    match = re.search(r'<tr class="toosimpleq-schedule[^"]*" data-schedule="%s">(.*?)</tr>' % re.escape(name), html, re.S)
    assert match, f"no row for {name!r}"
    return match.group(1)


def cell(html: str, name: str, field: str) -> str:
    # A cell, or the part of one from a marked element on (the last due time starts the "last run" cell).
    match = re.search(r'class="field-%s">(.*?)</t[dh]>' % field, line(html, name), re.S)
    assert match, f"no {field} cell for {name!r}"
    return match.group(1).strip()


def text(fragment: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", fragment)).strip()


def checkboxes(html: str) -> list[str]:
    return re.findall(r'name="_selected_action" value="([^"]*)"', html)


def run(client, *names: str, **extra):
    return client.post(SCHEDULES, {"action": "action_force_run", "_selected_action": list(names), "index": 0, **extra}, follow=True)


# -- the list ------------------------------------------------------------------------------------


def test_lists_code_and_database_schedules(admin_client, task):
    schedule(task, "never_ran", "30 8 * * 1-5", queue_name="timers")
    schedule(task, "seen", "0 * * * *")
    last = TaskExec.objects.create(task_name="report", state=States.SUCCEEDED)
    seen = ScheduleExec.objects.create(name="seen", last_due=datetime.datetime(2026, 1, 5, 8, 0, tzinfo=UTC), last_task=last)
    gone = ScheduleExec.objects.create(name="gone_from_code", last_due=datetime.datetime(2026, 1, 1, tzinfo=UTC), state="INVALID")

    with time_machine.travel(datetime.datetime(2026, 1, 5, 9, 10, tzinfo=UTC), tick=True):
        response = admin_client.get(SCHEDULES)
    assert response.status_code == 200
    html = response.content.decode()
    # Every schedule of the code (by name), then the rows whose code is gone.
    assert re.findall(r'data-schedule="([^"]+)"', html) == ["never_ran", "seen", "gone_from_code"]

    # A schedule no worker has seen: listed all the same, nothing in the database for it.
    assert "Never ran" in cell(html, "never_ran", "status")
    assert cell(html, "never_ran", "name") == "never_ran"  # no row, hence no detail page to link to
    assert cell(html, "never_ran", "cron").endswith(">30 8 * * 1-5</code>")
    assert cell(html, "never_ran", "description").startswith("At 08:30, Monday through Friday")
    assert cell(html, "never_ran", "queue") == "timers"
    # Its next due time is the next occurrence after now, as a worker starting now would plan it.
    assert 'title="2026-01-06 08:30:00"' in cell(html, "never_ran", "next_due")
    assert cell(html, "never_ran", "last_task") == "-"

    # A schedule with a row: its last due time, the next one, and a link to its last execution.
    assert "Active" in cell(html, "seen", "status")
    assert detail(seen) in cell(html, "seen", "name")
    assert 'title="2026-01-05 08:00:00"' in cell(html, "seen", "last_due")
    assert 'title="2026-01-05 09:00:00"' in cell(html, "seen", "next_due")
    assert "toosimpleq-overdue" in cell(html, "seen", "next_due")  # 09:00 passed: no worker ran it
    assert reverse("admin:toosimpleq_taskexec_change", args=[last.pk]) in cell(html, "seen", "last_task")
    assert "toosimpleq-state-succeeded" in cell(html, "seen", "last_task")
    assert text(cell(html, "seen", "description")) == "Every hour (UTC)"

    # Only in the database: marked as removed from the code, and it cannot be run.
    assert "Removed from code" in cell(html, "gone_from_code", "status")
    assert detail(gone) in cell(html, "gone_from_code", "name")
    assert 'title="2026-01-01 00:00:00"' in cell(html, "gone_from_code", "last_due")
    assert checkboxes(html) == ["never_ran", "seen"]
    assert "1 of them is only in the database" in html

    # Looking at the page writes nothing: a new schedule's timeline is for a worker to start.
    assert set(ScheduleExec.objects.values_list("name", flat=True)) == {"seen", "gone_from_code"}


def test_next_due_of_special_schedules(admin_client, task):
    schedule(task, "by_hand", "manual")
    schedule(task, "at_once", "0 3 * * *", run_on_creation=True)
    schedule(task, "pending_creation_run", "0 3 * * *", run_on_creation=True)
    ScheduleExec.objects.create(name="pending_creation_run", last_due=None)
    schedule(task, "manual_at_once", "manual", run_on_creation=True)
    html = admin_client.get(SCHEDULES).content.decode()
    assert "only on demand" in cell(html, "by_hand", "next_due")
    assert text(cell(html, "by_hand", "description")) == "Never by itself: only when run on demand"
    assert "as soon as a worker sees it" in cell(html, "at_once", "next_due")
    assert "at the next pass of a worker" in cell(html, "pending_creation_run", "next_due")
    assert "as soon as a worker sees it" in cell(html, "manual_at_once", "next_due")  # as the worker does


def test_a_schedule_broken_after_registration_does_not_break_the_page(admin_client, task):
    schedule(task, "broken", "0 3 * * *")
    schedules_registry["broken"].cron = "99 * * * *"
    response = admin_client.get(SCHEDULES)
    assert response.status_code == 200
    html = response.content.decode()
    assert "invalid cron expression" in cell(html, "broken", "next_due")
    assert "No description available" in cell(html, "broken", "description")


def test_projects_with_use_tz_false(admin_client, task):
    with override_settings(USE_TZ=False, TIME_ZONE="Europe/Paris"):
        schedule(task, "naive", "30 8 * * *")
        ScheduleExec.objects.create(name="naive", last_due=datetime.datetime(2026, 1, 5, 8, 30))  # Paris time
        html = admin_client.get(SCHEDULES).content.decode()
        assert 'title="2026-01-05 08:30:00"' in cell(html, "naive", "last_due")
        assert 'title="2026-01-06 08:30:00"' in cell(html, "naive", "next_due")
        html = run(admin_client, "naive").content.decode()
        assert ScheduleExec.objects.get().last_due == datetime.datetime(2026, 1, 5, 8, 30)
        execution = TaskExec.objects.get()
        assert reverse("admin:toosimpleq_taskexec_change", args=[execution.pk]) in cell(html, "naive", "last_task")
        # The executions list and detail page use the same time helpers.
        assert admin_client.get(reverse("admin:toosimpleq_taskexec_changelist")).status_code == 200
        assert admin_client.get(reverse("admin:toosimpleq_taskexec_change", args=[execution.pk])).status_code == 200


def test_next_due_follows_the_schedule_time_zone(admin_client, task):
    schedule(task, "paris", "30 8 * * *", timezone="Europe/Paris")
    ScheduleExec.objects.create(name="paris", last_due=datetime.datetime(2026, 7, 1, 6, 30, tzinfo=UTC))
    html = admin_client.get(SCHEDULES).content.decode()
    # 08:30 in Paris in summer is 06:30 UTC (the tests' TIME_ZONE, in which times are shown).
    assert 'title="2026-07-02 06:30:00"' in cell(html, "paris", "next_due")
    assert "(Europe/Paris)" in cell(html, "paris", "description")


@pytest.mark.parametrize(
    "cron, expected",
    [
        ("30 8 * * 1-5", "At 08:30, Monday through Friday"),
        ("*/15 * * * *", "Every 15 minutes"),
        ("* * * * * */2", "Every 2 seconds"),  # six fields: seconds *last*, as the worker reads them
        ("0 8 * * * 15", "At 08:00:15"),
        ("@daily", "At 00:00"),
        ("@hourly", "Every hour"),
        ("manual", "Never by itself: only when run on demand"),
        ("0 0 1 1 * * *", "No description available for this expression"),
    ],
)
def test_cron_descriptions(cron, expected):
    assert describe_cron(cron) == expected


def test_cron_description_follows_the_language():
    with translation.override("fr"):
        assert describe_cron("*/15 * * * *") == "Toutes les 15 minutes"
    with translation.override("xx"):  # unknown to cron-descriptor: English
        assert describe_cron("*/15 * * * *") == "Every 15 minutes"


def test_detail_page(admin_client, task):
    schedule(task, "nightly", "0 1 * * *", args=[1], kwargs={"full": True}, catch_up=True)
    row = ScheduleExec.objects.create(name="nightly", last_due=datetime.datetime(2026, 1, 5, 1, 0, tzinfo=UTC))
    page = admin_client.get(detail(row)).content.decode()
    assert "At 01:00" in page and "0 1 * * *" in page and "catch_up=True" in page
    assert "report" in page and "{&#x27;full&#x27;: True}" in page
    assert "2026-01-06" in page  # next due
    assert 'name="_save"' not in page
    assert "toosimpleq-run-now" in page
    # A schedule still in the code cannot be deleted here (that would restart its timeline)...
    assert reverse("admin:toosimpleq_scheduleexec_delete", args=[row.pk]) not in page
    assert admin_client.post(reverse("admin:toosimpleq_scheduleexec_delete", args=[row.pk]), {"post": "yes"}).status_code == 403
    # ...one removed from it can, to forget it.
    gone = ScheduleExec.objects.create(name="gone")
    page = admin_client.get(detail(gone)).content.decode()
    assert "Removed from code" in page and "toosimpleq-run-now" not in page
    admin_client.post(reverse("admin:toosimpleq_scheduleexec_delete", args=[gone.pk]), {"post": "yes"})
    assert not ScheduleExec.objects.filter(name="gone").exists()


# -- run now -------------------------------------------------------------------------------------


def test_run_now_keeps_the_timeline_and_is_logged(login, task):
    client = login("view_scheduleexec", "force_run_scheduleexec")
    schedule(task, "hourly", "0 * * * *", args=["x"])
    last_due = datetime.datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    row = ScheduleExec.objects.create(name="hourly", last_due=last_due)
    html = client.get(SCHEDULES).content.decode()
    assert 'title="2026-01-05 09:00:00"' in cell(html, "hourly", "next_due")

    response = run(client, "hourly")
    execution = TaskExec.objects.get()
    assert execution.task_name == "report" and execution.args == ["x"] and execution.state == States.QUEUED
    assert execution.queue == "reports"
    assert abs((execution.due - timezone.now()).total_seconds()) < 60
    row.refresh_from_db()
    assert row.last_due == last_due  # the cron timeline is untouched
    assert row.last_task_id == execution.pk
    html = response.content.decode()
    assert "Queued 1 execution now:" in html
    assert reverse("admin:toosimpleq_taskexec_change", args=[execution.pk]) in html
    assert reverse("admin:toosimpleq_taskexec_change", args=[execution.pk]) in cell(html, "hourly", "last_task")
    assert 'title="2026-01-05 09:00:00"' in cell(html, "hourly", "next_due")  # unchanged

    entry = LogEntry.objects.get()
    assert entry.action_flag == CHANGE and entry.object_id == str(row.pk) and entry.user.username == "staff"
    assert entry.get_change_message() == f"Run now: queued report #{execution.pk}."


def test_run_now_of_a_schedule_no_worker_has_seen(admin_client, task):
    schedule(task, "fresh", "0 3 * * *")
    schedule(task, "by_hand", "manual")
    before = timezone.now()
    run(admin_client, "fresh", "by_hand")
    assert TaskExec.objects.count() == 2
    for name in ("fresh", "by_hand"):
        row = ScheduleExec.objects.get(name=name)
        # run_schedule_now starts the timeline at "now", as a worker seeing it first would.
        assert row.last_due >= before and row.last_task is not None
    assert LogEntry.objects.count() == 2


def test_run_now_with_a_row_button(admin_client, task):
    schedule(task, "one")
    schedule(task, "other")
    response = admin_client.post(SCHEDULES, {"run": "one", "_selected_action": ["other"]}, follow=True)
    assert response.status_code == 200
    assert list(ScheduleExec.objects.values_list("name", flat=True)) == ["one"]  # the button's row only
    assert TaskExec.objects.count() == 1


def test_detail_page_button_comes_back_to_the_detail_page(admin_client, task):
    schedule(task, "one")
    row = ScheduleExec.objects.create(name="one", last_due=timezone.now())
    response = admin_client.post(SCHEDULES, {"run": "one", "next": detail(row)})
    assert response.status_code == 302 and response["Location"] == detail(row)
    response = admin_client.post(SCHEDULES, {"run": "one", "next": "https://elsewhere.example/"})
    assert response["Location"] == SCHEDULES  # never to another site
    assert TaskExec.objects.count() == 2


@pytest.mark.django_db(transaction=True, databases=["default", "queue"])
def test_a_dedicated_queue_database(admin_client, task):
    schedule(task, "one")
    ScheduleExec.objects.using("queue").create(name="gone")
    with override_settings(TOOSIMPLEQ_DATABASE="queue"):
        html = admin_client.get(SCHEDULES).content.decode()
        assert re.findall(r'data-schedule="([^"]+)"', html) == ["one", "gone"]
        html = run(admin_client, "one").content.decode()
        execution = TaskExec.objects.using("queue").get()
        assert ScheduleExec.objects.using("queue").get(name="one").last_task_id == execution.pk
        assert reverse("admin:toosimpleq_taskexec_change", args=[execution.pk]) in cell(html, "one", "last_task")
    assert not ScheduleExec.objects.using("default").exists() and not TaskExec.objects.using("default").exists()
    assert LogEntry.objects.using("default").count() == 1


def test_run_now_edge_cases(admin_client, task):
    schedule(task, "one")
    ScheduleExec.objects.create(name="gone")
    html = run(admin_client).content.decode()
    assert "Items must be selected" in html
    html = admin_client.post(SCHEDULES, {"action": "", "_selected_action": ["one"]}, follow=True).content.decode()
    assert "No action selected." in html
    html = run(admin_client, "gone", "not_a_schedule").content.decode()
    assert "Not in the code, so not run: gone, not_a_schedule." in html
    assert not TaskExec.objects.exists() and not LogEntry.objects.exists()


# -- permissions ---------------------------------------------------------------------------------


def test_view_only_user_sees_everything_read_only(login, task):
    client = login("view_scheduleexec")
    schedule(task, "one")
    row = ScheduleExec.objects.create(name="one", last_due=timezone.now())
    ScheduleExec.objects.create(name="gone")
    html = client.get(SCHEDULES).content.decode()
    assert re.findall(r'data-schedule="([^"]+)"', html) == ["one", "gone"]
    assert 'name="action"' not in html and "toosimpleq-run-now" not in html and not checkboxes(html)
    page = client.get(detail(row)).content.decode()
    assert "At 08:30" in page and "toosimpleq-run-now" not in page and 'name="_save"' not in page


def test_run_now_is_refused_without_its_permission(login, task):
    client = login("view_scheduleexec", "delete_scheduleexec")
    schedule(task, "one")
    assert run(client, "one").status_code == 403
    assert client.post(SCHEDULES, {"run": "one"}).status_code == 403
    assert not TaskExec.objects.exists() and not ScheduleExec.objects.exists() and not LogEntry.objects.exists()


def test_run_now_permission_shows_the_action(login, task):
    client = login("view_scheduleexec", "force_run_scheduleexec")
    schedule(task, "one")
    html = client.get(SCHEDULES).content.decode()
    options = re.findall(r'<option value="(\w+)"', html.split('name="action"', 1)[1].split("</select>", 1)[0])
    assert options == ["action_force_run"]
    assert checkboxes(html) == ["one"] and 'name="run" value="one"' in html


def test_no_view_permission_no_access(login, task):
    client = login("force_run_scheduleexec")
    schedule(task, "one")
    assert client.get(SCHEDULES).status_code == 403
    assert run(client, "one").status_code == 403
    assert not TaskExec.objects.exists()


def test_force_run_permission_exists():
    perm = Permission.objects.get(codename="force_run_scheduleexec")
    assert perm.content_type.model == "scheduleexec" and perm.name == "Can run schedules now"


# -- escaping ------------------------------------------------------------------------------------


def test_names_and_arguments_are_escaped(admin_client, task):
    schedule(task, EVIL, args=[EVIL], kwargs={"k": "<b>bold</b>"})
    ScheduleExec.objects.create(name="<img src=x onerror=alert(1)>")
    html = admin_client.get(SCHEDULES).content.decode()
    assert "<script>" not in html.replace('<script src=', "") and "<b>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    response = run(admin_client, EVIL)
    assert TaskExec.objects.get().args == [EVIL]
    html = response.content.decode()
    assert '<script>alert("x")' not in html
    page = admin_client.get(detail(ScheduleExec.objects.get(name=EVIL))).content.decode()
    assert '<script>alert("x")' not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
