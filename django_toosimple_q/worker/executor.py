"""Run one claimed execution and describe its outcome; the worker records outcomes in batches."""

from __future__ import annotations

import datetime
import logging
import re
import traceback
from typing import Any

from django.utils import timezone

from .. import serialization
from ..models import TaskExec, describe
from ..registry import Task, tasks_registry
from .capture import capture_output
from .cleanup import roll_back_left_transactions, tracking_statements

logger = logging.getLogger("django_toosimple_q.worker")
States = TaskExec.States


def run_execution(execution: TaskExec) -> dict[str, Any]:
    """Run ``execution`` here and return the fields of its outcome (nothing is written).

    Never raises for anything the task does: its exceptions, including SystemExit and
    KeyboardInterrupt, make a FAILED outcome; a row that cannot run makes an INVALID one; a result
    that cannot be stored makes a FAILED one (not retried: the task did run). What the task printed
    and its error text are made storable on every database (see ``storable_text``). A transaction the
    task left open is rolled back, and the outcome says so.
    """
    started = timezone.now()
    task = tasks_registry.get(execution.task_name)
    problem = invalid_reason(execution, task)
    if problem:
        return {"state": States.INVALID, "started": started, "finished": started, "error": problem}

    logger.debug("Running %s #%s with %s", execution.task_name, execution.pk, describe(tuple(execution.args)))
    error = None
    with capture_output() as output, tracking_statements() as used:
        try:
            result = task.run(execution)
        except BaseException:  # noqa: BLE001 - SystemExit/KeyboardInterrupt raised by a task are its failure
            error = traceback.format_exc()
    fields: dict[str, Any] = {"started": started, "finished": timezone.now(), "output": output.getvalue()}
    left_open = roll_back_left_transactions(used)
    if left_open:
        note = left_transaction_note(left_open)
        logger.error("%s #%s: %s", execution.task_name, execution.pk, note)
        error = f"{error}\n{note}" if error is not None else note
    if error is not None:
        fields.update(state=States.FAILED, error=error)
        return storable_outcome(fields)
    try:
        serialization.dumps(result, "the result").encode("utf-8")
    except Exception as exc:  # noqa: BLE001 - UnstorableValue, or anything a strange value raises
        # The task did run to completion: retrying would repeat its effects for nothing.
        reason = exc if isinstance(exc, serialization.UnstorableValue) else f"the result cannot be stored ({exc!r})"
        fields.update(state=States.FAILED, error=f"The task ran, but {reason}. Not retried.", retry=False)
    else:
        fields.update(state=States.SUCCEEDED, result=result)
    return storable_outcome(fields)


def left_transaction_note(aliases: list[str]) -> str:
    names = ", ".join(repr(alias) for alias in aliases)
    return (
        f"The task left a transaction open on database {names}: the worker rolled it back, so the task's "
        "uncommitted writes are lost. Commit or roll back every transaction a task opens (prefer "
        "`with transaction.atomic():`)."
    )


#: Characters no database column can hold as text: NUL (PostgreSQL refuses it) and lone surrogates
#: (not encodable in UTF-8). They are written as visible escapes instead.
_UNSTORABLE_CHARACTERS = re.compile("[\x00\ud800-\udfff]")


def storable_text(text: str | None) -> str | None:
    """``text`` with the characters databases refuse written as visible escapes (``\\x00``,
    ``\\udc80``), and a note saying so; never silently dropped."""
    if not text:
        return text
    escaped, count = _UNSTORABLE_CHARACTERS.subn(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
    if not count:
        return text
    return (
        f"{escaped}\n[django-toosimple-q: {count} character(s) that a database cannot store (NUL or lone "
        "surrogates) are shown escaped above]"
    )


def storable_outcome(fields: dict[str, Any]) -> dict[str, Any]:
    for name in ("output", "error"):
        if name in fields:
            fields[name] = storable_text(fields[name])
    return fields


def failed_outcome(error: str) -> dict[str, Any]:
    """The outcome of an execution stopped from the outside (time limit, its process died)."""
    return storable_outcome({"state": States.FAILED, "finished": timezone.now(), "error": error})


def replacement_for_retry(execution: TaskExec, fields: dict[str, Any]) -> TaskExec | None:
    """The sleeping retry of a failed execution, or None when it must not be retried."""
    if fields["state"] != States.FAILED or not fields.get("retry", True) or execution.retries <= 0:
        return None
    delay = bounded_delay(execution.retry_delay)
    try:
        due = fields["finished"] + datetime.timedelta(seconds=delay)
    except OverflowError:
        due = LATEST_DUE if timezone.is_aware(fields["finished"]) else LATEST_DUE.replace(tzinfo=None)
    return execution.make_replacement(due, execution.retries - 1, bounded_delay(delay * 2))


#: The longest retry delay the worker applies, whatever a row says (registration refuses more).
MAX_RETRY_DELAY = 100 * 365.25 * 86400
#: A due time every database and Python can store and read back in any time zone.
LATEST_DUE = datetime.datetime(9000, 1, 1, tzinfo=datetime.timezone.utc)


def bounded_delay(seconds: float) -> float:
    """A retry delay in [0, MAX_RETRY_DELAY]; anything else (nan, inf, negative) is clamped."""
    if seconds >= 0 and seconds <= MAX_RETRY_DELAY:
        return float(seconds)
    return 0.0 if seconds < 0 else MAX_RETRY_DELAY


def log_outcome(execution: TaskExec, fields: dict[str, Any], recorded: bool) -> None:
    """Log an outcome as recorded (``execution`` holds the recorded values), or that it was not."""
    if not recorded:
        logger.warning(
            "%s #%s finished (%s) after it was taken from this worker (interrupted or rescued); "
            "its outcome is not recorded",
            execution.task_name,
            execution.pk,
            fields["state"],
        )
        return
    state = execution.state
    if execution.replaced_by_id and state == States.FAILED:
        logger.warning(
            "%s #%s failed; retry #%s due in %gs:\n%s",
            execution.task_name,
            execution.pk,
            execution.replaced_by_id,
            execution.retry_delay,
            execution.error,
        )
    elif state in (States.FAILED, States.INVALID):
        logger.error("%s #%s %s:\n%s", execution.task_name, execution.pk, state.lower(), execution.error)
    else:
        logger.info("%s #%s %s", execution.task_name, execution.pk, state.lower())


def timeout_of(execution: TaskExec, default: float | None) -> float | None:
    """The time limit of an execution: its task's own ``timeout``, else the worker's default."""
    task = tasks_registry.get(execution.task_name)
    if task is not None and task.timeout is not None:
        return task.timeout
    return default


def runs_isolated(execution: TaskExec, limit: float | None) -> bool:
    """Whether ``execution`` runs in a child process: it has a time limit, or a worker already died
    while holding its call (so that, if the task kills its process, only the child dies)."""
    return limit is not None or execution.crashes > 0


def invalid_reason(execution: TaskExec, task: Task | None) -> str | None:
    if task is None:
        return f"Task {execution.task_name!r} is not registered in this worker."
    for name in ("args", "kwargs"):
        value = getattr(execution, name)
        if isinstance(value, serialization.Undecodable):
            return f"The stored {name} cannot be decoded ({value.error}): {value.raw[:200]!r}"
    if not isinstance(execution.args, list) or not isinstance(execution.kwargs, dict):
        return "The stored args must be a list and kwargs an object."
    try:
        task.signature.bind(*execution.args, **execution.kwargs)
    except TypeError as exc:
        return f"The stored arguments do not match the task's signature: {exc}"
    return None
