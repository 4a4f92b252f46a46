"""Reading what django-toosimple-q 1.x left in the database, once, during the upgrade migrations.

1.x stored arguments and results as base64-encoded pickles. Unpickling runs whatever callable the
data names, so these values are decoded here by a restricted unpickler that only admits the types
our typed JSON (``serialization``) can hold, and then stored as typed JSON; nothing else in the
library ever unpickles. A value it refuses is kept as it was (prefixed with ``pickle:``, so it reads
as undecodable, never as JSON) and its execution gets a note saying why.

Admitted: ``datetime`` (datetime, date, time, timedelta, timezone), ``zoneinfo.ZoneInfo`` and pytz
zones (turned into a fixed offset or a ``ZoneInfo``, without importing pytz), ``decimal.Decimal``,
``uuid.UUID``, ``set``, ``frozenset``, ``bytes``, ``bytearray``, ``collections.OrderedDict`` (read as
a dict) and Django's ``SafeString`` (read as a str), plus what the pickle protocol itself needs to
rebuild them. Refused: every other class or function (``os.system``, model instances, ``complex``...),
without calling it.
"""

from __future__ import annotations

import base64
import binascii
import collections
import datetime
import decimal
import io
import pickle
import uuid
import zoneinfo
from dataclasses import dataclass, field
from typing import Any, Callable

from . import serialization

#: Marks a stored value that the upgrade could not convert: the original base64 pickle follows.
KEPT_PREFIX = "pickle:"
#: Starts every note the upgrade writes into an execution's ``error``.
NOTE_PREFIX = "[upgrade from django-toosimple-q 1.x]"


class LegacyValueError(ValueError):
    """A 1.x value that cannot become typed JSON; the message says what it holds."""


# -- the restricted unpickler ---------------------------------------------------------------------


def _refuse(what: str) -> LegacyValueError:
    return LegacyValueError(f"it holds {what}, which typed JSON cannot store")


def _latin1(text: Any, encoding: Any = "latin1") -> bytes:
    # Protocols 0-2 write bytes as _codecs.encode(text, "latin1"); nothing else is accepted.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _refuse("a call of _codecs.encode other than the one pickle writes for bytes")
    return text.encode("latin-1")


def _bytes_of(args: tuple) -> bytes:
    """The arguments pickle gives ``bytes``/``bytearray``: (), (bytes,) or (str, "latin-1")."""
    if not args:
        return b""
    if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
        return bytes(args[0])
    if len(args) == 2:
        return _latin1(*args)
    # bytes(10**12) would allocate a terabyte: only the forms pickle writes are accepted.
    raise _refuse("a call of bytes()/bytearray() other than the ones pickle writes")


def _bytes(*args: Any) -> bytes:
    return _bytes_of(args)


def _bytearray(*args: Any) -> bytearray:
    return bytearray(_bytes_of(args))


class _SafeObject:
    """Stands for ``object`` as the base argument of ``copyreg._reconstructor``; never instantiated."""

    def __init__(self, *args: Any, **kwargs: Any):
        raise _refuse("a call of object()")


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    # copyreg._reconstructor: how protocols 0 and 1 rebuild a UUID (then BUILD calls __setstate__).
    if cls is uuid.UUID and base is _SafeObject and state is None:
        return uuid.UUID.__new__(uuid.UUID)
    raise _refuse(f"an object rebuilt by copyreg._reconstructor({cls!r}, {base!r})")


def _zone(key: Any, from_cache: Any = True) -> zoneinfo.ZoneInfo:
    # ZoneInfo._unpickle; ZoneInfo itself refuses keys that are paths (absolute, "..").
    if not isinstance(key, str):
        raise _refuse("a time zone whose name is not a string")
    try:
        return zoneinfo.ZoneInfo(key)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise _refuse(f"the unknown time zone {key!r}") from None


def _getattr(obj: Any, name: Any) -> Any:
    # Pickle reaches ZoneInfo._unpickle through getattr(ZoneInfo, "_unpickle"); nothing else.
    if obj is zoneinfo.ZoneInfo and name == "_unpickle":
        return _zone
    raise _refuse(f"getattr({obj!r}, {name!r})")


def _pytz_utc() -> datetime.tzinfo:
    return datetime.timezone.utc


def _pytz_zone(zone: Any, utcoffset: Any = None, dstoffset: Any = None, tzname: Any = None) -> datetime.tzinfo:
    """pytz's unpickler (Django < 4 with pytz): a localized pytz zone carries its exact offset, which
    keeps the instant; a bare one becomes the ZoneInfo of the same name. pytz is never imported."""
    if utcoffset is None:
        return datetime.timezone.utc if zone == "UTC" else _zone(zone)
    if not isinstance(utcoffset, int) or not -86400 < utcoffset < 86400:
        raise _refuse(f"a pytz offset of {utcoffset!r}")
    return datetime.timezone(datetime.timedelta(seconds=utcoffset))


