"""Tasks the test suite queues; autodiscovered like any app's tasks.py (also by worker subprocesses)."""

import os
import time

from django_toosimple_q.decorators import register_task

from .models import Record


@register_task(name="record")
def record(key):
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


# Worker subprocesses of tests/test_schedules.py get their schedules from tests/app/schedules.py,
# only when asked, so that other tests' workers never see them.
if os.environ.get("TOOSIMPLEQ_TEST_SCHEDULES"):
    from . import schedules  # noqa: E402, F401
