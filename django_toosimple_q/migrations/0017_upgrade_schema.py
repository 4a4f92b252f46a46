"""From the 1.x tables to today's columns (the pickled values are converted by 0018).

A database holding only some of 1.x's migrations (a release before 1.2.1) is refused with a message
saying to upgrade to 1.2.1 first: this one only knows the tables 1.2.1 left. Names are limited to 255
characters now: a longer task or schedule name stops the upgrade with a message saying which rows to
fix (their names come from your code); a worker label is history only and is shortened.
"""

import django.utils.timezone
from django.core.management.base import CommandError
from django.db import migrations, models
from django.db.models.functions import Length

import django_toosimple_q.models

MAX = 255


def check_legacy_state(apps, schema_editor):
    try:
        apps.get_model("toosimpleq", "TaskExec")
    except LookupError:
        partial_history(schema_editor)
    check_name_lengths(apps, schema_editor)


def partial_history(schema_editor):
    """Django skips 0001 when only some of the 1.x migrations it replaces are applied: say what to do."""
    from django.db.migrations.recorder import MigrationRecorder

    applied = sorted(
        name for app, name in MigrationRecorder(schema_editor.connection).applied_migrations() if app == "toosimpleq"
    )
    raise CommandError(
        "Cannot upgrade from this django-toosimple-q 1.x database: its last toosimpleq migration is "
        f"{applied[-1] if applied else 'none'!r}, while this version continues from 1.2.1's last one, "
        "'0016_alter_scheduleexec_options_alter_taskexec_options'. Upgrade to 1.2.1 first "
        "(pip install django-toosimple-q==1.2.1, then manage.py migrate toosimpleq), then install this "
        "version and run migrate again."
    )


def check_name_lengths(apps, schema_editor):
    db = schema_editor.connection.alias
    TaskExec = apps.get_model("toosimpleq", "TaskExec")
    ScheduleExec = apps.get_model("toosimpleq", "ScheduleExec")
    WorkerStatus = apps.get_model("toosimpleq", "WorkerStatus")
    problems = []
    long_tasks = TaskExec.objects.using(db).annotate(n=Length("task_name")).filter(n__gt=MAX)
    for name in long_tasks.values_list("task_name", flat=True).distinct()[:10]:
        problems.append(f"task executions named {name[:60]!r}... ({len(name)} characters)")
    long_schedules = ScheduleExec.objects.using(db).annotate(n=Length("name")).filter(n__gt=MAX)
    for name in long_schedules.values_list("name", flat=True)[:10]:
        problems.append(f"the schedule {name[:60]!r}... ({len(name)} characters)")
    if problems:
        raise CommandError(
            f"Cannot upgrade from django-toosimple-q 1.x: names are limited to {MAX} characters now, and "
            f"the database has {'; '.join(problems)}. Give these tasks/schedules shorter names "
            "(@register_task(name=...), @schedule_task(name=...)) and update or delete their rows "
            "in the toosimpleq_taskexec / toosimpleq_scheduleexec tables, then run migrate again."
        )
    for worker in WorkerStatus.objects.using(db).annotate(n=Length("label")).filter(n__gt=MAX):
        worker.label = worker.label[: MAX - 1] + "…"
        worker.save(update_fields=["label"])


def restore_json_checks(apps, schema_editor):
    """Going back to 1.x on MariaDB: its JSON columns carry a json_valid() check, which MariaDB adds
    when a table is created with them but not when a column is altered back to JSON."""
    if schema_editor.connection.vendor == "mysql" and schema_editor.connection.mysql_is_mariadb:
        for column in ("included_queues", "excluded_queues"):
            schema_editor.execute(
                f"ALTER TABLE toosimpleq_workerstatus MODIFY {column} longtext CHARACTER SET utf8mb4 "
                f"COLLATE utf8mb4_bin NOT NULL CHECK (json_valid({column}))"
            )


def drop_legacy_like_index(apps, schema_editor):
    # PostgreSQL: the pattern index 1.x made for the schedule name while its table was still called
    # toosimpleq_schedule; Django looks for it under today's table name, so it would be left behind.
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute('DROP INDEX IF EXISTS "toosimpleq_schedule_name_476ec92a_like"')


