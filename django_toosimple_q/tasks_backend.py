"""Django's tasks framework on our queue (Django >= 6.0 only; import ``backends`` instead).

- Enqueuing creates a ``TaskExec`` like ``Task.queue()`` does: Django's priority (-100..100) is stored
  as is, since ours also runs higher first; ``run_after`` becomes ``due``; ``queue_name`` the queue.
- Each Django task function has an *adapter*: a regular ``Task`` in ``tasks_registry``, named after
  the function's dotted path, registered when the ``@task`` object is created (so a worker that
  imports the apps' ``tasks.py`` knows it). The worker claims, retries, rescues and time-limits its
  executions like any other; the adapter adds the context and the signals.
- A result id is the primary key of the call's first execution. Retries and replacements after an
  interruption are later executions linked by ``replaced_by``; ``get_result`` follows that chain, so
  an id keeps meaning "this call" and its status is the one of the latest execution.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.tasks import Task as DjangoTask
from django.tasks import TaskContext, TaskResult, TaskResultStatus, task_backends
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import TASK_MAX_PRIORITY, TASK_MIN_PRIORITY, TaskError
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.utils.module_loading import import_string

from . import serialization
from . import signals as worker_signals
from .conf import queue_database
from .models import TaskExec
from .registry import ConfigurationError, Task, call_function, insert_execution, tasks_registry

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
}

_CHAIN_LIMIT = 10_000  # guards against a replaced_by loop edited by hand


class ExecutionInterrupted(Exception):
    """Error class reported for an attempt stopped before it finished (worker stopped or lost)."""


class ExecutionInvalid(Exception):
    """Error class reported for an execution that could not start (unknown task, unusable arguments)."""


class ExecutionCancelled(Exception):
    """Error class reported for an execution cancelled before it ran."""


@dataclass(frozen=True, slots=True, kw_only=True)
class QueuedTask(DjangoTask):
    """The ``Task`` class of ``QueueBackend``: creating one (``@task``) registers its adapter.

    It also takes our options, which override the backend's ``OPTIONS`` for this task:
    ``@task(retries=3, retry_delay=10, timeout=60)``.
    """

    retries: int | None = None
    retry_delay: float | None = None
    timeout: float | None = None

    def __post_init__(self) -> None:
        DjangoTask.__post_init__(self)  # validates; zero-argument super() fails in slotted dataclasses
        adapter_for(self)


def _option_problem(name: str, value: Any) -> str | None:
    """What is wrong with a retries/retry_delay/timeout option (None: unset, or fine)."""
    if value is None:
        return None
    if name == "retries":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"must be a whole number >= 0, not {value!r}"
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a number of seconds, not {value!r}"
    elif name == "retry_delay" and value < 0:
        return f"must be a number of seconds >= 0, not {value!r}"
    elif name == "timeout" and value <= 0:
        return f"must be a number of seconds > 0, not {value!r}"
    return None


def _option(task: DjangoTask, backend: QueueBackend, name: str) -> Any:
    """A task's own retries/retry_delay/timeout if it sets one, else its backend's."""
    value = getattr(task, name, None)
    return getattr(backend, name) if value is None else value


@dataclass(eq=False)
class DjangoTaskAdapter(Task):
    """Our registered task standing for one Django ``@task`` function."""

    django_task: Any = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.django_task.takes_context:
            # Stored arguments never include the context: the worker passes it.
            parameters = list(self.signature.parameters.values())[1:]
            self.signature = self.signature.replace(parameters=parameters)

    def run(self, execution: TaskExec) -> Any:
        django_task = self.django_task
        args = list(execution.args)
        if django_task.takes_context:
            result = result_of_chain(chain_to(execution), django_task.backend)
            args.insert(0, TaskContext(task_result=result))
        value = call_function(django_task.func, args, execution.kwargs)
        return json_round_trip(value, f"The return value of {self.name}")

    def send(self, signal: Any, execution: TaskExec) -> None:
        """Send one of Django's task signals for ``execution``, with the result of its call."""
        result = result_of_chain(chain_to(execution), self.django_task.backend)
        signal.send(sender=type(self.django_task.get_backend()), task_result=result)


