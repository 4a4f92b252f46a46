"""Run one claimed execution and describe what happened as an ``Outcome``; the worker records
outcomes in batches through the engine."""

from __future__ import annotations

import logging
import re
import traceback
from typing import Any

from django.utils import timezone

from .. import serialization, tracing
from ..engine.outcome import Outcome
from ..models import TaskExec, describe
from ..registry import Task, tasks_registry
from .capture import capture_output
from .cleanup import roll_back_left_transactions, tracking_statements

logger = logging.getLogger("django_toosimple_q.worker")
States = TaskExec.States


def run_execution(execution: TaskExec) -> Outcome:
    """Run ``execution`` here and return its outcome (nothing is written); with OpenTelemetry, inside
    the execution's span (see ``tracing``)."""
    if tracing.active():
        with tracing.running(execution) as span:
            outcome = _run_execution(execution)
            span.ended(outcome.state, outcome.exception, outcome.error)
            return outcome
    return _run_execution(execution)


def _run_execution(execution: TaskExec) -> Outcome:
    """Run ``execution`` here and return its outcome (nothing is written).

    Never raises for anything the task does: its exceptions, including SystemExit and
    KeyboardInterrupt, make a FAILED outcome; a row that cannot run makes an INVALID one; a result
    that cannot be stored makes a FAILED one (not retried: the task did run). What the task printed
    and its error text are made storable on every database (see ``storable_text``). A transaction the
    task left open is rolled back, and the outcome says so.
    """
    started = timezone.now()
    task = tasks_registry.get(execution.task_name)
    args: list[Any] | None = None
    problem = None
    if task is not None and execution.receives:
        try:
            args = task.arguments(execution)  # a workflow step: what its upstream steps pass, first
        except Exception as exc:  # noqa: BLE001 - a step that cannot get its arguments cannot run
            problem = f"The arguments passed by its upstream steps cannot be read: {exc}"
    problem = problem or invalid_reason(execution, task, args)
    if problem:
        return Outcome(state=States.INVALID, started=started, finished=started, error=problem)
    assert task is not None  # invalid_reason() refuses an unknown task

    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("Running %s #%s with %s", execution.task_name, execution.pk, describe(tuple(execution.args)))
    exception: BaseException | None = None
    with capture_output() as output, tracking_statements() as used:
        try:
            result = task.run(execution, args)
        except BaseException as exc:  # noqa: BLE001 - SystemExit/KeyboardInterrupt raised by a task are its failure
            exception = exc
            error: str | None = traceback.format_exc()
        else:
            error = None
    finished = timezone.now()
    printed = storable_text(output.getvalue()) or ""
    left_open = roll_back_left_transactions(used)
    if left_open:
        note = left_transaction_note(left_open)
        logger.error("%s #%s: %s", execution.task_name, execution.pk, note)
        error = f"{error}\n{note}" if error is not None else note
    if error is not None:
        return Outcome(
            state=States.FAILED,
            started=started,
            finished=finished,
            error=storable_text(error),
            output=printed,
            exception_class=class_path(type(exception)) if exception is not None else None,
            exception=exception,
        )
    try:
        result = task.storable_result(result)
        encoded = serialization.dumps(result, "the result")
        encoded.encode("utf-8")
    except Exception as exc:  # noqa: BLE001 - UnstorableValue, or anything a strange value raises
        # The task did run to completion: retrying would repeat its effects for nothing.
        reason = exc if isinstance(exc, serialization.UnstorableValue) else f"the result cannot be stored ({exc!r})"
        return Outcome(
            state=States.FAILED,
            started=started,
            finished=finished,
            error=storable_text(f"The task ran, but {reason}. Not retried."),
            output=printed,
            exception_class=class_path(serialization.UnstorableValue),
            retry=False,
        )
    return Outcome(
        state=States.SUCCEEDED, started=started, finished=finished, result=result, result_json=encoded, output=printed
    )


def failed_outcome(error: str, exception_class: type[BaseException], started=None, retry: bool = True) -> Outcome:
    """The outcome of an execution stopped from the outside (time limit, its process died), or that
    the worker failed to run."""
    return Outcome(
        state=States.FAILED,
        started=started,
        finished=timezone.now(),
        error=storable_text(error),
        exception_class=class_path(exception_class),
        retry=retry,
    )


def class_path(cls: type) -> str:
    """The dotted path of a class, as Django's tasks framework reports exception classes."""
    return f"{cls.__module__}.{cls.__qualname__}"


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


def log_outcome(execution: TaskExec, outcome: Outcome, recorded: bool) -> None:
    """Log an outcome as recorded (``execution`` holds the recorded values), or that it was not."""
    if not recorded:
        logger.warning(
            "%s #%s finished (%s) after it was taken from this worker (interrupted or rescued); "
            "its outcome is not recorded",
            execution.task_name,
            execution.pk,
            outcome.state,
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
        # DEBUG (``-v 2``): a line per success cost as much as recording it, at thousands per second.
        logger.debug("%s #%s %s", execution.task_name, execution.pk, state.lower())


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


def invalid_reason(execution: TaskExec, task: Task | None, args: list[Any] | None = None) -> str | None:
    if task is None:
        return f"Task {execution.task_name!r} is not registered in this worker."
    for name in ("args", "kwargs"):
        value = getattr(execution, name)
        if isinstance(value, serialization.Undecodable):
            return f"The stored {name} cannot be decoded ({value.error}): {value.raw[:200]!r}"
    if not isinstance(execution.args, list) or not isinstance(execution.kwargs, dict):
        return "The stored args must be a list and kwargs an object."
    if task._binds(tuple(execution.args), execution.kwargs):  # the shortcut queue() takes
        return None
    try:
        task.signature.bind(*(execution.args if args is None else args), **execution.kwargs)
    except TypeError as exc:
        return f"The stored arguments do not match the task's signature: {exc}"
    return None
