"""Demo tasks: each one shows a feature. The worker imports this module by autodiscovery."""

import random
import time

from django_toosimple_q.decorators import register_task


@register_task()
def say_hello(name):
    """The simplest task: its return value is stored as the result."""
    print(f"Saying hello to {name}")
    return f"Hello {name} !"


@register_task(name="urgent", priority=10)
def urgent_task():
    """A higher priority runs first."""
    return "I jumped the queue"


@register_task(retries=3, retry_delay=2)
def flaky(threshold=0.5):
    """Fails randomly; each failure is retried after a delay that doubles (2 s, 4 s, 8 s)."""
    if random.random() < threshold:
        raise RuntimeError("Unlucky this time")
    return "Lucky!"


@register_task(unique=True)
def refresh_cache():
    """Queuing this again while one is waiting does nothing: there is only ever one waiting."""
    time.sleep(1)
    return "cache refreshed"


@register_task(queue="long_running")
def long_task(seconds=5):
    """Runs on the 'long_running' queue (a worker can include or exclude queues)."""
    time.sleep(seconds)
    return f"slept {seconds}s"