# Django's signals follow the worker's own (``signals``): sent by the worker process, receivers'
# errors logged and never changing the outcome. ``task_started`` at each attempt; ``task_finished``
# once the call is finished, i.e. not for an attempt whose retry follows.


def _on_worker_task_started(sender: Any, execution: TaskExec, **kwargs: Any) -> None:
    adapter = tasks_registry.get(execution.task_name)
    if isinstance(adapter, DjangoTaskAdapter):
        adapter.send(task_started, execution)


def _on_worker_task_finished(sender: Any, execution: TaskExec, **kwargs: Any) -> None:
    adapter = tasks_registry.get(execution.task_name)
    if isinstance(adapter, DjangoTaskAdapter) and execution.replaced_by_id is None:
        adapter.send(task_finished, execution)


worker_signals.task_started.connect(_on_worker_task_started, dispatch_uid="toosimpleq-django-task-started")
worker_signals.task_finished.connect(_on_worker_task_finished, dispatch_uid="toosimpleq-django-task-finished")


def adapter_for(obj: Any) -> DjangoTaskAdapter | None:
    """The registered adapter of a Django task (registered on first use); None if ``obj`` is not one."""
    if not isinstance(obj, DjangoTask):
        return None
    name = obj.module_path
    existing = tasks_registry.get(name)
    if isinstance(existing, DjangoTaskAdapter) and existing.django_task.func is obj.func:
        return existing
    # ``.using()`` copies carry per-call options (stored on each execution); the adapter keeps the
    # module-level task, whose options are the declared defaults (used e.g. by schedules).
    declared = getattr(sys.modules.get(obj.func.__module__), obj.func.__qualname__, None)
    if not isinstance(declared, DjangoTask) or declared.func is not obj.func:
        declared = obj
    backend = declared.get_backend()
    if not isinstance(backend, QueueBackend):
        # Workers learn their tasks from the module-level @task objects: this one would be unknown there.
        raise ConfigurationError(
            f"Django task {name!r} is declared with TASKS[{declared.backend!r}] ({type(backend).__name__}); "
            "only tasks declared with a django_toosimple_q QueueBackend run on the toosimple-q worker: "
            "give @task(backend=...) such a backend"
        )
    return tasks_registry.register(
        DjangoTaskAdapter(
            func=obj.func,
            name=name,
            priority=declared.priority,
            queue_name=declared.queue_name,
            retries=_option(declared, backend, "retries"),
            retry_delay=_option(declared, backend, "retry_delay"),
            timeout=_option(declared, backend, "timeout"),
            django_task=declared,
        )
    )


