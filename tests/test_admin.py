"""The admin pages, with Django's test client: lists, filters, search, detail, actions, permissions,
the dashboard, and escaping of anything a task stored."""

from __future__ import annotations

import datetime
import re

import pytest
from django.contrib.admin.models import LogEntry
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_toosimple_q import monitoring
from django_toosimple_q.decorators import register_task
from django_toosimple_q.models import TaskExec, WorkerStatus

pytestmark = pytest.mark.django_db
States = TaskExec.States

LIST = reverse("admin:toosimpleq_taskexec_changelist")
DASHBOARD = reverse("admin:toosimpleq_dashboard")
WORKERS = reverse("admin:toosimpleq_workerstatus_changelist")
EVIL = '<script>alert("x")</script>'


def detail(pk: int) -> str:
    return reverse("admin:toosimpleq_taskexec_change", args=[pk])


def make(**fields) -> TaskExec:
    fields.setdefault("task_name", "add")
    fields.setdefault("args", [1, 2])
    return TaskExec.objects.create(**fields)


def finished(state=States.SUCCEEDED, ago=datetime.timedelta(minutes=5), **fields) -> TaskExec:
    end = timezone.now() - ago
    return make(state=state, started=end - datetime.timedelta(seconds=2), finished=end, **fields)


def worker(label="w1", stopped=None, **fields) -> WorkerStatus:
    fields.setdefault("host", "host1")
    return WorkerStatus.objects.create(label=label, pid=1234, timeout=60, stopped=stopped, **fields)


def rows(response) -> list[int]:
    """Execution ids listed on a changelist page, in order."""
    return [int(pk) for pk in re.findall(r'name="_selected_action" value="(\d+)"', response.content.decode())] or [
        int(pk) for pk in re.findall(r'/toosimpleq/taskexec/(\d+)/change/"[^>]*>\1<', response.content.decode())
    ]


def action(client, name: str, *executions: TaskExec):
    return client.post(LIST, {"action": name, "_selected_action": [e.pk for e in executions], "index": 0}, follow=True)


# -- list ----------------------------------------------------------------------------------------


def test_list_columns_and_state_badges(admin_client):
    w = worker()
    done = finished(worker=w)
    failed = finished(States.FAILED, error="Traceback ...")
    queued = make(state=States.QUEUED, kwargs={"x": 1})
    response = admin_client.get(LIST)
    assert response.status_code == 200
    html = response.content.decode()
    assert rows(response) == [queued.pk, failed.pk, done.pk]
    for heading in ("task", "call", "state", "when", "worker", "retries"):
        assert f">{heading.capitalize()}<" in html or f">{heading}<" in html.lower()
    assert "toosimpleq-state-failed" in html and "✘" in html
    assert "toosimpleq-state-succeeded" in html
    assert "ran 2.00 s" in html  # duration, under the finish time
    assert "queue default, priority 0" in html
    assert re.search(r"finished</span> <span [^>]*title=", html) and re.search(r"due</span> <span [^>]*title=", html)
    assert reverse("admin:toosimpleq_workerstatus_change", args=[w.pk]) in html
    assert "[1, 2]" in html and "{&#x27;x&#x27;: 1}" in html


def test_times_of_today_say_today_and_others_give_the_date():
    import time_machine

    from django_toosimple_q.admin.display import moment

    with time_machine.travel(datetime.datetime(2026, 3, 10, 12, 0, tzinfo=datetime.timezone.utc), tick=False):
        now = timezone.now()
        today = moment(now - datetime.timedelta(hours=11, minutes=59))
        yesterday = moment(now - datetime.timedelta(hours=12, seconds=1))
    assert ">today 00:01:00<" in today and 'title="2026-03-10 00:01:00"' in today
    assert ">2026-03-09 23:59<" in yesterday and 'title="2026-03-09 23:59:59"' in yesterday
    assert moment(None) == "-"


