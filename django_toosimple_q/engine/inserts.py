"""Inserting executions: one path for one call and for many, with the merge of unique calls.

Rows are written by one INSERT statement per batch (``RETURNING`` the new ids) rather than through
``Model.save()``/``bulk_create()``, whose per-field preparation costs more than the insert itself;
arguments are encoded once, by the caller that checked them (``TaskExec.build(encoded=...)``).
"""

from __future__ import annotations

import datetime
import json
import operator
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar, cast

from django.db import IntegrityError, transaction
from django.utils import timezone

from .. import tracing
from ..models import TaskExec, TypedJSONField

States = TaskExec.States

#: Rows per INSERT statement (a VALUES row each: a parameter per column and row).
BATCH = 500
#: Rows per INSERT statement where a batch is sent as one array per column (PostgreSQL).
ARRAY_BATCH = 5000

T = TypeVar("T")


class Inserts:
    """Mixed into ``Engine``: uses its ``db``, ``connection``, ``objects`` and ``retrying``."""

    if TYPE_CHECKING:  # provided by Engine
        db: str
        connection: Any

        def objects(self) -> Any: ...
        def retrying(self, operation: Callable[[], T], attempts: int = 50) -> T: ...

    #: PostgreSQL inserts a batch as one parameter per column (arrays unnested); elsewhere a VALUES row
    #: per execution.
    insert_as_arrays = False
    #: How to insert and skip rows that would break the unique index (``None``: not supported).
    insert_ignoring_conflicts: str | None = "INSERT {rest} ON CONFLICT DO NOTHING"

    def insert(self, execution: TaskExec) -> TaskExec:
        """Insert one execution, or merge it into the identical unique call already waiting (see
        ``insert_many``); returns the execution that will run."""
        return self.insert_many([execution])[0]

    def insert_many(self, executions: Sequence[TaskExec]) -> list[TaskExec]:
        """Insert new executions and return, for each, the execution that will run it: itself (now
        saved), or for a unique call (``unique_key`` set) the execution of the identical call already
        waiting, moved to the earlier due time if this one is due sooner. The unique index arbitrates
        concurrent inserts: a check-then-insert would race.

        With OpenTelemetry (``tracing.ENABLED``), new calls are inserted inside a PRODUCER span whose
        context they store (see ``tracing``)."""
        if not executions:
            return []
        if tracing.ENABLED:
            with tracing.queuing(executions) as span:
                saved = self._insert_many(executions)
                tracing.queued(span, saved)
                return saved
        return self._insert_many(executions)

    def _insert_many(self, executions: Sequence[TaskExec]) -> list[TaskExec]:
        plain = [e for e in executions if e.unique_key is None]
        unique = [e for e in executions if e.unique_key is not None]

        def transact() -> None:
            if not unique and len(plain) <= self._batch_size():
                # One statement is atomic by itself: no BEGIN/COMMIT round trips (``queue()``).
                self._insert_rows(plain)
                return
            with transaction.atomic(using=self.db):
                self._insert_rows(plain)
                if unique:
                    self._insert_unique(unique)

        for execution in plain:
            execution.pk = None  # a retried transaction inserts afresh
        self.retrying(transact)
        return [cast(TaskExec, getattr(e, "_merged_into", e)) for e in executions]

    # -- unique calls ------------------------------------------------------------------------------

    def _insert_unique(self, executions: list[TaskExec]) -> None:
        """Insert the earliest of each distinct call; the others, and those whose twin already waits,
        are merged into the waiting one (``_merged_into``)."""
        earliest: dict[str, TaskExec] = {}
        for execution in executions:
            execution.pk = None
            kept = earliest.get(execution.unique_key)
            if kept is None or execution.due < kept.due:
                earliest[execution.unique_key] = execution
        candidates = list(earliest.values())
        if self.insert_ignoring_conflicts is None:
            inserted = [e for e in candidates if self._insert_one_unique(e)]
        else:
            inserted = self._insert_rows(candidates, ignore_conflicts=True)
        waiting = {e.unique_key: e for e in inserted}
        missing = [key for key in earliest if key not in waiting]
        for start in range(0, len(missing), BATCH):
            keys = missing[start : start + BATCH]
            for row in self.objects().select_for_update().filter(unique_key__in=keys, state__in=States.waiting()):
                waiting[row.unique_key] = row
        for key, wanted in earliest.items():
            if key not in waiting:
                # Its twin was claimed between our insert and our read: the call is new again.
                self._insert_rows([wanted])
                waiting[key] = wanted
            elif waiting[key] is not wanted and wanted.due < waiting[key].due:
                row = waiting[key]
                self.objects().filter(pk=row.pk).update(**self.moved_earlier(row, wanted.due, timezone.now()))
        for execution in executions:
            kept = waiting[execution.unique_key]
            if kept is not execution:
                execution._merged_into = kept

    @staticmethod
    def moved_earlier(row: TaskExec, due: datetime.datetime, now: datetime.datetime) -> dict[str, Any]:
        """A waiting unique call absorbs one due sooner (``due``): set its due (and QUEUED if due now) on
        ``row``, and return the fields to write."""
        row.due = due
        if due <= now:
            row.state = States.QUEUED
        return {"due": row.due, "state": row.state}

    def _insert_one_unique(self, execution: TaskExec) -> bool:
        """Where the database cannot skip conflicting rows: one savepoint per row."""
        try:
            with transaction.atomic(using=self.db):
                self._insert_rows([execution])
            return True
        except IntegrityError:
            execution.pk = None
            return False

    # -- the statement -----------------------------------------------------------------------------

    def _insert_rows(self, executions: list[TaskExec], ignore_conflicts: bool = False) -> list[TaskExec]:
        """INSERT the executions (in batches), set their ids and return those inserted (all of them,
        unless ``ignore_conflicts`` skipped rows that would break the unique index)."""
        inserted: list[TaskExec] = []
        size = self._batch_size()
        for start in range(0, len(executions), size):
            batch = executions[start : start + size]
            inserted += self._insert_batch(batch, ignore_conflicts)
        return inserted

    def _batch_size(self) -> int:
        return ARRAY_BATCH if self.insert_as_arrays else BATCH

    def _insert_batch(self, batch: list[TaskExec], ignore_conflicts: bool) -> list[TaskExec]:
        qn = self.connection.ops.quote_name
        columns = _insert_columns()
        values = self._rows(batch, columns)
        names = ", ".join(qn(field.column) for field in columns)
        table = qn(TaskExec._meta.db_table)
        returning = f" RETURNING {qn('id')}" + (f", {qn('unique_key')}" if ignore_conflicts else "")
        if self.insert_as_arrays and len(batch) > 1:
            rest, params = self._select_from_arrays(table, names, columns, values)
        else:
            row = "(" + ", ".join(["%s"] * len(columns)) + ")"
            rest = f"INTO {table} ({names}) VALUES " + ", ".join([row] * len(batch))
            params = [value for row_values in values for value in row_values]
        if ignore_conflicts:
            assert self.insert_ignoring_conflicts is not None  # callers check that the database has it
            sql = self.insert_ignoring_conflicts.format(rest=rest) + returning
        else:
            sql = f"INSERT {rest}" + returning
        with self.connection.cursor() as cursor:
            cursor.execute(sql, params)
            returned = cursor.fetchall()
        if not ignore_conflicts:
            # Rows come back in the order of the VALUES (PostgreSQL, SQLite and MariaDB all do so for a
            # plain INSERT; Django's bulk_create relies on it too).
            for execution, (pk,) in zip(batch, returned):
                _saved(execution, pk, self.db)
            return batch
        by_key = {execution.unique_key: execution for execution in batch}
        inserted = []
        for pk, key in returned:
            _saved(by_key[key], pk, self.db)
            inserted.append(by_key[key])
        return inserted

    def _select_from_arrays(
        self, table: str, names: str, columns: list[Any], values: list[list[Any]]
    ) -> tuple[str, list[Any]]:
        """``INTO table (...) SELECT ...`` for a batch: a column whose value is the same on every row
        (the task, queue, due... of a ``queue_many()``) is one parameter, the others one JSON array
        of text each, read side by side by ``ROWS FROM (json_array_elements_text(...), ...)`` (rows
        come out in the arrays' order). One JSON text per column costs far less to send than a
        PostgreSQL array, whose every element the driver quotes."""
        selected: list[str] = []
        scalars: list[Any] = []
        arrays: list[Any] = []
        for field, column in zip(columns, zip(*values)):
            db_type = field.db_type(self.connection)
            first = column[0]
            if all(value == first and type(value) is type(first) for value in column):
                selected.append(f"%s::{db_type}")
                scalars.append(first)
            else:
                selected.append(f"u.c{len(arrays)}::{db_type}")
                arrays.append(JSON_TEXT.encode([_as_json_text(value) for value in column]))
        if arrays:
            functions = ", ".join(["json_array_elements_text(%s::json)"] * len(arrays))
            source = f"ROWS FROM ({functions}) AS u({', '.join(f'c{i}' for i in range(len(arrays)))})"
        else:  # identical rows
            source, arrays = "generate_series(1, %s)", [len(values)]
        # Parameters in the order of the placeholders: the SELECT list, then the FROM.
        return f"INTO {table} ({names}) SELECT {', '.join(selected)} FROM {source}", [*scalars, *arrays]

    def _rows(self, batch: list[TaskExec], columns: list[Any]) -> list[list[Any]]:
        """The values to write, per execution and column: arguments and results as their stored text
        (the text ``check_call`` encoded, when known), datetimes as the database takes them."""
        connection = self.connection
        read = operator.itemgetter(*(field.attname for field in columns))
        encoded_columns = [(i, f) for i, f in enumerate(columns) if isinstance(f, TypedJSONField)]
        other_columns = [(i, f) for i, f in enumerate(columns) if not isinstance(f, TypedJSONField)]
        prepared: dict[tuple[int, datetime.datetime], Any] = {}  # a batch's executions share datetimes
        rows = []
        for execution in batch:
            fields = execution.__dict__
            row = list(read(fields))
            encoded = fields.get("_encoded") or {}
            for index, field in encoded_columns:
                row[index] = encoded.get(field.attname) or field.get_prep_value(row[index])
            for index, field in other_columns:
                value = row[index]
                if isinstance(value, datetime.datetime):
                    key = (index, value)
                    if key not in prepared:
                        prepared[key] = field.get_db_prep_value(value, connection)
                    row[index] = prepared[key]
            rows.append(row)
        return rows


#: One JSON text per column of a batch (inserts here, outcomes in postgresql.py).
JSON_TEXT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _as_json_text(value: Any) -> Any:
    """A column value as JSON whose text form PostgreSQL casts back to the column's type."""
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return value


def _saved(execution: TaskExec, pk: int, db: str) -> None:
    execution.pk = pk
    execution._state.adding = False
    execution._state.db = db


_COLUMNS: list[Any] = []


def _insert_columns() -> list[Any]:
    if not _COLUMNS:
        _COLUMNS.extend(field for field in TaskExec._meta.concrete_fields if not field.primary_key)
    return _COLUMNS

