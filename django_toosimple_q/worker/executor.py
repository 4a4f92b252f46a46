"""Run one claimed execution and record its outcome."""

from __future__ import annotations

import datetime
import logging
import traceback
from typing import Any, Callable

from django.utils import timezone

from .. import serialization
from ..engine import Engine
from ..models import TaskExec, WorkerStatus, describe
from ..registry import Task, tasks_registry
from .capture import capture_output

logger = logging.getLogger("django_toosimple_q.worker")
States = TaskExec.States


def execute(
    execution: TaskExec, engine: Engine, worker: WorkerStatus, give_up: Callable[[], bool] = lambda: False
) -> None:
    """Run ``execution`` (already PROCESSING for ``worker``) here and write its final state.

    Never raises for anything the task does. The outcome is written persistently (through database
    restarts) until ``give_up()``: a finished execution must not be left PROCESSING.
    """
    task = tasks_registry.get(execution.task_name)
    problem = invalid_reason(execution, task)
    if problem:
        logger.warning("Execution #%s of %r is invalid: %s", execution.pk, execution.task_name, problem)
        fields = {"state": States.INVALID, "finished": timezone.now(), "error": problem}
        engine.persistently(lambda: engine.finish(execution, worker, **fields), give_up)
        return

    logger.info("Running %s #%s with %s", execution.task_name, execution.pk, describe(tuple(execution.args)))
    error = None
    with capture_output() as output:
        try:
            result = task.run(execution)
        except BaseException:  # noqa: BLE001 - SystemExit/KeyboardInterrupt raised by a task are its failure
            error = traceback.format_exc()
    fields: dict[str, Any] = {"finished": timezone.now(), "output": output.getvalue()}
    if error is not None:
        fields.update(state=States.FAILED, error=error)
    else:
        try:
            serialization.dumps(result, "the result")
        except serialization.UnstorableValue as exc:
            # The task did run to completion: retrying would repeat its effects for nothing.
            fields.update(state=States.FAILED, error=f"The task ran, but {exc}. Not retried.", retry=False)
        else:
            fields.update(state=States.SUCCEEDED, result=result)
    record_outcome(execution, engine, worker, fields, give_up)


def record_outcome(
    execution: TaskExec,
    engine: Engine,
    worker: WorkerStatus,
    fields: dict[str, Any],
    give_up: Callable[[], bool] = lambda: False,
) -> None:
    """Write a final state; a failure with retries left is replaced by a sleeping retry."""
    may_retry = fields.pop("retry", True)
    state = fields["state"]
    if state == States.FAILED and may_retry and execution.retries > 0:
        due = fields["finished"] + datetime.timedelta(seconds=execution.retry_delay)
        replacement = execution.make_replacement(due, execution.retries - 1, execution.retry_delay * 2)
        recorded = engine.persistently(
            lambda: engine.fail_and_retry(execution, worker, replacement, **fields), give_up
        )
        if recorded:
            logger.warning(
                "%s #%s failed; retry #%s due at %s (%s retries left):\n%s",
                execution.task_name,
                execution.pk,
                execution.replaced_by_id,
                due.isoformat(),
                replacement.retries,
                fields["error"],
            )
    else:
        recorded = engine.persistently(lambda: engine.finish(execution, worker, **fields), give_up)
        if recorded and state == States.FAILED:
            logger.error("%s #%s failed:\n%s", execution.task_name, execution.pk, fields["error"])
        elif recorded:
            logger.info("%s #%s %s", execution.task_name, execution.pk, state.lower())
    if recorded:
        task = tasks_registry.get(execution.task_name)
        if task is not None:
            try:
                task.outcome_recorded(execution)
            except Exception:  # noqa: BLE001 - a hook's fault must not stop the worker
                logger.exception("%s #%s: the outcome hook failed", execution.task_name, execution.pk)
    else:
        logger.warning(
            "%s #%s finished (%s) after it was taken from this worker (interrupted or rescued); "
            "its outcome is not recorded",
            execution.task_name,
            execution.pk,
            state,
        )


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