def test_list_never_reads_large_values(admin_client):
    big = "y" * 200_000
    make(args=[big], kwargs={"k": big}, result=big, output=big, error=big, state=States.FAILED)
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(LIST)
    assert response.status_code == 200
    html = response.content.decode()
    assert "y" * 1000 not in html
    assert "…" in html  # the preview is cut
    qn = connection.ops.quote_name
    table = TaskExec._meta.db_table
    for query in queries.captured_queries:
        sql = query["sql"]
        if qn(table) in sql:
            for column in ("result", "output", "error"):
                assert f"{qn(table)}.{qn(column)}" not in sql, sql


def test_replaced_by_links_both_ways(admin_client):
    new = make(state=States.QUEUED)
    old = finished(States.FAILED, replaced_by=new)
    html = admin_client.get(LIST).content.decode()
    assert f'href="{detail(new.pk)}">#{new.pk}</a>' in html  # old -> replaced by new
    assert f'href="{detail(old.pk)}">#{old.pk}</a>' in html  # new -> retry of old
    page = admin_client.get(detail(new.pk)).content.decode()
    assert f'href="{detail(old.pk)}">#{old.pk}</a>' in page
    page = admin_client.get(detail(old.pk)).content.decode()
    assert detail(new.pk) in page


def test_filters(admin_client):
    w1, w2 = worker("w1"), worker("w2")
    ok = finished(worker=w1)
    bad = finished(States.FAILED, worker=w2, task_name="fail", queue="slow")
    queued = make(state=States.QUEUED, task_name="echo", args=["hi"])
    assert rows(admin_client.get(LIST, {"state__exact": "FAILED"})) == [bad.pk]
    assert rows(admin_client.get(LIST, {"task_name": "echo"})) == [queued.pk]
    assert rows(admin_client.get(LIST, {"queue": "slow"})) == [bad.pk]
    assert rows(admin_client.get(LIST, {"worker": w1.pk})) == [ok.pk]
    assert rows(admin_client.get(LIST, {"worker": "nonsense"})) == []
    html = admin_client.get(LIST).content.decode()
    # Filter choices come from the registry and recent rows.
    assert "?task_name=record" in html and "?task_name=fail" in html and "?queue=slow" in html
    assert f"?worker={w2.pk}" in html


def test_search_by_name_and_id(admin_client):
    a = make(task_name="send_report")
    b = make(task_name="add")
    assert rows(admin_client.get(LIST, {"q": "report"})) == [a.pk]
    assert rows(admin_client.get(LIST, {"q": str(b.pk)})) == [b.pk]
    assert rows(admin_client.get(LIST, {"q": f"#{a.pk}"})) == [a.pk]


def test_date_hierarchy(admin_client):
    old = make(created=timezone.now() - datetime.timedelta(days=400))
    new = make()
    html = admin_client.get(LIST).content.decode()
    assert "created__year=" in html  # two years: the hierarchy starts at years
    year = timezone.localtime(new.created).year
    response = admin_client.get(LIST, {"created__year": year})
    assert rows(response) == [new.pk]
    assert "created__month=" in response.content.decode()
    local = timezone.localtime(old.created)
    response = admin_client.get(
        LIST, {"created__year": local.year, "created__month": local.month, "created__day": local.day}
    )
    assert rows(response) == [old.pk]


# -- detail ----------------------------------------------------------------------------------------


def test_detail_is_read_only_and_readable(admin_client):
    execution = finished(
        States.FAILED,
        args=[1, (2, 3)],
        kwargs={"when": datetime.date(2024, 1, 2)},
        error="Traceback (most recent call last):\n  File x\nValueError: boom",
        output="printed line",
    )
    response = admin_client.get(detail(execution.pk))
    assert response.status_code == 200
    html = response.content.decode()
    assert "[1, (2, 3)]" in html
    assert "datetime.date(2024, 1, 2)" in html
    assert "ValueError: boom" in html and "printed line" in html
    assert 'name="_save"' not in html  # nothing to save: read-only even for a superuser
    assert admin_client.post(detail(execution.pk), {"state": "QUEUED"}).status_code == 403
    execution.refresh_from_db()
    assert execution.state == States.FAILED
    assert admin_client.get(reverse("admin:toosimpleq_taskexec_add")).status_code == 403