class Migration(migrations.Migration):
    dependencies = [("toosimpleq", "0001_squashed_0016_legacy_1x")]

    operations = [
        migrations.RunPython(check_legacy_state, migrations.RunPython.noop),
        # -- workers --------------------------------------------------------------------------------
        # One row per worker run now: the label is no longer unique (dropping the index first also
        # lifts MariaDB's long-key hash index before the column shrinks).
        migrations.AlterField(
            model_name="workerstatus",
            name="label",
            field=models.CharField(max_length=1024, verbose_name="label"),
        ),
        migrations.AlterField(
            model_name="workerstatus",
            name="label",
            field=models.CharField(max_length=MAX, verbose_name="label"),
        ),
        migrations.RunPython(migrations.RunPython.noop, restore_json_checks, atomic=False),
        migrations.RenameField(model_name="workerstatus", old_name="included_queues", new_name="queues"),
        migrations.AlterField(
            model_name="workerstatus",
            name="queues",
            field=django_toosimple_q.models.TypedJSONField(
                default=list, help_text="Empty means every queue.", verbose_name="queues"
            ),
        ),
        migrations.AlterField(
            model_name="workerstatus",
            name="excluded_queues",
            field=django_toosimple_q.models.TypedJSONField(default=list, verbose_name="excluded queues"),
        ),
        # An interval (PostgreSQL) or microseconds (others) in 1.x; seconds now, copied over by 0018.
        migrations.RenameField(model_name="workerstatus", old_name="timeout", new_name="legacy_timeout"),
        migrations.AddField(
            model_name="workerstatus",
            name="timeout",
            field=models.FloatField(default=0, verbose_name="timeout (seconds)"),
            preserve_default=False,
        ),
        migrations.RenameField(model_name="workerstatus", old_name="last_tick", new_name="last_seen"),
        migrations.AlterField(
            model_name="workerstatus",
            name="last_seen",
            field=models.DateTimeField(default=django.utils.timezone.now, verbose_name="last heartbeat"),
        ),
        migrations.AlterField(
            model_name="workerstatus",
            name="exit_log",
            field=models.TextField(blank=True, default="", verbose_name="exit log"),
        ),
        migrations.AddField(
            model_name="workerstatus",
            name="host",
            field=models.CharField(blank=True, default="", max_length=MAX, verbose_name="host"),
        ),
        migrations.AddField(
            model_name="workerstatus",
            name="pid",
            field=models.IntegerField(blank=True, null=True, verbose_name="pid"),
        ),
        migrations.AddField(
            model_name="workerstatus",
            name="tasks",
            field=django_toosimple_q.models.TypedJSONField(default=list, verbose_name="registered tasks"),
        ),
        migrations.AddField(
            model_name="workerstatus",
            name="schedules",
            field=django_toosimple_q.models.TypedJSONField(default=list, verbose_name="registered schedules"),
        ),
        migrations.AddField(
            model_name="workerstatus",
            name="exit_signal",
            field=models.IntegerField(blank=True, null=True, verbose_name="exit signal"),
        ),
        # -- schedules ------------------------------------------------------------------------------
        migrations.RunPython(drop_legacy_like_index, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="scheduleexec",
            name="name",
            field=models.CharField(max_length=1024, verbose_name="name"),
        ),
        migrations.AlterField(
            model_name="scheduleexec",
            name="name",
            field=models.CharField(max_length=MAX, unique=True, verbose_name="name"),
        ),
        # -- task executions ------------------------------------------------------------------------
        migrations.AlterField(
            model_name="taskexec",
            name="task_name",
            field=models.CharField(max_length=MAX, verbose_name="task name"),
        ),
        migrations.AlterField(
            model_name="taskexec",
            name="retry_delay",
            field=models.FloatField(default=0, verbose_name="retry delay (seconds)"),
        ),
        # Filled from the registered task by 0018 (1.x read them from the registry at claim time).
        migrations.AddField(
            model_name="taskexec",
            name="queue",
            field=models.CharField(default="default", max_length=MAX, verbose_name="queue"),
        ),
        migrations.AddField(
            model_name="taskexec",
            name="priority",
            field=models.IntegerField(default=0, help_text="Higher runs first.", verbose_name="priority"),
        ),
        migrations.AddField(
            model_name="taskexec",
            name="output",
            field=models.TextField(blank=True, default="", help_text="What the task printed.", verbose_name="output"),
        ),
        migrations.AddField(
            model_name="taskexec",
            name="attempt",
            field=models.IntegerField(
                default=1,
                help_text="1 for the first execution of a call, +1 per replacement.",
                verbose_name="attempt",
            ),
        ),
        migrations.AddField(
            model_name="taskexec",
            name="unique_key",
            field=models.CharField(blank=True, editable=False, max_length=64, null=True, unique=True),
        ),
    ]
