"""Lean indexes and vacuum settings for the executions' table (see docs/architecture.md, "Storage and
the claim").

Every state change of an execution writes a new row version, and every index gets an entry for it.
Two indexes held an entry for every row while only a few rows matter to them:

- ``unique_key`` (set only while a unique task's call waits): its unique constraint, and on
  PostgreSQL the ``varchar_pattern_ops`` index Django adds to it, become one partial unique index
  ``WHERE unique_key IS NOT NULL`` (``toosimpleq_unique_key_uniq``);
- ``replaced_by`` (set on retried, interrupted or requeued executions): its foreign-key index becomes
  ``toosimpleq_replaced_by_idx``, partial ``WHERE replaced_by_id IS NOT NULL``.

MariaDB has no partial indexes: there ``unique_key`` keeps a plain unique index, and ``replaced_by``
keeps the index InnoDB made for its foreign key (the two ``replaced_by`` operations change only
Django's state there: a plain index of our own would duplicate it, and going back to 1.x must find
the foreign key's index as 1.x made it).

On PostgreSQL, the table's autovacuum runs after 1,000 + 2% of its rows changed instead of 50 + 20%
(and analyzes after 2%): the claim's index walks over the entries of rows that left the queue until
a vacuum removes them, so a queue table with a large history must not wait for a fifth of it to be
dead.
"""

import django.db.models.deletion
from django.db import migrations, models

import django_toosimple_q.models

TABLE = "toosimpleq_taskexec"
STORAGE = {
    "autovacuum_vacuum_scale_factor": "0.02",
    "autovacuum_vacuum_threshold": "1000",
    "autovacuum_vacuum_insert_scale_factor": "0.02",
    "autovacuum_analyze_scale_factor": "0.02",
}


def storage_forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        settings = ", ".join(f"{name} = {value}" for name, value in STORAGE.items())
        schema_editor.execute(f"ALTER TABLE {TABLE} SET ({settings})")


def storage_backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE {TABLE} RESET ({', '.join(STORAGE)})")


class WherePartialIndexes(migrations.operations.base.Operation):
    """``operation`` on databases with partial indexes; elsewhere only Django's state changes."""

    reduces_to_sql = False

    def __init__(self, operation):
        self.operation = operation
        super().__init__()

    def deconstruct(self):
        return (self.__class__.__qualname__, [self.operation], {})

    def state_forwards(self, app_label, state):
        self.operation.state_forwards(app_label, state)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.features.supports_partial_indexes:
            self.operation.database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.features.supports_partial_indexes:
            self.operation.database_backwards(app_label, schema_editor, from_state, to_state)

    def describe(self):
        return f"{self.operation.describe()} (where the database has partial indexes)"


class Migration(migrations.Migration):
    dependencies = [
        ("toosimpleq", "0025_taskexec_trace_context_executiontotal"),
    ]

    operations = [
        WherePartialIndexes(
            migrations.AddIndex(
                model_name="taskexec",
                index=django_toosimple_q.models.SetIndex(field="replaced_by", name="toosimpleq_replaced_by_idx"),
            )
        ),
        WherePartialIndexes(
            migrations.AlterField(
                model_name="taskexec",
                name="replaced_by",
                field=models.ForeignKey(
                    blank=True,
                    db_index=False,
                    null=True,
                    on_delete=django.db.models.deletion.SET_NULL,
                    related_name="replaces",
                    to="toosimpleq.taskexec",
                    verbose_name="replaced by",
                ),
            )
        ),
        migrations.AlterField(
            model_name="taskexec",
            name="unique_key",
            field=models.CharField(blank=True, editable=False, max_length=64, null=True),
        ),
        migrations.AddConstraint(
            model_name="taskexec",
            constraint=django_toosimple_q.models.UniqueWhenSet(field="unique_key", name="toosimpleq_unique_key_uniq"),
        ),
        migrations.RunPython(storage_forwards, storage_backwards),
    ]
