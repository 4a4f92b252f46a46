"""Converts what 1.x stored: pickled arguments and results to typed JSON, in batches.

Pickles are decoded once, here, by the restricted unpickler of ``django_toosimple_q.legacy`` (never
arbitrary classes), row by row in ``django_toosimple_q.legacy_tables``. Executions get their
registered task's queue and priority, and waiting ones of ``unique=True`` tasks their unique key: the
registry is filled when apps are loaded, which ``manage.py migrate`` does, so run it with your tasks'
apps installed, as usual. The counts are printed. Going back (``migrate toosimpleq 0017``) pickles
the values again, as 1.x expects.

A new database has no rows: nothing happens.
"""

import datetime
import sys

from django.db import migrations
from django.utils import timezone

from django_toosimple_q import legacy_tables


def registered(name):
    from django_toosimple_q.registry import tasks_registry

    task = tasks_registry.get(name)
    return None if task is None else (task.queue_name, task.priority, task.unique)


def forwards(apps, schema_editor):
    connection = schema_editor.connection
    report = legacy_tables.upgrade_executions(connection, registered, timezone.now())
    WorkerStatus = apps.get_model("toosimpleq", "WorkerStatus")
    workers = 0
    for worker in WorkerStatus.objects.using(connection.alias).only("id", "legacy_timeout"):
        worker.timeout = worker.legacy_timeout.total_seconds()
        worker.save(update_fields=["timeout"])
        workers += 1
    if report.executions or workers:
        sys.stdout.write("\n  Upgrade from django-toosimple-q 1.x: ")
        sys.stdout.write("\n  ".join(report.lines() + [f"{workers} worker record(s) kept"]))
        sys.stdout.write("\n ")
        sys.stdout.flush()


def backwards(apps, schema_editor):
    connection = schema_editor.connection
    legacy_tables.downgrade_executions(connection)
    WorkerStatus = apps.get_model("toosimpleq", "WorkerStatus")
    for worker in WorkerStatus.objects.using(connection.alias).only("id", "timeout"):
        worker.legacy_timeout = datetime.timedelta(seconds=worker.timeout)
        worker.save(update_fields=["legacy_timeout"])


class Migration(migrations.Migration):
    dependencies = [("toosimpleq", "0017_upgrade_schema")]
    operations = [migrations.RunPython(forwards, backwards)]
