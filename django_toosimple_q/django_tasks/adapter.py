"""The adapter of a Django ``@task`` function: the registered ``Task`` the worker runs for it."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from django.tasks import Task as DjangoTask
from django.tasks import TaskContext
from django.tasks.signals import task_finished, task_started

from .. import signals as worker_signals
from ..errors import ConfigurationError, TaskFailed
from ..models import TaskExec
from ..registry import Task, call_function, tasks_registry
from .results import chain_to, json_round_trip, result_of_chain

def option(task: DjangoTask, backend: Any, name: str) -> Any:
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

    def run(self, execution: TaskExec, args: list[Any] | None = None) -> Any:
        django_task = self.django_task
        args = list(self.arguments(execution) if args is None else args)
        if django_task.takes_context:
            result = result_of_chain(chain_to(execution), django_task.backend)
            args.insert(0, TaskContext(task_result=result))
        return call_function(django_task.func, args, execution.kwargs)

    def storable_result(self, value: Any) -> Any:
        """Django's contract: the result is what JSON gives back (a tuple becomes a list)."""
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


def _on_worker_task_finished(sender: Any, execution: TaskExec, exception: BaseException | None = None, **kwargs: Any) -> None:
    adapter = tasks_registry.get(execution.task_name)
    if not isinstance(adapter, DjangoTaskAdapter) or execution.replaced_by_id is not None:
        return
    if execution.state != TaskExec.States.FAILED:
        adapter.send(task_finished, execution)
        return
    # Django's own backends send task_finished inside the exception handler, and its log line takes
    # the traceback from sys.exc_info(): do the same, with the task's exception (or, when it ran in a
    # child process, one carrying its recorded traceback).
    try:
        raise exception if exception is not None else TaskFailed(execution.error or "")
    except BaseException:  # noqa: BLE001 - re-raised only to be the exception being handled
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
    if not getattr(backend, "runs_on_toosimpleq_worker", False):
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
            priority=int(declared.priority),  # Django also accepts 5.0 or True
            queue_name=declared.queue_name,
            retries=option(declared, backend, "retries"),
            retry_delay=option(declared, backend, "retry_delay"),
            timeout=option(declared, backend, "timeout"),
            concurrency=getattr(declared, "concurrency", None),
            concurrency_key=getattr(declared, "concurrency_key", None),
            rate_limit=getattr(declared, "rate_limit", None),
            django_task=declared,
        )
    )


