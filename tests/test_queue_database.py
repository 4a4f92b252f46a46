"""``TOOSIMPLEQ_DATABASE`` without the router: every write of every client lands in the queue's
database, nothing in ``default`` (where no worker looks). Two real databases (aliases ``default`` and
``queue``) on each vendor."""

from __future__ import annotations

import pytest
from django.core import mail
from django.test import override_settings

from tests.conftest import run_worker_here
from django_toosimple_q.backends import AVAILABLE
from django_toosimple_q.decorators import register_task, schedule_task
from django_toosimple_q.models import ScheduleExec, TaskExec, WorkerStatus
from django_toosimple_q.registry import Call
from django_toosimple_q.schedules import run_schedule_now

pytestmark = [
    pytest.mark.django_db(transaction=True, databases=["default", "queue"]),
    pytest.mark.usefixtures("clean_registry"),
]
States = TaskExec.States
QUEUE = override_settings(TOOSIMPLEQ_DATABASE="queue", DATABASE_ROUTERS=[])


def nothing_in_default() -> None:
    for model in (TaskExec, ScheduleExec, WorkerStatus):
        assert not model.objects.using("default").exists(), model


@register_task(name="qdb_double")
def qdb_double(x):
    return 2 * x


def test_queue_and_queue_many_write_to_the_queue_database():
    with QUEUE:
        one = qdb_double.queue(1)
        many = qdb_double.queue_many([(2,), Call(3), {"x": 4}])
        assert one._state.db == "queue" and {e._state.db for e in many} == {"queue"}
        assert TaskExec.objects.using("queue").count() == 4
        run_worker_here()
        assert sorted(TaskExec.objects.values_list("result", flat=True)) == [2, 4, 6, 8]
    nothing_in_default()


def test_mail_is_queued_and_delivered_through_the_queue_database(settings):
    settings.EMAIL_BACKEND = "django_toosimple_q.contrib.mail.backends.QueueBackend"
    settings.TOOSIMPLEQ_EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    with QUEUE:
        assert mail.send_mail("Hi", "Body", "from@example.com", ["to@example.com"]) == 1
        assert TaskExec.objects.using("queue").count() == 1
        run_worker_here()
        assert TaskExec.objects.get().state == States.SUCCEEDED
    assert [m.subject for m in mail.outbox] == ["Hi"]
    nothing_in_default()


def test_admin_requeue_and_cancel_change_the_queue_database(admin_client):
    with QUEUE:
        done = qdb_double.queue(5)
        run_worker_here()
        waiting = qdb_double.queue(6)
        listing = "/admin/toosimpleq/taskexec/"
        response = admin_client.post(
            listing, {"action": "action_requeue", "_selected_action": [done.pk], "index": 0}, follow=True
        )
        assert response.status_code == 200
        rerun = TaskExec.objects.get(replaces=done.pk)
        assert rerun.state == States.QUEUED and rerun._state.db == "queue"
        admin_client.post(listing, {"action": "action_cancel", "_selected_action": [waiting.pk], "index": 0}, follow=True)
        assert TaskExec.objects.get(pk=waiting.pk).state == States.CANCELLED
    nothing_in_default()


def test_run_schedule_now_writes_to_the_queue_database():
    schedule_task(cron="manual", name="qdb_manual", args=[7])(qdb_double)
    with QUEUE:
        execution = run_schedule_now("qdb_manual")
        assert execution._state.db == "queue"
        assert ScheduleExec.objects.using("queue").get(name="qdb_manual").last_task_id == execution.pk
    nothing_in_default()


@pytest.mark.skipif(not AVAILABLE, reason="Django's tasks framework needs Django >= 6.0")
def test_django_tasks_backend_enqueues_and_reads_results_in_the_queue_database():
    from tests.app import django_tasks as dt

    with QUEUE:
        result = dt.dj_add.enqueue(1, 2)
        assert TaskExec.objects.using("queue").filter(pk=result.id).exists()
        run_worker_here()
        result.refresh()
        assert result.return_value["sum"] == 3
    nothing_in_default()
