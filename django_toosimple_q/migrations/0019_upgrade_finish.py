"""Drops the 1.x columns 0018 has read, and adds today's indexes (after the data: cheaper to build
once than to maintain during the conversion)."""

from django.db import migrations, models

import django_toosimple_q.models


class Migration(migrations.Migration):
    dependencies = [("toosimpleq", "0018_upgrade_data")]

    operations = [
        migrations.RemoveField(model_name="taskexec", name="stdout"),
        migrations.RemoveField(model_name="taskexec", name="stderr"),
        migrations.RemoveField(model_name="taskexec", name="result_preview"),
        migrations.RemoveField(model_name="workerstatus", name="legacy_timeout"),
        migrations.AddIndex(
            model_name="taskexec",
            index=django_toosimple_q.models.StateIndex(
                fields=["-priority", "due", "id"], name="toosimpleq_claim_idx", state="QUEUED"
            ),
        ),
        migrations.AddIndex(
            model_name="taskexec",
            index=django_toosimple_q.models.StateIndex(fields=["due"], name="toosimpleq_sleeping_idx", state="SLEEPING"),
        ),
        migrations.AddIndex(
            model_name="taskexec",
            index=django_toosimple_q.models.StateIndex(
                fields=["worker"], name="toosimpleq_processing_idx", state="PROCESSING"
            ),
        ),
        migrations.AddIndex(
            model_name="taskexec",
            index=models.Index(fields=["state", "finished"], name="toosimpleq_state_finished_idx"),
        ),
        migrations.AddIndex(
            model_name="taskexec",
            index=models.Index(fields=["created"], name="toosimpleq_created_idx"),
        ),
        migrations.AddIndex(
            model_name="workerstatus",
            index=models.Index(fields=["stopped", "last_seen"], name="toosimpleq_worker_live_idx"),
        ),
    ]