_ADMITTED: dict[tuple[str, str], Any] = {
    ("datetime", "datetime"): datetime.datetime,
    ("datetime", "date"): datetime.date,
    ("datetime", "time"): datetime.time,
    ("datetime", "timedelta"): datetime.timedelta,
    ("datetime", "timezone"): datetime.timezone,
    ("decimal", "Decimal"): decimal.Decimal,
    ("uuid", "UUID"): uuid.UUID,
    ("zoneinfo", "ZoneInfo"): zoneinfo.ZoneInfo,
    ("zoneinfo", "ZoneInfo._unpickle"): _zone,
    ("zoneinfo._zoneinfo", "ZoneInfo"): zoneinfo.ZoneInfo,
    ("pytz", "_UTC"): _pytz_utc,
    ("pytz", "_p"): _pytz_zone,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytes"): _bytes,
    ("builtins", "bytearray"): _bytearray,
    ("builtins", "object"): _SafeObject,
    ("builtins", "getattr"): _getattr,
    ("_codecs", "encode"): _latin1,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("collections", "OrderedDict"): dict,
    ("django.utils.safestring", "SafeString"): str,
    ("django.utils.safestring", "SafeText"): str,
}
# Names written by Python 3 in protocols 0-2 for Python 2 compatibility.
_MODULE_ALIASES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only the values listed in ``_ADMITTED``; any other global is refused unresolved."""

    def find_class(self, module: str, name: str) -> Any:
        module = _MODULE_ALIASES.get(module, module)
        try:
            return _ADMITTED[(module, name)]
        except KeyError:
            raise _refuse(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _refuse("a persistent reference")


def unpickle(raw: str) -> Any:
    """The value of one 1.x column (base64 pickle text); ``LegacyValueError`` saying why not."""
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise LegacyValueError("it is not base64 text as 1.x wrote") from None
    try:
        return RestrictedUnpickler(io.BytesIO(data)).load()
    except LegacyValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - corrupt or hostile data: refuse, whatever it raises
        raise LegacyValueError(f"it is not a readable pickle ({type(exc).__name__}: {exc})") from None


def to_typed_json(value: Any, what: str) -> str:
    """``value`` as typed JSON text, checked to read back; ``LegacyValueError`` if it cannot."""
    try:
        text = serialization.dumps(value, what)
        serialization.loads(text)
    except serialization.UnstorableValue as exc:
        raise LegacyValueError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - e.g. a UUID whose state was forged
        raise LegacyValueError(f"it cannot be stored ({type(exc).__name__}: {exc})") from None
    return text


def convert(raw: str | None, what: str) -> str | None:
    """One 1.x column -> typed JSON text (None stays None); ``LegacyValueError`` if it cannot.

    ``what`` is ``args``, ``kwargs`` or ``result``: positional arguments become a list, keyword
    arguments must be a dict with str keys, and a result of None is stored as SQL NULL, as ours are.
    """
    if raw is None:
        return None
    value = unpickle(raw)
    if what == "args":
        if not isinstance(value, (tuple, list)):
            raise _refuse(f"a {type(value).__name__} where positional arguments (a tuple) were expected")
        value = list(value)
    elif what == "kwargs":
        if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
            raise _refuse(f"a {type(value).__name__} where keyword arguments (a dict) were expected")
    elif value is None:
        return None
    return to_typed_json(value, what)


def repickle(text: str | None, what: str) -> str | None:
    """The other way, for migrating back to 1.x: typed JSON text -> base64 pickle (protocol 2, as
    1.x wrote; positional arguments as a tuple). A value the upgrade had kept (``pickle:...``) is
    given back exactly as it was."""
    if text is None:
        return None
    if text.startswith(KEPT_PREFIX):
        return text[len(KEPT_PREFIX) :]
    value = serialization.loads(text)
    if what == "args":
        value = tuple(value)
    return base64.b64encode(pickle.dumps(value, protocol=2)).decode("ascii")


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


#: Called with (task name) -> (queue, priority, unique) of the registered task, or None if unknown.
TaskLookup = Callable[[str], "tuple[str, int, bool] | None"]


# -- the whole table, in batches --------------------------------------------------------------------

TABLE = "toosimpleq_taskexec"
#: Rows read and written per round trip: big enough to amortise it, small enough to keep memory flat.
BATCH = 2000


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
    update = (
        f"UPDATE {quote(TABLE)} SET args = %s, kwargs = %s, result = %s, output = %s, state = %s, error = %s, "
        f"queue = %s, priority = %s, attempt = %s, unique_key = %s, finished = COALESCE(%s, finished) WHERE id = %s"
    )
    finished_now = connection.ops.adapt_datetimefield_value(now)
    report = UpgradeReport()
    keys: set[str] = set()
    # Replacements come after what they replace (greater ids): the attempt number flows forward.
    next_attempt: dict[int, int] = {}
    last_id = 0
    with connection.cursor() as cursor:
        while True:
            cursor.execute(select, [last_id, batch])
            rows = cursor.fetchall()
            if not rows:
                return report
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
            cursor.executemany(update, updates)
            report.unique_keys = len(keys)
            last_id = rows[-1][0]


def downgrade_executions(connection: Any, batch: int = BATCH) -> int:
    """Back to 1.x columns: typed JSON -> base64 pickles, ``output`` -> ``stdout``; returns the count.

    Values the upgrade had kept are restored as they were. Executions the upgrade made INVALID stay
    INVALID, and 1.x ignores what it does not have (queue, priority, attempt, unique key).
    """
    quote = connection.ops.quote_name
    select = f"SELECT id, args, kwargs, result, output FROM {quote(TABLE)} WHERE id > %s ORDER BY id LIMIT %s"
    update = f"UPDATE {quote(TABLE)} SET args = %s, kwargs = %s, result = %s, stdout = %s, stderr = '' WHERE id = %s"
    count, last_id = 0, 0
    with connection.cursor() as cursor:
        while True:
            cursor.execute(select, [last_id, batch])
            rows = cursor.fetchall()
            if not rows:
                return count
            updates = []
            for row_id, args, kwargs, result, output in rows:
                updates.append((_back(args or "[]", "args"), _back(kwargs or "{}", "kwargs"), _back(result, "result"), output or "", row_id))
            cursor.executemany(update, updates)
            count += len(rows)
            last_id = rows[-1][0]


def _back(text: str | None, what: str) -> str | None:
    """``repickle`` for the downgrade; a value that is not typed JSON any more stays as it is."""
    try:
        return repickle(text, what)
    except Exception:  # noqa: BLE001 - e.g. a row edited by hand: keep it readable as it is
        return text
