"""Run one claimed execution and record its outcome."""

from __future__ import annotations

import datetime
import logging
import traceback

from django.utils import timezone

from .. import serialization, signals
from ..engine import Engine
from ..models import TaskExec, WorkerStatus, describe
from ..registry import tasks_registry
from .capture import capture_output

logger = logging.getLogger("django_toosimple_q.worker")
States = TaskExec.States


def execute(execution: TaskExec, engine: Engine, worker: WorkerStatus) -> None:
    _execute(execution, engine, worker)
    signals.send(signals.task_finished, execution)


def _execute(execution: TaskExec, engine: Engine, worker: WorkerStatus) -> None:
    """Run ``execution`` (already PROCESSING for ``worker``) and write its final state. Never raises
    for anything the task does."""
    task = tasks_registry.get(execution.task_name)
    problem = _invalid_reason(execution, task)
    if problem:
        logger.warning("Execution #%s of %r is invalid: %s", execution.pk, execution.task_name, problem)
        engine.finish(execution, worker, state=States.INVALID, finished=timezone.now(), error=problem)
        return

    logger.info("Running %s #%s%s", execution.task_name, execution.pk, describe(tuple(execution.args)))
    error = None
    signals.send(signals.task_started, execution)
    with capture_output() as output:
        try:
            result = task.func(*execution.args, **execution.kwargs)
        except BaseException:  # noqa: BLE001 - SystemExit/KeyboardInterrupt raised by a task are its failure
            error = traceback.format_exc()
    finished = timezone.now()
    fields = {"finished": finished, "output": output.getvalue()}

    if error is None:
        try:
            serialization.dumps(result, "the result")
        except serialization.UnstorableValue as exc:
            # The task did run to completion: retrying would repeat its effects for nothing.
            logger.error("%s #%s returned a value that cannot be stored: %s", execution.task_name, execution.pk, exc)
            fields.update(state=States.FAILED, error=f"The task ran, but {exc}. Not retried.")
        else:
            fields.update(state=States.SUCCEEDED, result=result)
        engine.finish(execution, worker, **fields)
        logger.info("%s #%s %s", execution.task_name, execution.pk, fields["state"].lower())
        return

    fields.update(state=States.FAILED, error=error)
    if execution.retries > 0:
        due = finished + datetime.timedelta(seconds=execution.retry_delay)
        replacement = execution.make_replacement(due, execution.retries - 1, execution.retry_delay * 2)
        engine.fail_and_retry(execution, worker, replacement, **fields)
        logger.warning(
            "%s #%s failed; retry #%s due at %s (%s retries left)",
            execution.task_name,
            execution.pk,
            execution.replaced_by_id,
            due.isoformat(),
            replacement.retries,
        )
    else:
        engine.finish(execution, worker, **fields)
        logger.error("%s #%s failed:\n%s", execution.task_name, execution.pk, error)


def _invalid_reason(execution: TaskExec, task) -> str | None:
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
