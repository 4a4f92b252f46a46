"""What tasks and schedules exist: filled by the decorators when modules are imported."""

from __future__ import annotations

import datetime
import functools
import inspect
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

from asgiref.sync import async_to_sync
from django.db import IntegrityError, transaction
from django.utils import timezone

from . import serialization
from .conf import queue_database

if TYPE_CHECKING:
    from .models import TaskExec
    from .schedules import Schedule

logger = logging.getLogger("django_toosimple_q.registry")


class ConfigurationError(ValueError):
    """A task or schedule is declared in a way that cannot work; the message says what to change."""


@dataclass(eq=False)
class Task:
    """A registered task: a callable plus the options given to ``@register_task``."""

    func: Callable[..., Any]
    name: str
    priority: int = 0
    queue_name: str = "default"
    retries: int = 0
    retry_delay: float = 0
    unique: bool = False
    #: Time limit in seconds; the execution runs in a child process that is killed past it.
    timeout: float | None = None
    signature: inspect.Signature = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.signature = inspect.signature(self.func)
        # Look like the function: name, docstring, module, ``__wrapped__``.
        functools.update_wrapper(self, self.func, updated=())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    # -- running (on the worker) ---------------------------------------------------------------------

    def run(self, execution: TaskExec) -> Any:
        """Call the function with the stored arguments of ``execution`` (on the worker, which records the
        outcome); an ``async def`` function runs on an event loop of its own."""
        return call_function(self.func, execution.args, execution.kwargs)

    # -- queuing -------------------------------------------------------------------------------------

    def check_call(self, args: tuple, kwargs: dict) -> None:
        """Refuse, before anything is written, a call the function could not accept or we could not store."""
        try:
            self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"Task {self.name!r} cannot be queued with these arguments: {exc}") from None
        for index, value in enumerate(args):
            self._check_storable(value, f"positional argument {index}")
        for key, value in kwargs.items():
            self._check_storable(value, f"keyword argument {key!r}")

    def _check_storable(self, value: Any, what: str) -> None:
        try:
            serialization.to_jsonable(value, what)
        except serialization.UnstorableValue as exc:
            raise TypeError(f"Task {self.name!r} cannot be queued: {exc}") from None

    def queue(self, *args: Any, due: datetime.datetime | None = None, **kwargs: Any) -> TaskExec:
        """Queue one call of this task and return its saved ``TaskExec``."""
        self.check_call(args, kwargs)
        return self._insert(self.new_exec(args, kwargs, due))

    def new_exec(self, args: Iterable, kwargs: dict, due: datetime.datetime | None = None) -> TaskExec:
        """An unsaved execution of one call (arguments already checked)."""
        from .models import TaskExec

        now = timezone.now()
        due = _aware(due) if due is not None else now
        return TaskExec(
            task_name=self.name,
            args=list(args),
            kwargs=dict(kwargs),
            queue=self.queue_name,
            priority=self.priority,
            due=due,
            created=now,
            state=TaskExec.States.SLEEPING if due > now else TaskExec.States.QUEUED,
            retries=self.retries,
            retry_delay=self.retry_delay,
            is_unique=self.unique,
            unique_key=serialization.call_fingerprint(self.name, args, kwargs) if self.unique else None,
        )

    def _insert(self, execution: TaskExec) -> TaskExec:
        return insert_execution(execution, queue_database())

    def queue_many(self, calls: Iterable[Any], *, due: datetime.datetime | None = None) -> list[TaskExec]:
        """Queue many calls of this task at once, in a few statements; returns their executions.

        Each call is a tuple or list of positional arguments, a dict of keyword arguments, or a
        ``Call(*args, **kwargs)``. Every call is checked first: one bad call queues nothing. A unique
        task gets one execution per distinct call, merged with those already waiting.
        """
        from .models import TaskExec

        executions = []
        for index, call in enumerate(calls):
            args, kwargs = Call.split(call, self.name, index)
            try:
                self.check_call(args, kwargs)
            except TypeError as exc:
                raise TypeError(f"Call #{index}: {exc}") from None
            executions.append(self.new_exec(args, kwargs, due))
        db = queue_database()
        objects = TaskExec.objects.using(db)
        with transaction.atomic(using=db):
            if not self.unique:
                return objects.bulk_create(executions, batch_size=BULK_BATCH)
            earliest: dict[str, TaskExec] = {}
            for execution in executions:
                kept = earliest.get(execution.unique_key)
                if kept is None or execution.due < kept.due:
                    earliest[execution.unique_key] = execution
            objects.bulk_create(earliest.values(), batch_size=BULK_BATCH, ignore_conflicts=True)
            waiting: dict[str, TaskExec] = {}
            keys = list(earliest)
            for start in range(0, len(keys), BULK_BATCH):
                chunk = objects.filter(unique_key__in=keys[start : start + BULK_BATCH], state__in=TaskExec.States.waiting())
                waiting.update((e.unique_key, e) for e in chunk)
            for key, wanted in earliest.items():
                if key not in waiting:
                    # Claimed between our insert and our read: queue it again, one by one.
                    waiting[key] = insert_execution(wanted, db)
                elif wanted.due < waiting[key].due:
                    waiting[key] = merge_into_waiting(wanted, db) or insert_execution(wanted, db)
            return [waiting[e.unique_key] for e in executions]

    def __repr__(self) -> str:
        return f"<Task {self.name}>"


