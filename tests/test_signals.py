"""``task_started`` / ``task_finished`` sent by the worker around each execution."""

from __future__ import annotations

import threading

import pytest
from django.core.management import call_command

from django_toosimple_q.models import TaskExec
from django_toosimple_q.signals import task_finished, task_started
from tests.app.tasks import add, fail, sleepy_limited

pytestmark = pytest.mark.django_db(transaction=True)
States = TaskExec.States


@pytest.fixture
def received():
    events = []
    lock = threading.Lock()

    def on_started(sender, execution, **kwargs):
        with lock:
            events.append(("started", sender, execution.pk, execution.state, execution.started is not None))

    def on_finished(sender, execution, **kwargs):
        with lock:
            events.append(("finished", sender, execution.pk, execution.state, execution.finished is not None))

    task_started.connect(on_started, weak=False)
    task_finished.connect(on_finished, weak=False)
    yield events
    task_started.disconnect(on_started)
    task_finished.disconnect(on_finished)


def test_started_and_finished(received):
    ok = add.queue(1, 2)
    bad = fail.queue("nope")
    call_command("worker", "--until_done", verbosity=0)
    by_pk = {
        pk: [(kind, state, stamped) for kind, sender, p, state, stamped in received if p == pk]
        for pk in (ok.pk, bad.pk)
    }
    assert all(sender is TaskExec for _, sender, *_ in received)
    assert by_pk[ok.pk] == [("started", States.PROCESSING, True), ("finished", States.SUCCEEDED, True)]
    assert by_pk[bad.pk] == [("started", States.PROCESSING, True), ("finished", States.FAILED, True)]


def test_invalid_execution(received):
    invalid = TaskExec.objects.create(task_name="add", args=[1], kwargs={})  # missing an argument
    call_command("worker", "--until_done", verbosity=0)
    assert [(kind, state) for kind, _, pk, state, _ in received if pk == invalid.pk] == [
        ("started", States.PROCESSING),
        ("finished", States.INVALID),
    ]


def test_time_limited_execution_runs_in_a_child_and_is_reported_by_the_worker(received):
    """The outcome is written by the child process; the signal, sent by the worker, carries it."""
    outcomes = []

    def keep_result(sender, execution, **kwargs):
        outcomes.append(execution.result)

    task_finished.connect(keep_result)
    try:
        execution = sleepy_limited.queue(0)
        call_command("worker", "--until_done", verbosity=0)
    finally:
        task_finished.disconnect(keep_result)
    assert [(kind, state) for kind, _, pk, state, _ in received if pk == execution.pk] == [
        ("started", States.PROCESSING),
        ("finished", States.SUCCEEDED),
    ]
    assert outcomes == ["woke up"]


def test_failing_receiver_changes_nothing(received):
    def broken(sender, execution, **kwargs):
        raise RuntimeError("receiver bug")

    task_started.connect(broken, weak=False)
    task_finished.connect(broken, weak=False)
    try:
        execution = add.queue(2, 2)
        call_command("worker", "--until_done", verbosity=0)
    finally:
        task_started.disconnect(broken)
        task_finished.disconnect(broken)
    execution.refresh_from_db()
    assert execution.state == States.SUCCEEDED and execution.result == 4
    assert [kind for kind, *_ in received] == ["started", "finished"]