class QueueBackend(BaseTaskBackend):
    """Stores each enqueued call as a ``TaskExec`` for ``manage.py worker`` to run.

    OPTIONS (all optional): ``retries`` (int >= 0) and ``retry_delay`` (seconds, doubled after each
    failure) for every execution enqueued through this backend; ``timeout`` (seconds) is the time
    limit of its tasks on the worker.
    """

    task_class = QueuedTask
    supports_defer = True
    supports_priority = True
    supports_async_task = True
    supports_get_result = True

    def __init__(self, alias: str, params: dict) -> None:
        super().__init__(alias, params)
        if not apps.is_installed("django_toosimple_q"):
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}] uses django_toosimple_q.backends.QueueBackend: add 'django_toosimple_q' "
                "to INSTALLED_APPS (its models hold the queue)"
            )
        unknown = set(self.options) - {"retries", "retry_delay", "timeout"}
        if unknown:
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['OPTIONS'] has unknown keys {sorted(unknown)}; "
                "QueueBackend accepts retries, retry_delay and timeout"
            )
        self.retries = self.options.get("retries", 0)
        self.retry_delay = self.options.get("retry_delay", 0)
        self.timeout = self.options.get("timeout")
        for option in ("retries", "retry_delay", "timeout"):
            value = getattr(self, option)
            problem = "must be set" if value is None and option != "timeout" else _option_problem(option, value)
            if problem:
                raise ImproperlyConfigured(f"TASKS[{alias!r}]['OPTIONS'][{option!r}] {problem}")
        for queue in self.queues:
            if not isinstance(queue, str) or not queue or len(queue) > 255:
                raise ImproperlyConfigured(
                    f"TASKS[{alias!r}]['QUEUES'] must hold non-empty names of at most 255 characters, not {queue!r}"
                )

    def validate_task(self, task: DjangoTask) -> None:
        super().validate_task(task)
        if len(task.module_path) > 255:
            raise InvalidTask(f"The dotted path of task {task.module_path!r} is longer than 255 characters.")
        for option in ("retries", "retry_delay", "timeout"):
            problem = _option_problem(option, getattr(task, option, None))
            if problem:
                raise InvalidTask(f"Task {task.module_path}: {option} {problem}.")

    def enqueue(self, task: DjangoTask, args: Any, kwargs: Any) -> TaskResult:
        self.validate_task(task)
        adapter = adapter_for(task)
        args = json_round_trip(list(args), f"The arguments of {task.module_path}")
        kwargs = json_round_trip(dict(kwargs), f"The keyword arguments of {task.module_path}")
        adapter.check_call(args, kwargs)
        execution = adapter.new_exec(args, kwargs, due=task.run_after)
        execution.priority = task.priority
        execution.queue = task.queue_name
        execution.retries = _option(task, self, "retries")
        execution.retry_delay = _option(task, self, "retry_delay")
        insert_execution(execution, queue_database())
        result = result_of_chain([execution], self.alias, task)
        task_enqueued.send(sender=type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult:
        try:
            pk = int(result_id)
        except (TypeError, ValueError):
            raise TaskResultDoesNotExist(f"No task result {result_id!r}: ids are whole numbers") from None
        execution = TaskExec.objects.using(queue_database()).filter(pk=pk).first()
        if execution is None:
            raise TaskResultDoesNotExist(f"No task result {result_id!r}")
        if not isinstance(tasks_registry.get(execution.task_name), DjangoTaskAdapter):
            _import_django_task(execution.task_name)
        if not isinstance(tasks_registry.get(execution.task_name), DjangoTaskAdapter):
            raise TaskResultDoesNotExist(
                f"Execution {result_id!r} is of {execution.task_name!r}, which is not a Django task"
            )
        return result_of_chain(chain_through(execution), self.alias)


def _import_django_task(name: str) -> None:
    """Import the ``@task`` object at dotted path ``name`` (which registers its adapter), if there is one."""
    try:
        import_string(name)
    except (ImportError, AttributeError, ValueError):
        pass


# -- results --------------------------------------------------------------------------------------


def chain_to(execution: TaskExec) -> list[TaskExec]:
    """The executions of one call up to ``execution``: the first one, its replacements, ``execution``."""
    chain = [execution]
    objects = TaskExec.objects.using(execution._state.db or queue_database())
    while len(chain) < _CHAIN_LIMIT:
        previous = objects.filter(replaced_by=chain[0].pk).order_by("id").first()
        if previous is None or previous.pk in {e.pk for e in chain}:
            break
        chain.insert(0, previous)
    return chain


def chain_through(execution: TaskExec) -> list[TaskExec]:
    """Every execution of the call ``execution`` belongs to, first to latest."""
    chain = chain_to(execution)
    objects = TaskExec.objects.using(execution._state.db or queue_database())
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
        task = _task_as_enqueued(tasks_registry[first.task_name].django_task, first)
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
        args=_jsonable(first.args, list),
        kwargs=_jsonable(first.kwargs, dict),
        backend=backend_alias,
        errors=[error for e in chain if (error := task_error(e)) is not None],
        worker_ids=worker_ids,
    )
    if latest.state == States.SUCCEEDED:
        object.__setattr__(result, "_return_value", latest.result)
    return result


def _jsonable(value: Any, kind: type) -> Any:
    """Stored arguments as JSON data (values JSON lacks, e.g. a schedule's datetime, in tagged form)."""
    if not isinstance(value, kind):
        return kind()  # undecodable: the execution is INVALID and its error says why
    try:
        return serialization.to_jsonable(value)
    except serialization.UnstorableValue:
        return kind()


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
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON-serializable: {exc}") from None
