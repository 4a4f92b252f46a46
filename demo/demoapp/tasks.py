"""Demo tasks: each one shows a feature. The worker imports this module by autodiscovery."""

import asyncio
import random
import time

import django

from django_toosimple_q.decorators import register_task, schedule_task


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


@register_task(timeout=2)
def slow_report(seconds=1):
    """A time limit: past 2 seconds the task is stopped for real (it runs in a child process that is
    killed) and the execution FAILS with TimeLimitExceeded."""
    time.sleep(seconds)
    return f"report built in {seconds}s"


@register_task()
async def fetch_feed(url):
    """An async task: each execution runs on an event loop of its own."""
    await asyncio.sleep(0.5)
    return f"fetched {url}"


@schedule_task(cron="* * * * * */30", run_on_creation=True)
@register_task()
def heartbeat():
    """A schedule with seconds (sixth field): queued every 30 seconds, and once when a worker first sees it."""
    return "still alive"


@schedule_task(cron="0 6 * * *", catch_up=True, datetime_kwarg="day", timezone="Europe/Paris")
@register_task()
def daily_digest(day):
    """A daily schedule, read in the Paris time zone, that catches up on missed days."""
    return f"digest for {day:%Y-%m-%d}" if day else "digest run by hand"


@schedule_task(cron="manual")
@register_task()
def rebuild_search_index():
    """A schedule that only runs on demand: press "Run now" on the admin's Schedules page."""
    return "index rebuilt"


if django.VERSION >= (6, 0):
    # Django's own tasks framework, on the same queue (see TASKS in demo/settings.py).
    from .django_tasks import send_newsletter  # noqa: F401
