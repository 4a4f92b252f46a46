"""Schedules for worker subprocesses; ``TOOSIMPLEQ_TEST_SCHEDULES`` (comma-separated) picks the groups."""

import os

from django_toosimple_q.decorators import register_task, schedule_task

from .models import Record

GROUPS = set(os.environ.get("TOOSIMPLEQ_TEST_SCHEDULES", "").split(","))


@register_task(name="record_occurrence")
def record_occurrence(key, at):
    Record.objects.create(key=f"{key}|{at.isoformat()}", pid=os.getpid())
    return key


if "every_second" in GROUPS:
    schedule_task(name="every_second", cron="* * * * * *", args=["every_second"], catch_up=True, datetime_kwarg="at")(
        record_occurrence
    )

if "every_2s" in GROUPS:
    schedule_task(name="every_2s", cron="* * * * * */2", args=["every_2s"], datetime_kwarg="at")(record_occurrence)
