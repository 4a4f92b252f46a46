"""``async def`` functions registered with our own ``@register_task`` (every Django version)."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import run_worker_here
from django_toosimple_q.decorators import register_task
from django_toosimple_q.models import TaskExec, WorkerStatus
from django_toosimple_q.registry import tasks_registry
from tests.app.models import Record

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_registry")]
States = TaskExec.States


def test_async_task_runs_on_the_worker_with_orm_and_output():
    @register_task(name="async_greet")
    async def greet(name):
        await asyncio.sleep(0.01)
        await Record.objects.acreate(key=name)
        print("hello from the loop", name)
        return f"Hello {name} !"

    execution = greet.queue("John")
    run_worker_here()
    execution.refresh_from_db()
    assert (execution.state, execution.result) == (States.SUCCEEDED, "Hello John !")
    assert execution.output.strip() == "hello from the loop John"
    assert Record.objects.get().key == "John"


def test_async_task_failure_is_recorded_and_retried():
    @register_task(name="async_fails", retries=1)
    async def fails():
        await asyncio.sleep(0)
        raise LookupError("not there")

    fails.queue()
    run_worker_here()
    first, retry = TaskExec.objects.order_by("id")
    assert (first.state, retry.state, retry.attempt) == (States.FAILED, States.FAILED, 2)
    assert "LookupError: not there" in first.error and "Traceback" in first.error


def test_calling_an_async_task_directly_gives_a_coroutine():
    @register_task(name="async_direct")
    async def direct(x):
        return 2 * x

    assert asyncio.run(direct(21)) == 42
    assert TaskExec.objects.count() == 0


def test_async_tasks_in_a_worker_process_and_its_time_limited_child(workers):
    tasks_registry["async_record"].queue("plain")
    tasks_registry["async_record_limited"].queue("limited")
    done = workers.run("--until_done", "--threads", "2")
    assert done.returncode == 0, done.stderr
    assert set(TaskExec.objects.values_list("state", flat=True)) == {States.SUCCEEDED}
    records = {r.key: r.pid for r in Record.objects.all()}
    assert set(records) == {"plain", "limited"}
    worker_pid = WorkerStatus.objects.get().pid
    assert records["plain"] == worker_pid and records["limited"] != worker_pid  # the child ran it
