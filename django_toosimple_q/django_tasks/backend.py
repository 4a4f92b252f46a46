"""``QueueBackend``: Django's tasks framework storing each enqueued call as a ``TaskExec``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.tasks import Task as DjangoTask
from django.tasks import TaskResult
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued
from django.utils.module_loading import import_string

from .. import limits, validation
from ..errors import ConfigurationError
from ..engine import get_engine
from ..models import TaskExec
from ..registry import tasks_registry
from .adapter import DjangoTaskAdapter, adapter_for, option
from .results import chain_through, json_round_trip, result_of_chain

@dataclass(frozen=True, slots=True, kw_only=True)
class QueuedTask(DjangoTask):
    """The ``Task`` class of ``QueueBackend``: creating one (``@task``) registers its adapter.

    It also takes our options, which override the backend's ``OPTIONS`` for this task:
    ``@task(retries=3, retry_delay=10, timeout=60)``; and flow limits, as ``@register_task`` does:
    ``@task(concurrency=2, concurrency_key="customer_id", rate_limit="14/s")``.
    """

    retries: int | None = None
    retry_delay: float | None = None
    timeout: float | None = None
    concurrency: int | None = None
    concurrency_key: Any = None
    rate_limit: str | None = None

    def __post_init__(self) -> None:
        DjangoTask.__post_init__(self)  # validates; zero-argument super() fails in slotted dataclasses
        adapter_for(self)


class QueueBackend(BaseTaskBackend):
    """Stores each enqueued call as a ``TaskExec`` for ``manage.py worker`` to run.

    OPTIONS (all optional): ``retries`` (int >= 0) and ``retry_delay`` (seconds, doubled after each
    failure) for every execution enqueued through this backend; ``timeout`` (seconds) is the time
    limit of its tasks on the worker; ``queue_limits``: the limits of queues, as ``TOOSIMPLEQ_QUEUES``
    (``{"reports": {"concurrency": 1, "rate_limit": "14/s"}}``).
    """

    task_class = QueuedTask
    #: What ``adapter_for`` checks: tasks declared with this backend run on ``manage.py worker``.
    runs_on_toosimpleq_worker = True
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
        unknown = set(self.options) - {"retries", "retry_delay", "timeout", "queue_limits"}
        if unknown:
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['OPTIONS'] has unknown keys {sorted(unknown)}; "
                "QueueBackend accepts retries, retry_delay, timeout and queue_limits"
            )
        queue_limits = self.options.get("queue_limits") or {}
        if not isinstance(queue_limits, dict):
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['OPTIONS']['queue_limits'] must be a dict of queue name -> "
                "{'concurrency': ..., 'rate_limit': ...}"
            )
        for name, queue_options in queue_limits.items():
            try:
                limits.queue_limit(name, queue_options, f"TASKS[{alias!r}]['OPTIONS']['queue_limits']")
            except ConfigurationError as exc:
                raise ImproperlyConfigured(str(exc)) from None
        self.retries = self.options.get("retries", 0)
        self.retry_delay = self.options.get("retry_delay", 0)
        self.timeout = self.options.get("timeout")
        problem = validation.options_problem(retries=self.retries, retry_delay=self.retry_delay, timeout=self.timeout)
        if problem:
            raise ImproperlyConfigured(f"TASKS[{alias!r}]['OPTIONS']: {problem}")
        for queue in self.queues:
            problem = validation.text_problem(queue)
            if problem:
                raise ImproperlyConfigured(f"TASKS[{alias!r}]['QUEUES']: a queue name {problem}")

    def validate_task(self, task: DjangoTask) -> None:
        super().validate_task(task)
        problem = validation.text_problem(task.module_path)
        if problem:
            raise InvalidTask(f"The dotted path of task {validation.show(task.module_path, 80)} {problem}.")
        problem = validation.text_problem(task.queue_name)
        if problem:
            raise InvalidTask(f"Task {task.module_path}: queue_name {problem}.")
        # The task's own options, with the backend's for those it does not set.
        problem = validation.options_problem(**{name: option(task, self, name) for name in ("retries", "retry_delay", "timeout")})
        if problem:
            raise InvalidTask(f"Task {task.module_path}: {problem}.")

    def enqueue(self, task: DjangoTask, args: Any, kwargs: Any) -> TaskResult:
        self.validate_task(task)
        adapter = adapter_for(task)
        assert adapter is not None  # validate_task() refuses what is not a Django task
        args = json_round_trip(list(args), f"The arguments of {task.module_path}")
        kwargs = json_round_trip(dict(kwargs), f"The keyword arguments of {task.module_path}")
        encoded = adapter.check_call(args, kwargs)
        execution = adapter.new_exec(
            args,
            kwargs,
            due=task.run_after,
            encoded=encoded,
            priority=int(task.priority),
            queue=task.queue_name,
            retries=option(task, self, "retries"),
            retry_delay=option(task, self, "retry_delay"),
        )
        execution = get_engine().insert(execution)
        result = result_of_chain([execution], self.alias, task)
        task_enqueued.send(sender=type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult:
        try:
            pk = int(result_id)
        except (TypeError, ValueError):
            raise TaskResultDoesNotExist(f"No task result {result_id!r}: ids are whole numbers") from None
        execution = TaskExec.objects.filter(pk=pk).first()
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


