"""Tasks the test suite queues; autodiscovered like any app's tasks.py (also by worker subprocesses)."""

import asyncio
import os
import time

import django

from django_toosimple_q.decorators import register_task

from .models import Record

if django.VERSION >= (6, 0):
    # Django's own @task functions, run by our worker through django_toosimple_q.backends.QueueBackend.
    from . import django_tasks  # noqa: F401


@register_task(name="record")
def record(key):
    Record.objects.create(key=key, pid=os.getpid())
    return key


@register_task(name="record_with_retries", retries=5, retry_delay=0.1)
def record_with_retries(key):
    """Like ``record``, retried when it fails (e.g. its connection was dropped under it)."""
    Record.objects.create(key=key, pid=os.getpid())
    return key


@register_task(name="sleep_then_record")
def sleep_then_record(key, seconds):
    time.sleep(seconds)
    Record.objects.create(key=key, pid=os.getpid())
    return key


@register_task(name="add")
def add(a, b):
    return a + b


@register_task(name="fail", retries=0)
def fail(message="boom"):
    raise ValueError(message)


@register_task(name="echo")
def echo(value):
    print("echo:", value)
    return value


@register_task(name="sleepy_limited", timeout=1, retries=1, retry_delay=0)
def sleepy_limited(seconds):
    time.sleep(seconds)
    return "woke up"


@register_task(name="exits_process", timeout=30)
def exits_process():
    os._exit(9)


@register_task(name="async_record")
async def async_record(key):
    await asyncio.sleep(0.01)
    await Record.objects.acreate(key=key, pid=os.getpid())
    return key


@register_task(name="async_record_limited", timeout=30)
async def async_record_limited(key):
    """Time-limited, so it runs in the worker's child process."""
    await Record.objects.acreate(key=key, pid=os.getpid())
    return key


if os.environ.get("TOOSIMPLEQ_TEST_NEW_VERSION"):
    # Registered only by workers started as "the new version" in rolling-deploy tests.
    @register_task(name="only_in_new_version")
    def only_in_new_version():
        return "new"


@register_task(name="chaos_record", retries=10, retry_delay=0.2)
def chaos_record(key, milliseconds=0):
    """Records each run, then works a while (so that kills land while tasks run)."""
    Record.objects.create(key=key, pid=os.getpid())
    time.sleep(milliseconds / 1000)
    return key


# Worker subprocesses of tests/test_schedules.py get their schedules from tests/app/schedules.py,
# only when asked, so that other tests' workers never see them.
if os.environ.get("TOOSIMPLEQ_TEST_SCHEDULES"):
    from . import schedules  # noqa: E402, F401


# Tasks that try to stop the worker (tests/test_poison.py).
from . import poison_tasks  # noqa: E402, F401