def test_html_injection_is_escaped(admin_client):
    execution = finished(
        States.FAILED,
        task_name=EVIL,
        args=[EVIL],
        kwargs={EVIL: EVIL},
        result=EVIL,
        error=EVIL,
        output=EVIL,
        queue=EVIL,
    )
    w = worker(label=EVIL, host=EVIL, queues=[EVIL])
    TaskExec.objects.filter(pk=execution.pk).update(worker=w)
    pages = [
        admin_client.get(LIST),
        admin_client.get(detail(execution.pk)),
        admin_client.get(LIST, {"q": "script"}),
        admin_client.get(DASHBOARD),
        admin_client.get(WORKERS),
        admin_client.get(reverse("admin:toosimpleq_workerstatus_change", args=[w.pk])),
    ]
    for response in pages:
        assert response.status_code == 200
        html = response.content.decode()
        assert "<script>alert" not in html, response.request["PATH_INFO"]
    assert "&lt;script&gt;alert" in pages[1].content.decode()


def test_undecodable_value_is_shown_raw(admin_client):
    execution = make()
    table, qn = TaskExec._meta.db_table, connection.ops.quote_name
    with connection.cursor() as cursor:  # raw SQL: the field would store a valid JSON string
        cursor.execute(f"UPDATE {qn(table)} SET {qn('args')} = %s WHERE id = %s", ["[not json <b>", execution.pk])
    html = admin_client.get(detail(execution.pk)).content.decode()
    assert "cannot be decoded" in html and "[not json &lt;b&gt;" in html
    assert admin_client.get(LIST).status_code == 200


# -- actions and permissions ----------------------------------------------------------------------


def test_requeue(login):
    client = login("view_taskexec", "requeue_taskexec")
    failed = finished(States.FAILED, args=[2, 3], kwargs={}, queue="default", priority=5)
    response = action(client, "action_requeue", failed)
    assert response.status_code == 200
    new = TaskExec.objects.exclude(pk=failed.pk).get()
    assert (new.task_name, new.args, new.kwargs, new.priority, new.state) == ("add", [2, 3], {}, 5, States.QUEUED)
    failed.refresh_from_db()
    assert failed.replaced_by_id == new.pk and failed.state == States.FAILED
    assert f"#{new.pk}" in response.content.decode()
    entry = LogEntry.objects.get(object_id=str(failed.pk))
    assert entry.change_message == f"Requeued as #{new.pk}."
    assert rows(response)[0] == new.pk  # the new row is listed first


def test_requeue_unique_task_merges(login, clean_registry):
    @register_task(name="unique_one", unique=True)
    def unique_one(x):
        return x

    client = login("view_taskexec", "requeue_taskexec")
    first = finished(States.SUCCEEDED, task_name="unique_one", args=[1])
    second = finished(States.FAILED, task_name="unique_one", args=[1])
    action(client, "action_requeue", first, second)
    waiting = TaskExec.objects.filter(state=States.QUEUED)
    assert waiting.count() == 1 and waiting.get().unique_key
    assert LogEntry.objects.count() == 2


def test_cancel_only_waiting(login):
    client = login("view_taskexec", "cancel_taskexec")
    queued = make(state=States.QUEUED, unique_key="k1")
    sleeping = make(state=States.SLEEPING, due=timezone.now() + datetime.timedelta(hours=1))
    running = make(state=States.PROCESSING, started=timezone.now())
    done = finished()
    response = action(client, "action_cancel", queued, sleeping, running, done)
    html = response.content.decode()
    assert "Cancelled 2 executions." in html
    assert "2 executions were not waiting any more" in html
    for execution, state in ((queued, States.CANCELLED), (sleeping, States.CANCELLED), (running, States.PROCESSING)):
        execution.refresh_from_db()
        assert execution.state == state
    queued.refresh_from_db()
    assert queued.unique_key is None and queued.finished is not None
    assert sorted(int(e.object_id) for e in LogEntry.objects.all()) == sorted([queued.pk, sleeping.pk])
    assert set(LogEntry.objects.values_list("change_message", flat=True)) == {"Cancelled."}


