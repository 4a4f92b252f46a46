"""On PostgreSQL: ``toosimpleq_ready``, one narrow row per QUEUED execution, kept by triggers; the
claim reads it instead of the executions' table (see docs/architecture.md, "Storage and the claim").

Why: a claimed execution leaves a dead entry at the head of the claim's index until a vacuum removes
it, and each claim walks over every one of them. In a narrow table of waiting rows only, the worker
can afford to vacuum every few thousand claims (``PostgreSQLEngine.vacuum_ready``), whatever the size
of the history; autovacuum alone (at most once a minute per database, or off) lets them pile up.

The triggers make the table follow every write to ``toosimpleq_taskexec`` (the engine's, a
migration's, one made by hand): a row becoming QUEUED (inserted, woken, released, requeued) gets a
ready row, a row leaving QUEUED (cancelled, invalidated) or deleted loses it, a QUEUED row whose
priority, due time, task or queue changes has its ready row changed, and a TRUNCATE of the executions
empties it. The claim (QUEUED -> PROCESSING) deletes the ready rows it takes in its own statement (a
trigger call per claimed row would cost more than the rest of the claim): it sets
``toosimpleq.claiming`` for its transaction, and the trigger leaves rows turning PROCESSING there to
it. Any other change to PROCESSING (a worker of the previous version claiming during a rolling
deploy) goes through the trigger. SQLite and MariaDB: nothing (their claim reads the executions' index).
"""

from django.db import migrations

CREATE = """
CREATE TABLE toosimpleq_ready (
    id bigint PRIMARY KEY,
    priority integer NOT NULL,
    due timestamp with time zone NOT NULL,
    task_name varchar(255) NOT NULL,
    queue varchar(255) NOT NULL
) WITH (vacuum_index_cleanup = on, autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000);

CREATE INDEX toosimpleq_ready_claim_idx ON toosimpleq_ready (priority DESC, due, id);

INSERT INTO toosimpleq_ready (id, priority, due, task_name, queue)
    SELECT id, priority, due, task_name, queue FROM toosimpleq_taskexec WHERE state = 'QUEUED';

CREATE FUNCTION toosimpleq_ready_sync() RETURNS trigger AS $$
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.state = 'QUEUED' AND (TG_OP = 'DELETE' OR NEW.state <> 'QUEUED') THEN
        DELETE FROM toosimpleq_ready WHERE id = OLD.id;
    ELSIF TG_OP <> 'DELETE' AND NEW.state = 'QUEUED' THEN
        INSERT INTO toosimpleq_ready (id, priority, due, task_name, queue)
            VALUES (NEW.id, NEW.priority, NEW.due, NEW.task_name, NEW.queue)
            ON CONFLICT (id) DO UPDATE SET priority = EXCLUDED.priority, due = EXCLUDED.due,
                task_name = EXCLUDED.task_name, queue = EXCLUDED.queue;
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

-- Inserts: once per statement, from its transition table (a queue_many() of 5,000 rows is one
-- INSERT ... SELECT here, not 5,000 trigger calls).
CREATE FUNCTION toosimpleq_ready_insert() RETURNS trigger AS $$
BEGIN
    INSERT INTO toosimpleq_ready (id, priority, due, task_name, queue)
        SELECT id, priority, due, task_name, queue FROM toosimpleq_inserted WHERE state = 'QUEUED'
        ON CONFLICT (id) DO UPDATE SET priority = EXCLUDED.priority, due = EXCLUDED.due,
            task_name = EXCLUDED.task_name, queue = EXCLUDED.queue;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE FUNCTION toosimpleq_ready_truncate() RETURNS trigger AS $$
BEGIN
    TRUNCATE toosimpleq_ready;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER toosimpleq_ready_inserted AFTER INSERT ON toosimpleq_taskexec
    REFERENCING NEW TABLE AS toosimpleq_inserted FOR EACH STATEMENT EXECUTE FUNCTION toosimpleq_ready_insert();

CREATE TRIGGER toosimpleq_ready_updated AFTER UPDATE OF state, priority, due, task_name, queue ON toosimpleq_taskexec
    FOR EACH ROW WHEN ((OLD.state = 'QUEUED' OR NEW.state = 'QUEUED')
        AND (NEW.state <> 'PROCESSING' OR current_setting('toosimpleq.claiming', true) IS DISTINCT FROM 'on')
        AND (OLD.state, OLD.priority, OLD.due, OLD.task_name, OLD.queue)
            IS DISTINCT FROM (NEW.state, NEW.priority, NEW.due, NEW.task_name, NEW.queue))
    EXECUTE FUNCTION toosimpleq_ready_sync();

CREATE TRIGGER toosimpleq_ready_deleted AFTER DELETE ON toosimpleq_taskexec
    FOR EACH ROW WHEN (OLD.state = 'QUEUED') EXECUTE FUNCTION toosimpleq_ready_sync();

CREATE TRIGGER toosimpleq_ready_truncated AFTER TRUNCATE ON toosimpleq_taskexec
    FOR EACH STATEMENT EXECUTE FUNCTION toosimpleq_ready_truncate();
"""

DROP = """
DROP TRIGGER IF EXISTS toosimpleq_ready_truncated ON toosimpleq_taskexec;
DROP TRIGGER IF EXISTS toosimpleq_ready_deleted ON toosimpleq_taskexec;
DROP TRIGGER IF EXISTS toosimpleq_ready_updated ON toosimpleq_taskexec;
DROP TRIGGER IF EXISTS toosimpleq_ready_inserted ON toosimpleq_taskexec;
DROP FUNCTION IF EXISTS toosimpleq_ready_truncate();
DROP FUNCTION IF EXISTS toosimpleq_ready_insert();
DROP FUNCTION IF EXISTS toosimpleq_ready_sync();
DROP TABLE IF EXISTS toosimpleq_ready;
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("toosimpleq", "0026_lean_indexes")]
    operations = [migrations.RunPython(forwards, backwards)]
