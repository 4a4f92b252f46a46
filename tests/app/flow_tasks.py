"""Tasks with flow limits (tests/test_flow_control.py). Registered only where imported: by that test
module, and by worker processes started with TOOSIMPLEQ_TEST_FLOW=1 (see tasks.py), so that the other
tests' workers keep their unlimited claims."""

import os
import time

from django_toosimple_q.decorators import register_task

from .models import FlowRun


def run(task: str, key: str, seconds: float) -> str:
    row = FlowRun.objects.create(task=task, key=key, pid=os.getpid(), start=time.time())
    time.sleep(seconds)
    FlowRun.objects.filter(pk=row.pk).update(end=time.time())
    return key


@register_task(name="flow_queued", queue="flow_one")
def flow_queued(key, seconds=0.05):
    """In queue ``flow_one`` (concurrency 2 in TOOSIMPLEQ_QUEUES under TOOSIMPLEQ_TEST_FLOW)."""
    return run("flow_queued", key, seconds)


@register_task(name="flow_keyed", concurrency=2, concurrency_key="customer")
def flow_keyed(customer, seconds=0.05):
    return run("flow_keyed", customer, seconds)


@register_task(name="flow_task_limited", concurrency=3)
def flow_task_limited(key, seconds=0.05):
    return run("flow_task_limited", key, seconds)


@register_task(name="flow_rated", queue="flow_rate")
def flow_rated(key):
    """In queue ``flow_rate`` (20/s in TOOSIMPLEQ_QUEUES under TOOSIMPLEQ_TEST_FLOW)."""
    return run("flow_rated", key, 0)


@register_task(name="flow_key_rated", rate_limit="4/s", concurrency_key=lambda customer, **rest: customer.upper())
def flow_key_rated(customer):
    return run("flow_key_rated", customer, 0)


@register_task(name="flow_plain", queue="flow_free")
def flow_plain(key, seconds=0.05):
    """No limit: keeps flowing next to the limited ones."""
    return run("flow_plain", key, seconds)


@register_task(name="flow_pausable", queue="flow_pause")
def flow_pausable(key, seconds=0.02):
    return run("flow_pausable", key, seconds)


@register_task(name="flow_kill", queue="flow_kill")
def flow_kill(key):
    """Sleeps long in a worker started with FLOW_SLOW=1 (to be killed while running), briefly elsewhere."""
    return run("flow_kill", key, 60 if os.environ.get("FLOW_SLOW") else 0.01)
