"""Results of Django tasks: a call's executions (its first one and the replacements linked by
``replaced_by``) read as one ``TaskResult``."""

from __future__ import annotations

import datetime
import json
from typing import Any

from django.tasks import Task as DjangoTask
from django.tasks import TaskResult, TaskResultStatus
from django.tasks.base import TASK_MAX_PRIORITY, TASK_MIN_PRIORITY, TaskError
from django.tasks.exceptions import InvalidTask

from ..errors import ExecutionCancelled, ExecutionInterrupted, ExecutionInvalid, UnstorableValue
from ..models import TaskExec
from ..registry import tasks_registry

States = TaskExec.States

#: How the state of a call's latest execution reads in Django's vocabulary. An INTERRUPTED execution
#: normally has a replacement (followed instead); one without (deleted) ends the call as FAILED.
STATUS = {
    States.SLEEPING: TaskResultStatus.READY,
    States.QUEUED: TaskResultStatus.READY,
    States.PROCESSING: TaskResultStatus.RUNNING,
    States.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
    States.FAILED: TaskResultStatus.FAILED,
    States.INTERRUPTED: TaskResultStatus.FAILED,
    States.INVALID: TaskResultStatus.FAILED,
    States.CANCELLED: TaskResultStatus.FAILED,
    States.WAITING: TaskResultStatus.READY,
    States.BLOCKED: TaskResultStatus.FAILED,
}

_CHAIN_LIMIT = 10_000  # guards against a replaced_by loop edited by hand


def chain_to(execution: TaskExec) -> list[TaskExec]:
    """The executions of one call up to ``execution``: the first one, its replacements, ``execution``."""
    chain = [execution]
    objects = TaskExec.objects
    while len(chain) < _CHAIN_LIMIT:
        previous = objects.filter(replaced_by=chain[0].pk).order_by("id").first()
        if previous is None or previous.pk in {e.pk for e in chain}:
            break
        chain.insert(0, previous)
    return chain


def chain_through(execution: TaskExec) -> list[TaskExec]:
    """Every execution of the call ``execution`` belongs to, first to latest."""
    chain = chain_to(execution)
    objects = TaskExec.objects
    seen = {e.pk for e in chain}
    while chain[-1].replaced_by_id is not None and len(chain) < _CHAIN_LIMIT:
        following = objects.filter(pk=chain[-1].replaced_by_id).first()
        if following is None or following.pk in seen:
            break
        seen.add(following.pk)
        chain.append(following)
    return chain


def result_of_chain(chain: list[TaskExec], backend_alias: str, task: DjangoTask | None = None) -> TaskResult:
    """The ``TaskResult`` of one call, from its executions (first to latest)."""
    first, latest = chain[0], chain[-1]
    if task is None:
        adapter: Any = tasks_registry[first.task_name]  # a DjangoTaskAdapter (whose module imports this one)
        task = _task_as_enqueued(adapter.django_task, first)
    status = STATUS[latest.state]
    attempts = [e for e in chain if e.started is not None]
    # Rows of earlier attempts may have been deleted: count them anyway, so attempt numbers stay right.
    worker_ids = [""] * (first.attempt - 1) + [str(e.worker_id or "") for e in attempts]
    result = TaskResult(
        task=task,
        id=str(first.pk),
        status=status,
        enqueued_at=first.created,
        started_at=attempts[0].started if attempts else None,
        last_attempted_at=attempts[-1].started if attempts else None,
        finished_at=latest.finished if status in (TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED) else None,
        args=as_json(first.args) if isinstance(first.args, list) else [],  # undecodable: INVALID says why
        kwargs=as_json(first.kwargs) if isinstance(first.kwargs, dict) else {},
        backend=backend_alias,
        errors=[error for e in chain if (error := task_error(e)) is not None],
        worker_ids=worker_ids,
    )
    if latest.state == States.SUCCEEDED:
        object.__setattr__(result, "_return_value", latest.result)
    return result


def as_json(value: Any) -> Any:
    """Stored arguments as the caller passed them, as Django normalises them (``normalize_json``): the
    values themselves (floats such as nan included); those JSON has no type for, which only our own
    paths store (e.g. a schedule's ``datetime_kwarg``), as their ISO or text form."""
    if isinstance(value, dict):
        return {str(key) if not isinstance(key, str) else key: as_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [as_json(item) for item in value]
    if value is None or isinstance(value, (str, int, float)):
        return value
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)  # Decimal, UUID, timedelta


def _task_as_enqueued(task: DjangoTask, first: TaskExec) -> DjangoTask:
    """The task with the priority, queue and run_after this call was enqueued with."""
    priority = min(max(first.priority, TASK_MIN_PRIORITY), TASK_MAX_PRIORITY)
    deferred = first.due if first.due != first.created else None
    try:
        return task.using(priority=priority, queue_name=first.queue, run_after=deferred)
    except InvalidTask:
        return task  # e.g. a queue since removed from QUEUES: still report the result


_ERROR_CLASSES = {
    States.INTERRUPTED: ExecutionInterrupted,
    States.INVALID: ExecutionInvalid,
    States.CANCELLED: ExecutionCancelled,
    States.BLOCKED: ExecutionCancelled,
}


def task_error(execution: TaskExec) -> TaskError | None:
    if execution.state == States.FAILED:
        # The class is stored by the worker; rows without one (written by other versions) say Exception.
        return TaskError(
            exception_class_path=execution.exception_class or "builtins.Exception", traceback=execution.error or ""
        )
    error_class = _ERROR_CLASSES.get(execution.state)
    if error_class is None:
        return None
    return TaskError(
        exception_class_path=f"{error_class.__module__}.{error_class.__qualname__}",
        traceback=execution.error or execution.get_state_display(),
    )


def json_round_trip(value: Any, what: str) -> Any:
    """``value`` as it reads back from JSON, as Django's contract requires of arguments and results."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError, RecursionError) as exc:  # RecursionError: nested too deep for json
        raise UnstorableValue(value, what, f"must be JSON-serializable: {exc}") from None