def call_function(func: Callable[..., Any], args: Iterable, kwargs: dict) -> Any:
    """Call ``func``; an ``async def`` function runs to completion on an event loop of its own.

    ``async_to_sync`` runs the loop in a helper thread while this thread serves the coroutine's
    ``sync_to_async`` calls (the async ORM included), so database connections stay on the task thread.
    """
    if inspect.iscoroutinefunction(func):
        return async_to_sync(func)(*args, **kwargs)
    return func(*args, **kwargs)


def as_registered_task(obj: Any) -> Task | None:
    """The registered ``Task`` behind ``obj``: ``obj`` itself, or the adapter of a Django ``@task``
    function (Django >= 6.0, see ``backends``); None for anything else."""
    if isinstance(obj, Task):
        return obj
    from .backends import adapter_for

    return adapter_for(obj)


#: Rows per INSERT statement in bulk operations.
BULK_BATCH = 1000


class Call:
    """One call for ``Task.queue_many``: ``Call(1, 2, key="x")``."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.args = args
        self.kwargs = kwargs

    @staticmethod
    def split(call: Any, task_name: str, index: int) -> tuple[tuple, dict]:
        if isinstance(call, Call):
            return call.args, call.kwargs
        if isinstance(call, (tuple, list)):
            return tuple(call), {}
        if isinstance(call, dict):
            return (), dict(call)
        raise TypeError(
            f"Task {task_name!r}: call #{index} of queue_many() is a {type(call).__name__}; give a tuple of "
            "positional arguments, a dict of keyword arguments, or Call(*args, **kwargs)"
        )


def insert_execution(execution: TaskExec, db: str) -> TaskExec:
    """Save a new execution; a unique one whose identical call already waits merges into it instead."""
    if execution.unique_key is None:
        execution.save(using=db, force_insert=True)
        return execution
    # Insert first and let the unique index arbitrate: a check-then-insert would race.
    while True:
        try:
            with transaction.atomic(using=db):
                execution.save(using=db, force_insert=True)
            return execution
        except IntegrityError:
            execution.pk = None
            waiting = merge_into_waiting(execution, db)
            if waiting is not None:
                return waiting
            # The waiting twin was claimed between our insert and our read: insert again.


def merge_into_waiting(execution: TaskExec, db: str) -> TaskExec | None:
    """Return the execution already waiting with the same ``unique_key``, moved to the earlier due."""
    from .models import TaskExec

    with transaction.atomic(using=db):
        waiting = (
            TaskExec.objects.using(db)
            .select_for_update()
            .filter(unique_key=execution.unique_key, state__in=TaskExec.States.waiting())
            .first()
        )
        if waiting is None:
            return None
        if execution.due < waiting.due:
            waiting.due = execution.due
            if waiting.due <= timezone.now():
                waiting.state = TaskExec.States.QUEUED
            waiting.save(using=db, update_fields=["due", "state"])
        return waiting


def _aware(value: datetime.datetime) -> datetime.datetime:
    """A naive datetime is read in the current time zone, as Django does for model fields."""
    if timezone.is_naive(value):
        return timezone.make_aware(value) if _use_tz() else value
    return value


def _use_tz() -> bool:
    from django.conf import settings

    return settings.USE_TZ


class TaskRegistry(dict):
    """Registered tasks by name."""

    def register(self, task: Task) -> Task:
        if task.name in self:
            logger.info("Task %r registered again: the new definition replaces the earlier one", task.name)
        self[task.name] = task
        return task


tasks_registry: TaskRegistry = TaskRegistry()
# Registered schedules by name, filled by ``@schedule_task`` (see ``schedules.register_schedule``).
schedules_registry: dict[str, Schedule] = {}