def test_cancel_cannot_touch_a_claimed_execution(login):
    """The UPDATE is conditional: a row claimed by a worker after the page was shown stays claimed."""
    client = login("view_taskexec", "cancel_taskexec")
    queued = make(state=States.QUEUED)
    TaskExec.objects.filter(pk=queued.pk).update(state=States.PROCESSING)  # a worker claims it meanwhile
    action(client, "action_cancel", queued)
    queued.refresh_from_db()
    assert queued.state == States.PROCESSING
    assert not LogEntry.objects.exists()


def action_choices(client) -> set[str]:
    html = client.get(LIST).content.decode()
    return (
        set(re.findall(r'<option value="(\w+)"', html.split('name="action"', 1)[1].split("</select>", 1)[0])) - {""}
        if 'name="action"' in html
        else set()
    )


@pytest.mark.parametrize(
    "codenames, expected",
    [
        (("view_taskexec",), set()),
        (("view_taskexec", "requeue_taskexec"), {"action_requeue"}),
        (("view_taskexec", "cancel_taskexec"), {"action_cancel"}),
        (
            ("view_taskexec", "requeue_taskexec", "cancel_taskexec", "delete_taskexec"),
            {"action_requeue", "action_cancel", "delete_selected"},
        ),
    ],
)
def test_actions_need_their_own_permission(login, codenames, expected):
    client = login(*codenames)
    make()
    assert action_choices(client) == expected


def test_actions_refused_without_permission(login):
    client = login("view_taskexec")
    queued = make(state=States.QUEUED)
    action(client, "action_cancel", queued)
    action(client, "action_requeue", queued)
    queued.refresh_from_db()
    assert queued.state == States.QUEUED and TaskExec.objects.count() == 1
    assert not LogEntry.objects.exists()


def test_view_only_user_sees_everything_read_only(login):
    client = login("view_taskexec", "view_workerstatus")
    execution = finished(States.FAILED, error="boom")
    w = worker()
    for url in (
        LIST,
        detail(execution.pk),
        DASHBOARD,
        WORKERS,
        reverse("admin:toosimpleq_workerstatus_change", args=[w.pk]),
    ):
        response = client.get(url)
        assert response.status_code == 200, url
        assert 'name="_save"' not in response.content.decode()
    assert 'name="action"' not in client.get(LIST).content.decode()


def test_no_view_permission_no_access(login):
    client = login()
    assert client.get(LIST).status_code == 403
    assert client.get(DASHBOARD).status_code == 403


# -- dashboard, app index, workers ----------------------------------------------------------------


def test_app_index_links_to_dashboard(admin_client):
    html = admin_client.get(reverse("admin:app_list", args=["toosimpleq"])).content.decode()
    assert DASHBOARD in html
    assert DASHBOARD in admin_client.get(LIST).content.decode()
    # The models are named as the documentation names them (migration 0023 for the workers).
    assert ">Workers<" in html and ">Task executions<" in html and ">Schedules<" in html
    assert "Worker statuses" not in html


def test_dashboard(admin_client):
    now = timezone.now()
    w = worker("alive")
    worker("gone", stopped=now, exit_code=0)
    finished(ago=datetime.timedelta(minutes=3))
    finished(ago=datetime.timedelta(minutes=3))
    finished(States.FAILED, ago=datetime.timedelta(hours=2))
    finished(States.FAILED, ago=datetime.timedelta(hours=30))  # outside the 24 h window
    make(state=States.QUEUED, queue="mail", due=now - datetime.timedelta(minutes=10))
    make(state=States.SLEEPING, queue="mail", due=now + datetime.timedelta(minutes=10))
    make(state=States.PROCESSING, queue="default", worker=w)
    response = admin_client.get(DASHBOARD)
    assert response.status_code == 200
    ctx = response.context
    assert {row["count"] for row in ctx["states"] if "succeeded" in row["badge"]} == {2}
    assert ctx["total"] == 7
    assert ctx["failures_24h"] == 1
    assert [row["worker"].label for row in ctx["workers"]] == ["alive"]
    mail = next(row["stats"] for row in ctx["queues"] if row["stats"].queue == "mail")
    assert (mail.queued, mail.sleeping, mail.ready) == (1, 1, 1)
    assert 590 <= mail.oldest_wait <= 700
    html = response.content.decode()
    assert "<svg" in html and "2 succeeded, 1 failed" in html  # the chart's 3-hour window
    assert "10 min" in html
    # The links lead to the matching executions.
    recent_failure = TaskExec.objects.get(state=States.FAILED, finished__gte=now - datetime.timedelta(hours=24))
    assert rows(admin_client.get(ctx["failures_url"])) == [recent_failure.pk]
    mail_url = next(row["url"] for row in ctx["queues"] if row["stats"].queue == "mail")
    assert len(rows(admin_client.get(mail_url))) == 2
    assert admin_client.get(DASHBOARD, {"hours": "24"}).context["hours"] == 24
    assert admin_client.get(DASHBOARD, {"hours": "junk"}).context["hours"] == 3


