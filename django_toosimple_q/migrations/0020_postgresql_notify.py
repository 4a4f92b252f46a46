"""On PostgreSQL: notify the "toosimpleq" channel whenever a row becomes QUEUED (payload: the queue),
so that idle workers listening there claim it at once, or is inserted SLEEPING (payload: "sleeping "
and the queue), so that they re-read when to wake up. Notifications are sent at commit, so a
rolled-back enqueue wakes nobody. Other databases: nothing to do (workers poll)."""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION toosimpleq_notify_queued() RETURNS trigger AS $$
BEGIN
    IF NEW.state = 'SLEEPING' THEN
        PERFORM pg_notify('toosimpleq', 'sleeping ' || NEW.queue);
    ELSE
        PERFORM pg_notify('toosimpleq', NEW.queue);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER toosimpleq_notify_inserted AFTER INSERT ON toosimpleq_taskexec
    FOR EACH ROW WHEN (NEW.state IN ('QUEUED', 'SLEEPING')) EXECUTE FUNCTION toosimpleq_notify_queued();

CREATE TRIGGER toosimpleq_notify_updated AFTER UPDATE OF state ON toosimpleq_taskexec
    FOR EACH ROW WHEN (NEW.state = 'QUEUED' AND OLD.state <> 'QUEUED') EXECUTE FUNCTION toosimpleq_notify_queued();
"""

DROP = """
DROP TRIGGER IF EXISTS toosimpleq_notify_updated ON toosimpleq_taskexec;
DROP TRIGGER IF EXISTS toosimpleq_notify_inserted ON toosimpleq_taskexec;
DROP FUNCTION IF EXISTS toosimpleq_notify_queued();
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("toosimpleq", "0019_upgrade_finish")]
    operations = [migrations.RunPython(forwards, backwards)]
