"""``manage.py toosimpleq_status``: tables, JSON, and exit codes for health checks."""

from __future__ import annotations

import datetime
import io
import json
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.utils import timezone

from django_toosimple_q.models import TaskExec, WorkerStatus

from .conftest import ROOT, WorkerProcesses

States = TaskExec.States


def status(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("toosimpleq_status", *args, stdout=out)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue()


def online_worker(**fields) -> WorkerStatus:
    return WorkerStatus.objects.create(label="w", host="h", pid=1, timeout=60, **fields)


@pytest.mark.django_db
def test_no_worker_online_exits_1():
    code, text = status()
    assert code == 1
    assert "Workers online: 0" in text and "UNHEALTHY" in text


@pytest.mark.django_db
def test_healthy_table():
    online_worker(queues=["mail"])
    now = timezone.now()
    TaskExec.objects.create(
        task_name="add", queue="mail", state=States.QUEUED, due=now - datetime.timedelta(seconds=90)
    )
    TaskExec.objects.create(task_name="add", state=States.FAILED, finished=now)
    code, text = status()
    assert code == 0, text
    assert text.rstrip().endswith("OK")
    assert "mail" in text and "Failures in the last 24 h: 1" in text and "Workers online: 1" in text
    line = next(line for line in text.splitlines() if line.strip().startswith("mail"))
    ready, oldest = line.split()[1:3]
    assert ready == "1" and oldest.startswith("9") and oldest.endswith("s")


@pytest.mark.django_db
def test_max_wait_and_json():
    online_worker()
    TaskExec.objects.create(
        task_name="add", queue="slow", state=States.QUEUED, due=timezone.now() - datetime.timedelta(minutes=10)
    )
    TaskExec.objects.create(task_name="add", queue="fast", state=States.QUEUED)
    code, text = status("--json", "--max-wait", "300")
    assert code == 2
    data = json.loads(text)
    assert data["healthy"] is False and data["exit_code"] == 2
    slow = next(q for q in data["queues"] if q["queue"] == "slow")
    assert slow["ready"] == 1 and slow["oldest_wait"] >= 600
    assert data["states"]["QUEUED"] == 2 and data["total"] == 2
    assert len(data["workers_online"]) == 1
    assert "slow" in data["problems"][0]
    # Only the fast queue is checked: healthy.
    assert status("--max-wait", "300", "--queue", "fast")[0] == 0
    assert status("--max-wait", "3600")[0] == 0


@pytest.mark.django_db
def test_codes_add_up_and_checks_can_be_relaxed():
    WorkerStatus.objects.create(label="old", timeout=60, last_seen=timezone.now() - datetime.timedelta(hours=1))
    TaskExec.objects.create(task_name="add", state=States.QUEUED, due=timezone.now() - datetime.timedelta(hours=1))
    for _ in range(3):
        TaskExec.objects.create(task_name="add", state=States.FAILED, finished=timezone.now())
    assert status("--max-wait", "60", "--max-failures", "2")[0] == 1 + 2 + 4
    assert status("--min-workers", "0", "--max-failures", "3")[0] == 0


@pytest.mark.django_db(transaction=True)
def test_exit_code_of_the_real_command():
    """As a container health check runs it: a separate process, its exit status."""
    env = WorkerProcesses().env()
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "django", "toosimpleq_status", *a], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert run().returncode == 1
    online_worker()
    done = run("--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["healthy"] is True


@pytest.mark.django_db
def test_each_worker_says_whether_it_receives_notifications_or_polls():
    notified = online_worker(receives_notifications=True)
    polling = online_worker()
    code, text = status()
    assert code == 0, text
    rows = {line.split()[0]: line for line in text.splitlines()[1:] if line.strip()[:1].isdigit()}
    assert "pick-up" in text
    assert " notifications " in rows[str(notified.pk)] and " polling " in rows[str(polling.pk)]
    data = json.loads(status("--json")[1])
    assert {w["id"]: w["receives_notifications"] for w in data["workers_online"]} == {
        notified.pk: True,
        polling.pk: False,
    }