def test_dashboard_no_worker_warning(admin_client):
    assert "No worker is online" in admin_client.get(DASHBOARD).content.decode()


def test_dashboard_counts_calls_that_finally_failed_and_retries_apart(admin_client):
    # A call that failed twice, then succeeded; a call that failed twice and has no retry left.
    recovered = finished(States.SUCCEEDED)
    for _ in range(2):
        recovered = finished(States.FAILED, replaced_by=recovered)
    lost = finished(States.FAILED)
    finished(States.FAILED, replaced_by=lost)
    response = admin_client.get(DASHBOARD)
    ctx = response.context
    assert (ctx["failures_24h"], ctx["retried_24h"]) == (1, 3)
    assert rows(admin_client.get(ctx["failures_url"])) == [lost.pk]
    assert len(rows(admin_client.get(ctx["retried_url"]))) == 3
    assert ctx["succeeded_in_window"] == 1 and ctx["failed_in_window"] == 4


def test_outcomes_per_interval():
    now = timezone.now().replace(minute=17, second=30, microsecond=0)
    make(state=States.SUCCEEDED, finished=now - datetime.timedelta(minutes=1))  # xx:16:30, interval xx:15
    make(state=States.FAILED, finished=now - datetime.timedelta(minutes=2))  # xx:15:30, interval xx:15
    make(state=States.SUCCEEDED, finished=now - datetime.timedelta(minutes=3))  # xx:14:30, interval xx:10
    make(state=States.CANCELLED, finished=now - datetime.timedelta(minutes=3))  # neither succeeded nor failed
    make(state=States.SUCCEEDED, finished=now - datetime.timedelta(hours=2))  # outside the window
    intervals = monitoring.outcomes_per_interval(1, 5, now)
    assert len(intervals) == 12
    assert intervals[-1].start == now.replace(minute=15, second=0)
    assert intervals[0].start == now.replace(minute=20, second=0) - datetime.timedelta(hours=1)
    assert [(i.succeeded, i.failed) for i in intervals[-2:]] == [(1, 0), (1, 1)]
    assert sum(i.succeeded + i.failed for i in intervals[:-2]) == 0


@pytest.mark.parametrize("top", [0, 1, 3, 4, 5, 9, 10, 11, 41, 99, 101, 999, 12345])
def test_chart_scale_covers_the_highest_bar_in_a_few_round_steps(top):
    from django_toosimple_q.admin.dashboard import nice_scale

    step, maximum = nice_scale(top)
    assert maximum >= max(top, 1) and maximum // step <= 4 and maximum % step == 0
    assert str(step).strip("0") in ("1", "2", "5")


def test_finished_per_minute_buckets():
    now = timezone.now().replace(second=30, microsecond=0)
    for seconds in (1, 6, 66, 66 + 60 * 7):  # seconds before ``now`` (hh:mm:30)
        make(state=States.SUCCEEDED, finished=now - datetime.timedelta(seconds=seconds))
    make(state=States.FAILED, finished=now - datetime.timedelta(seconds=seconds + 3600))  # outside the window
    series = monitoring.finished_per_minute(10, now)
    assert len(series) == 10
    assert series[-1][0] == now.replace(second=0)
    assert [n for _, n in series] == [0, 1, 0, 0, 0, 0, 0, 0, 1, 2]


