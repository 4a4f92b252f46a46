"""Django ``@task`` functions (Django >= 6.0) for tests/test_django_tasks.py; imported by tasks.py,
so worker subprocesses know them."""

import asyncio
import os
import time

import django
from django.tasks import task

from .models import Record


class TaskBoom(Exception):
    pass


def plain_function():
    """Not a task here; tests wrap it with other backends."""
    return "plain"


@task
def dj_record(key):
    Record.objects.create(key=key, pid=os.getpid())
    return key


@task
def dj_add(a, b):
    return {"sum": a + b, "args": [a, b]}


@task
def dj_fail(message):
    raise TaskBoom(message)


@task
def dj_sleep(seconds):
    time.sleep(seconds)
    return seconds


@task(queue_name="special")
def dj_special():
    return "special"


@task(backend="retrying", takes_context=True)
def dj_flaky(context, key):
    """Fails on its first attempt; the retry comes from the backend's OPTIONS."""
    Record.objects.create(key=f"{key}:{context.attempt}", pid=os.getpid())
    if context.attempt == 1:
        raise RuntimeError("the first attempt fails")
    return {"attempt": context.attempt, "id": context.task_result.id, "workers": context.task_result.worker_ids}


@task
async def dj_async(key):
    await asyncio.sleep(0.01)
    await Record.objects.acreate(key=key, pid=os.getpid())
    print("async says", key)
    return key


@task(backend="limited")
def dj_limited(seconds):
    time.sleep(seconds)
    return seconds



if django.VERSION >= (6, 1):  # @task passes extra options to the task class since Django 6.1

    @task(retries=1, retry_delay=0)
    def dj_fail_retried(message):
        """Our own option on a Django task: retried once, overriding the backend's OPTIONS."""
        Record.objects.create(key=message, pid=os.getpid())
        raise TaskBoom(message)


@task(backend="retrying")
def dj_returns_object():
    """Returns what JSON cannot hold: the call fails, and is not retried (it did run)."""
    return object()
