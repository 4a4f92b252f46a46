"""The tables of django-toosimple-q 1.x (1.2.1), as its sixteen migrations left them.

It ``replaces`` those migrations, so a database upgraded from 1.x counts it as applied and only runs
what follows (0017 onwards converts the tables into today's); a new database creates the 1.x tables
here and converts them the same way, so both end with the same schema.

Attributes that do not reach the database (verbose names, choices, Python defaults, ``on_delete``,
related names, permissions) are already today's, so the later migrations only carry real changes.
The database columns are 1.x's, with one exception for new databases: the two unique names (schedule
name, worker label) are created 255 characters long, since MySQL refuses a unique index on a
1024-character column; 0017 brings both kinds of database to the same columns.
"""

import datetime

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

import django_toosimple_q.models

TASK_STATES = [
    ("SLEEPING", "Sleeping"),
    ("QUEUED", "Queued"),
    ("PROCESSING", "Processing"),
    ("SUCCEEDED", "Succeeded"),
    ("FAILED", "Failed"),
    ("INTERRUPTED", "Interrupted"),
    ("INVALID", "Invalid"),
    ("CANCELLED", "Cancelled"),
]


def legacy_models(unique_name_length):
    """CreateModel operations for the 1.x tables; the unique names get ``unique_name_length``."""
    return [
        migrations.CreateModel(
            name="WorkerStatus",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("label", models.CharField(max_length=unique_name_length, unique=True, verbose_name="label")),
                ("included_queues", models.JSONField(default=list)),
                ("excluded_queues", models.JSONField(default=list)),
                ("timeout", models.DurationField(default=datetime.timedelta(0))),
                ("last_tick", models.DateTimeField(default=django.utils.timezone.now)),
                ("started", models.DateTimeField(default=django.utils.timezone.now, verbose_name="started")),
                ("stopped", models.DateTimeField(blank=True, null=True, verbose_name="stopped")),
                ("exit_log", models.TextField(blank=True, null=True)),
                ("exit_code", models.IntegerField(blank=True, null=True, verbose_name="exit code")),
            ],
            options={"verbose_name": "worker status", "verbose_name_plural": "worker statuses"},
        ),
        migrations.CreateModel(
            name="TaskExec",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("task_name", models.CharField(max_length=1024, verbose_name="task name")),
                # Base64 pickles in 1.x; converted in place to typed JSON (same column type) by 0018.
                (
                    "args",
                    django_toosimple_q.models.TypedJSONField(default=list, verbose_name="positional arguments"),
                ),
                ("kwargs", django_toosimple_q.models.TypedJSONField(default=dict, verbose_name="keyword arguments")),
                ("created", models.DateTimeField(default=django.utils.timezone.now, verbose_name="created")),
                ("started", models.DateTimeField(blank=True, null=True, verbose_name="started")),
                ("finished", models.DateTimeField(blank=True, null=True, verbose_name="finished")),
                (
                    "state",
                    models.CharField(choices=TASK_STATES, default="QUEUED", max_length=32, verbose_name="state"),
                ),
                ("result", django_toosimple_q.models.TypedJSONField(blank=True, null=True, verbose_name="result")),
                ("stdout", models.TextField(blank=True, default="")),
                ("stderr", models.TextField(blank=True, default="")),
                ("due", models.DateTimeField(default=django.utils.timezone.now, verbose_name="due")),
                ("retries", models.IntegerField(default=0, verbose_name="retries left")),
                ("retry_delay", models.IntegerField(default=0)),
                (
                    "replaced_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="replaces",
                        to="toosimpleq.taskexec",
                        verbose_name="replaced by",
                    ),
                ),
                ("error", models.TextField(blank=True, null=True, verbose_name="error")),
                (
                    "worker",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="executions",
                        to="toosimpleq.workerstatus",
                        verbose_name="worker",
                    ),
                ),
                ("result_preview", models.CharField(blank=True, max_length=255, null=True)),
            ],
            options={
                "verbose_name": "task execution",
                "verbose_name_plural": "task executions",
                "permissions": [
                    ("requeue_taskexec", "Can requeue task executions"),
                    ("cancel_taskexec", "Can cancel waiting task executions"),
                ],
            },
        ),
        migrations.CreateModel(
            name="ScheduleExec",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("name", models.CharField(max_length=unique_name_length, unique=True, verbose_name="name")),
                (
                    "last_task",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to="toosimpleq.taskexec",
                        verbose_name="last task",
                    ),
                ),
                (
                    "state",
                    models.CharField(
                        choices=[("ACTIVE", "Active"), ("INVALID", "Invalid")],
                        default="ACTIVE",
                        max_length=32,
                        verbose_name="state",
                    ),
                ),
                ("last_due", models.DateTimeField(blank=True, null=True, verbose_name="last due")),
            ],
            options={
                "verbose_name": "schedule",
                "verbose_name_plural": "schedules",
                "permissions": [("force_run_scheduleexec", "Can run schedules now")],
            },
        ),
    ]


class Migration(migrations.Migration):
    initial = True

    replaces = [
        ("toosimpleq", "0001_initial"),
        ("toosimpleq", "0002_auto_20191101_1838"),
        ("toosimpleq", "0003_task_queue"),
        ("toosimpleq", "0004_auto_20200507_1339"),
        ("toosimpleq", "0005_auto_20210302_1748"),
        ("toosimpleq", "0006_task_replacement"),
        ("toosimpleq", "0007_schedule_datetime_kwarg"),
        ("toosimpleq", "0008_auto_20210902_2111"),
        ("toosimpleq", "0009_auto_20210902_2245"),
        ("toosimpleq", "0010_auto_20220324_0419"),
        ("toosimpleq", "0011_workerstatus"),
        ("toosimpleq", "0012_rename_last_run_scheduleexec_last_task"),
        ("toosimpleq", "0013_workerstatus_exit_code_workerstatus_exit_log"),
        ("toosimpleq", "0014_alter_workerstatus_exit_code"),
        ("toosimpleq", "0015_taskexec_result_preview"),
        ("toosimpleq", "0016_alter_scheduleexec_options_alter_taskexec_options"),
    ]

    dependencies = []

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=legacy_models(1024),
            database_operations=legacy_models(255),
        ),
    ]
