"""Converting the tables django-toosimple-q 1.x left: each execution row, then the whole table in
batches (used by the upgrade migrations 0018; the values themselves are read by ``legacy``)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from . import serialization
from .legacy import KEPT_PREFIX, LegacyValueError, convert, repickle

#: Starts every note the upgrade writes into an execution's ``error``.
NOTE_PREFIX = "[upgrade from django-toosimple-q 1.x]"


# -- one execution row ----------------------------------------------------------------------------


@dataclass
class LegacyExecution:
    """The columns of one 1.x ``toosimpleq_taskexec`` row that the upgrade reads."""

    id: int
    task_name: str
    state: str
    args: str
    kwargs: str
    result: str | None
    stdout: str
    stderr: str
    error: str | None
    result_preview: str | None


@dataclass
class Converted:
    """What the upgrade writes back into that row."""

    args: str
    kwargs: str
    result: str | None
    output: str
    state: str
    error: str | None
    invalid: bool = False
    notes: list[str] = field(default_factory=list)


#: 1.x states in which an execution still waits to run (it can become INVALID).
WAITING = ("SLEEPING", "QUEUED")
_LABELS = {"args": "positional arguments", "kwargs": "keyword arguments", "result": "result"}


def convert_execution(row: LegacyExecution) -> Converted:
    """Typed JSON for the pickled columns, stdout and stderr joined into ``output``; a value that
    cannot be converted is kept (``pickle:...``) with a note in ``error``, and a waiting execution
    holding one becomes INVALID since it could never run."""
    values: dict[str, str | None] = {}
    notes: list[str] = []
    for column in ("args", "kwargs", "result"):
        raw = getattr(row, column)
        try:
            values[column] = convert(raw, column)
        except LegacyValueError as exc:
            values[column] = KEPT_PREFIX + raw
            note = f"{NOTE_PREFIX} The {_LABELS[column]} could not be converted: {exc}."
            if column == "result" and row.result_preview:
                note += f" 1.x showed it as: {row.result_preview}"
            notes.append(note)
    invalid = bool(notes) and row.state in WAITING
    error = row.error
    if notes:
        if invalid:
            notes.append(f"{NOTE_PREFIX} This execution was {row.state} and cannot run: queue the call again.")
        error = "\n".join(([error.rstrip("\n")] if error else []) + notes)
    return Converted(
        args=values["args"] or "[]",
        kwargs=values["kwargs"] or "{}",
        result=values["result"],
        output=join_output(row.stdout, row.stderr),
        state="INVALID" if invalid else row.state,
        error=error,
        invalid=invalid,
        notes=notes,
    )


def join_output(stdout: str | None, stderr: str | None) -> str:
    """1.x kept stdout and stderr apart; ours is one ``output``: stdout, then stderr on its own line."""
    stdout, stderr = stdout or "", stderr or ""
    if stdout and stderr and not stdout.endswith("\n"):
        stdout += "\n"
    return stdout + stderr


# -- the whole table, in batches --------------------------------------------------------------------

TABLE = "toosimpleq_taskexec"
#: Rows read and written per round trip: big enough to amortise it, small enough to keep memory flat.
BATCH = 2000
#: Called with a task name; gives (queue, priority, unique) of the registered task, or None if unknown.
TaskLookup = Callable[[str], "tuple[str, int, bool] | None"]


def _batches(cursor: Any, select: str, batch: int) -> Iterator[list[tuple]]:
    """Rows of ``select`` (which takes the last id seen and a limit) in id order, ``batch`` at a time.
    Keyset pagination: each batch costs the same however far into a large table it is."""
    last_id = 0
    while True:
        cursor.execute(select, [last_id, batch])
        rows = cursor.fetchall()
        if not rows:
            return
        yield rows
        last_id = rows[-1][0]


@dataclass
class UpgradeReport:
    """Counts printed by the upgrade migration."""

    executions: int = 0
    converted: int = 0
    invalid: int = 0
    kept: int = 0
    unique_keys: int = 0
    unique_twins: int = 0

    def lines(self) -> list[str]:
        lines = [
            f"{self.executions} execution(s) read, {self.converted} converted to typed JSON, "
            f"{self.invalid} waiting one(s) made INVALID, {self.kept} finished one(s) kept with a value "
            "that could not be converted (see their error)"
        ]
        if self.unique_keys or self.unique_twins:
            lines.append(
                f"{self.unique_keys} waiting execution(s) of unique tasks given their unique key; "
                f"{self.unique_twins} identical waiting twin(s) left without one (they still run)"
            )
        return lines


def upgrade_executions(connection: Any, lookup: TaskLookup, now: datetime.datetime, batch: int = BATCH) -> UpgradeReport:
    """Convert every 1.x row of ``toosimpleq_taskexec`` (see ``convert_execution``) and fill the
    columns 1.x did not have: ``queue`` and ``priority`` from the registered task (``lookup``),
    ``attempt`` along ``replaced_by`` chains, and ``unique_key`` for waiting executions of unique
    tasks (so that queuing the same call again merges into them)."""
    quote = connection.ops.quote_name
    select = (
        f"SELECT id, task_name, state, args, kwargs, result, stdout, stderr, error, result_preview, replaced_by_id "
        f"FROM {quote(TABLE)} WHERE id > %s ORDER BY id LIMIT %s"
    )
    finished_now = connection.ops.adapt_datetimefield_value(now)
    report = UpgradeReport()
    keys: set[str] = set()
    # Replacements come after what they replace (greater ids): the attempt number flows forward.
    next_attempt: dict[int, int] = {}
    with connection.cursor() as cursor:
        for rows in _batches(cursor, select, batch):
            updates = []
            for row in rows:
                legacy = LegacyExecution(*row[:10])
                replaced_by = row[10]
                converted = convert_execution(legacy)
                queue, priority, unique = lookup(legacy.task_name) or ("default", 0, False)
                unique_key = None
                if unique and converted.state in WAITING:
                    key = serialization.call_fingerprint(
                        legacy.task_name, serialization.loads(converted.args), serialization.loads(converted.kwargs)
                    )
                    if key in keys:
                        report.unique_twins += 1
                    else:
                        keys.add(key)
                        unique_key = key
                attempt = next_attempt.pop(legacy.id, 1)
                if replaced_by is not None and replaced_by > legacy.id:
                    next_attempt[replaced_by] = attempt + 1
                report.executions += 1
                if converted.invalid:
                    report.invalid += 1
                elif converted.notes:
                    report.kept += 1
                else:
                    report.converted += 1
                updates.append(
                    (
                        converted.args,
                        converted.kwargs,
                        converted.result,
                        converted.output,
                        converted.state,
                        converted.error,
                        queue,
                        priority,
                        attempt,
                        unique_key,
                        finished_now if converted.invalid else None,
                        legacy.id,
                    )
                )
            _write(cursor, connection, updates)
    report.unique_keys = len(keys)
    return report


#: What ``upgrade_executions`` writes to each row, in the order of its update tuples (then the id).
WRITTEN = ("args", "kwargs", "result", "output", "state", "error", "queue", "priority", "attempt", "unique_key", "finished")
#: PostgreSQL types of those columns, for the arrays of a batch (text where not listed).
_PG_TYPES = {"priority": "integer", "attempt": "integer", "finished": "timestamptz", "id": "bigint"}


def _write(cursor: Any, connection: Any, updates: list[tuple]) -> None:
    """One batch of rows: on PostgreSQL one UPDATE joined to the batch passed as one array per column
    (a dozen parameters instead of a statement per row); elsewhere one UPDATE per row through
    executemany (SQLite runs it in process; MariaDB has no UPDATE ... FROM)."""
    quote = connection.ops.quote_name
    table = quote(TABLE)
    if connection.vendor != "postgresql":
        assign = [f"{quote(name)} = %s" for name in WRITTEN if name != "finished"]
        assign.append(f"{quote('finished')} = COALESCE(%s, {quote('finished')})")
        cursor.executemany(f"UPDATE {table} SET {', '.join(assign)} WHERE {quote('id')} = %s", updates)
        return
    columns = (*WRITTEN, "id")
    arrays = ", ".join(f"%s::{_PG_TYPES.get(name, 'text')}[]" for name in columns)
    assign = [f"{quote(name)} = v.{quote(name)}" for name in WRITTEN if name != "finished"]
    assign.append(f"{quote('finished')} = COALESCE(v.{quote('finished')}, {table}.{quote('finished')})")
    cursor.execute(
        f"UPDATE {table} SET {', '.join(assign)} FROM unnest({arrays}) AS v({', '.join(quote(n) for n in columns)}) "
        f"WHERE {table}.{quote('id')} = v.{quote('id')}",
        [list(column) for column in zip(*updates)],
    )


def downgrade_executions(connection: Any, batch: int = BATCH) -> int:
    """Back to 1.x columns: typed JSON -> base64 pickles, ``output`` -> ``stdout``; returns the count.

    Values the upgrade had kept are restored as they were. Executions the upgrade made INVALID stay
    INVALID, and 1.x ignores what it does not have (queue, priority, attempt, unique key).
    """
    quote = connection.ops.quote_name
    select = f"SELECT id, args, kwargs, result, output FROM {quote(TABLE)} WHERE id > %s ORDER BY id LIMIT %s"
    update = f"UPDATE {quote(TABLE)} SET args = %s, kwargs = %s, result = %s, stdout = %s, stderr = '' WHERE id = %s"
    count = 0
    with connection.cursor() as cursor:
        for rows in _batches(cursor, select, batch):
            updates = [
                (_back(args or "[]", "args"), _back(kwargs or "{}", "kwargs"), _back(result, "result"), output or "", pk)
                for pk, args, kwargs, result, output in rows
            ]
            cursor.executemany(update, updates)
            count += len(rows)
    return count


def _back(text: str | None, what: str) -> str | None:
    """``repickle`` for the downgrade; a value that is not typed JSON any more stays as it is."""
    try:
        return repickle(text, what)
    except Exception:  # noqa: BLE001 - e.g. a row edited by hand: keep it readable as it is
        return text