def test_workers_list(admin_client):
    alive = worker("alive", queues=["mail"])
    stale = worker("stale")
    WorkerStatus.objects.filter(pk=stale.pk).update(last_seen=timezone.now() - datetime.timedelta(hours=1))
    crashed = worker("crashed", stopped=timezone.now(), exit_code=3, exit_log="Traceback: oops")
    running = make(state=States.PROCESSING, worker=alive, task_name="sleep_then_record")
    html = admin_client.get(WORKERS).content.decode()
    assert "toosimpleq-state-online" in html and "toosimpleq-state-timedout" in html
    assert "toosimpleq-state-crashed" in html
    assert f"sleep_then_record #{running.pk}" in html
    online = admin_client.get(WORKERS, {"online": "yes"}).content.decode()
    assert ">alive<" in online and ">stale<" not in online
    offline = admin_client.get(WORKERS, {"online": "no"}).content.decode()
    assert ">stale<" in offline and ">crashed<" in offline and ">alive<" not in offline
    page = admin_client.get(reverse("admin:toosimpleq_workerstatus_change", args=[crashed.pk])).content.decode()
    assert "Traceback: oops" in page and 'name="_save"' not in page
    page = admin_client.get(reverse("admin:toosimpleq_workerstatus_change", args=[alive.pk])).content.decode()
    assert detail(running.pk) in page


def test_long_lists_are_counted_up_to_a_cap(admin_client, monkeypatch):
    from django_toosimple_q.admin.listing import CappedPaginator

    monkeypatch.setattr(CappedPaginator, "cap", 3)
    for _ in range(5):
        make()
    response = admin_client.get(LIST)
    assert "more than 3 task executions" in response.content.decode()
    assert len(rows(response)) == 5  # one page: the page itself is not capped below list_per_page
    assert "Select all matching executions (more than 3)" in response.content.decode()
    response = admin_client.get(LIST, {"q": "add"})
    assert "more than 3 results" in response.content.decode()
    monkeypatch.setattr(CappedPaginator, "cap", 10)
    assert "5 task executions" in admin_client.get(LIST).content.decode()


def test_detail_page_buttons_follow_permissions(login):
    client = login("view_taskexec", "requeue_taskexec", "cancel_taskexec")
    queued = make(state=States.QUEUED)
    done = finished()
    page = client.get(detail(queued.pk)).content.decode()
    assert "toosimpleq-requeue" in page and "toosimpleq-cancel" in page
    page = client.get(detail(done.pk)).content.decode()
    assert "toosimpleq-requeue" in page and "toosimpleq-cancel" not in page  # only waiting ones
    # The buttons post to the list's actions.
    response = client.post(LIST, {"action": "action_cancel", "_selected_action": [queued.pk], "index": 0}, follow=True)
    assert "Cancelled 1 execution." in response.content.decode()


def test_detail_page_without_action_permissions_has_no_buttons(login):
    client = login("view_taskexec")
    page = client.get(detail(make(state=States.QUEUED).pk)).content.decode()
    assert "toosimpleq-requeue" not in page and "toosimpleq-cancel" not in page


def test_workers_pick_up_column(admin_client):
    notified = worker("notified", receives_notifications=True)
    worker("polling")
    worker("gone", stopped=timezone.now(), exit_code=0, receives_notifications=True)
    html = admin_client.get(WORKERS).content.decode()
    assert "pick-up" in html.lower()
    rows = {name: row for row in html.split("<tr")[1:] for name in ("notified", "polling", "gone") if f">{name}<" in row}
    assert ">notifications<" in rows["notified"] and ">polling<" in rows["polling"]
    assert ">notifications<" not in rows["gone"] and ">polling<" not in rows["gone"]
    page = admin_client.get(reverse("admin:toosimpleq_workerstatus_change", args=[notified.pk])).content.decode()
    assert ">notifications<" in page
