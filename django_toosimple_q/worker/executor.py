"""Run one claimed execution and describe its outcome; the worker records outcomes in batches."""

from __future__ import annotations

import datetime
import logging
import traceback
from typing import Any

from django.utils import timezone

from .. import serialization
from ..models import TaskExec, describe
from ..registry import Task, tasks_registry
from .capture import capture_output

logger = logging.getLogger("django_toosimple_q.worker")
States = TaskExec.States


def run_execution(execution: TaskExec) -> dict[str, Any]:
    """Run ``execution`` here and return the fields of its outcome (nothing is written).

    Never raises for anything the task does: its exceptions, including SystemExit and
    KeyboardInterrupt, make a FAILED outcome; a row that cannot run makes an INVALID one.
    """
    started = timezone.now()
    task = tasks_registry.get(execution.task_name)
    problem = invalid_reason(execution, task)
    if problem:
        return {"state": States.INVALID, "started": started, "finished": started, "error": problem}

    logger.debug("Running %s #%s with %s", execution.task_name, execution.pk, describe(tuple(execution.args)))
    error = None
    with capture_output() as output:
        try:
            result = task.run(execution)
        except BaseException:  # noqa: BLE001 - SystemExit/KeyboardInterrupt raised by a task are its failure
            error = traceback.format_exc()
    fields: dict[str, Any] = {"started": started, "finished": timezone.now(), "output": output.getvalue()}
    if error is not None:
        fields.update(state=States.FAILED, error=error)
        return fields
    try:
        serialization.dumps(result, "the result")
    except serialization.UnstorableValue as exc:
        # The task did run to completion: retrying would repeat its effects for nothing.
        fields.update(state=States.FAILED, error=f"The task ran, but {exc}. Not retried.", retry=False)
    else:
        fields.update(state=States.SUCCEEDED, result=result)
    return fields


def failed_outcome(error: str) -> dict[str, Any]:
    """The outcome of an execution stopped from the outside (time limit, its process died)."""
    return {"state": States.FAILED, "finished": timezone.now(), "error": error}


def replacement_for_retry(execution: TaskExec, fields: dict[str, Any]) -> TaskExec | None:
    """The sleeping retry of a failed execution, or None when it must not be retried."""
    if fields["state"] != States.FAILED or not fields.get("retry", True) or execution.retries <= 0:
        return None
    due = fields["finished"] + datetime.timedelta(seconds=execution.retry_delay)
    return execution.make_replacement(due, execution.retries - 1, execution.retry_delay * 2)


def log_outcome(execution: TaskExec, fields: dict[str, Any], recorded: bool) -> None:
    state = fields["state"]
    if not recorded:
        logger.warning(
            "%s #%s finished (%s) after it was taken from this worker (interrupted or rescued); "
            "its outcome is not recorded",
            execution.task_name,
            execution.pk,
            state,
        )
    elif execution.replaced_by_id and state == States.FAILED:
        logger.warning(
            "%s #%s failed; retry #%s due in %gs:\n%s",
            execution.task_name,
            execution.pk,
            execution.replaced_by_id,
            execution.retry_delay,
            fields["error"],
        )
    elif state in (States.FAILED, States.INVALID):
        logger.error("%s #%s %s:\n%s", execution.task_name, execution.pk, state.lower(), fields["error"])
    else:
        logger.info("%s #%s %s", execution.task_name, execution.pk, state.lower())


def timeout_of(execution: TaskExec, default: float | None) -> float | None:
    """The time limit of an execution: its task's own ``timeout``, else the worker's default."""
    task = tasks_registry.get(execution.task_name)
    if task is not None and task.timeout is not None:
        return task.timeout
    return default


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
