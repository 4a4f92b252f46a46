"""``WorkerStatus.receives_notifications``: whether a worker's listener proves that notifications
arrive (otherwise it polls every tick).

On PostgreSQL, the notification of a row that became QUEUED in a queue whose name starts with
"sleeping " or "queued " now reads "queued <queue>": "sleeping <queue>" alone was ambiguous (an
execution inserted SLEEPING in another queue). Other payloads are unchanged, so workers of the
previous version keep understanding them.
"""

from django.db import migrations, models

FUNCTION = """
CREATE OR REPLACE FUNCTION toosimpleq_notify_queued() RETURNS trigger AS $$
BEGIN
    IF NEW.state = 'SLEEPING' THEN
        PERFORM pg_notify('toosimpleq', 'sleeping ' || NEW.queue);
    ELSIF {ambiguous} THEN
        PERFORM pg_notify('toosimpleq', 'queued ' || NEW.queue);
    ELSE
        PERFORM pg_notify('toosimpleq', NEW.queue);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;
"""
AMBIGUOUS = "left(NEW.queue, 9) = 'sleeping ' OR left(NEW.queue, 7) = 'queued '"


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTION.format(ambiguous=AMBIGUOUS))


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTION.format(ambiguous="false"))


class Migration(migrations.Migration):
    dependencies = [
        ("toosimpleq", "0023_workerstatus_verbose_names"),
    ]

    operations = [
        migrations.AddField(
            model_name="workerstatus",
            name="receives_notifications",
            field=models.BooleanField(
                default=False,
                help_text="True while the worker's LISTEN connection proves it receives notifications (new work "
                "starts at once); False: the worker polls every tick.",
                verbose_name="receives notifications",
            ),
        ),
        migrations.RunPython(forwards, backwards),
    ]
