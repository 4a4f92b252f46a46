"""What tasks and schedules exist: filled by the decorators when modules are imported."""

from __future__ import annotations

import datetime
import functools
import hashlib
import inspect
import logging
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, TypeVar

from asgiref.sync import async_to_sync
from django.apps import apps as django_apps
from django.utils import timezone

from . import limits, serialization, validation
from .engine import get_engine
from .workflows import Signature
from .errors import ConfigurationError, InvalidCall  # noqa: F401 - ConfigurationError also importable from here, as before

if TYPE_CHECKING:
    from .models import TaskExec
    from .schedules import Schedule

logger = logging.getLogger("django_toosimple_q.registry")


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
    #: At most this many executions running at once: of the task, or per key with ``concurrency_key``.
    concurrency: int | None = None
    #: The name of an argument, or a callable taking the call's arguments: its value is the key of a
    #: per-key limit (``concurrency`` and ``rate_limit`` then apply to each key on its own).
    concurrency_key: str | Callable[..., Any] | None = None
    #: At most this many starts per period (``"14/s"``, ``"100/10min"``): of the task, or per key.
    rate_limit: str | None = None
    signature: inspect.Signature = field(init=False, repr=False)

    def __post_init__(self) -> None:
        validation.check_task(
            self.name,
            priority=self.priority,
            queue=self.queue_name,
            retries=self.retries,
            retry_delay=self.retry_delay,
            timeout=self.timeout,
        )
        self.signature = inspect.signature(self.func)
        self._check_flow_options()
        # Look like the function: name, docstring, module, ``__wrapped__``.
        functools.update_wrapper(self, self.func, updated=())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    # -- flow control ----------------------------------------------------------------------------------

    def _check_flow_options(self) -> None:
        """Refuse, at registration, flow options that cannot work, naming the task and what to change."""
        problem = limits.concurrency_problem(self.concurrency)
        if problem:
            raise ConfigurationError(f"Task {self.name!r}: concurrency {problem}")
        problem = limits.rate_problem(self.rate_limit)
        if problem:
            raise ConfigurationError(f"Task {self.name!r}: {problem}")
        key = self.concurrency_key
        if key is None:
            return
        if self.concurrency is None and self.rate_limit is None:
            raise ConfigurationError(
                f"Task {self.name!r}: concurrency_key={key!r} needs concurrency=N and/or rate_limit='N/period' "
                "(the limit that applies to each key)"
            )
        if isinstance(key, str):
            parameters = self.signature.parameters
            accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
            if key not in parameters and not accepts_any:
                raise ConfigurationError(
                    f"Task {self.name!r}: concurrency_key={key!r} is not an argument of the function "
                    f"({', '.join(parameters) or 'it takes none'}); give an argument name or a callable"
                )
        elif not callable(key):
            raise ConfigurationError(
                f"Task {self.name!r}: concurrency_key must be an argument name or a callable taking the call's "
                f"arguments, not {key!r}"
            )

    @property
    def limit(self) -> limits.Limit:
        """This task's own limit (per key when ``concurrency_key`` is set)."""
        return limits.Limit(self.concurrency, limits.parse_rate(self.rate_limit) if self.rate_limit else None)

    def key_of(self, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any]) -> str | None:
        """The ``concurrency_key`` of a call (None without one): the argument's value, or what the
        callable returns, as text; a long one is replaced by its hash (the column holds 255 characters)."""
        key = self.concurrency_key
        if key is None:
            return None
        if isinstance(key, str):
            try:
                bound = self.signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise InvalidCall(f"Task {self.name!r} cannot be queued with these arguments: {exc}") from None
            bound.apply_defaults()
            value = bound.arguments[key] if key in self.signature.parameters else kwargs.get(key)  # else via **kwargs
        else:
            try:
                value = key(*args, **kwargs)
            except Exception as exc:
                raise InvalidCall(f"Task {self.name!r}: its concurrency_key callable failed on this call: {exc!r}") from exc
        text = value if isinstance(value, str) else serialization.dumps(value, "the concurrency key")
        if len(text) > 200 or (text and validation.text_problem(text)):
            text = "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        return text

    # -- running (on the worker) ---------------------------------------------------------------------

    def run(self, execution: TaskExec, args: list[Any] | None = None) -> Any:
        """Call the function with the arguments of ``execution`` (``args``: as ``arguments()`` gave them)
        on the worker, which records the outcome; an ``async def`` function runs on an event loop of its own."""
        return call_function(self.func, self.arguments(execution) if args is None else args, execution.kwargs)

    def arguments(self, execution: TaskExec) -> list[Any]:
        """The positional arguments ``execution`` runs with: those stored, preceded for a workflow step by
        what its upstream steps pass (read when it starts)."""
        if not execution.receives:
            return list(execution.args)
        return get_engine(execution._state.db).step_arguments(execution)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A step of a workflow: this call, not queued yet (see ``workflows.chain`` and ``workflows.group``)."""
        return Signature(self, args, kwargs)

    def storable_result(self, value: Any) -> Any:
        """What of the task's return value is stored (the value itself); raises ``UnstorableValue``
        when it cannot be: the execution then fails, not retried (the task did run)."""
        return value

    # -- queuing -------------------------------------------------------------------------------------

    def check_call(self, args: tuple[Any, ...], kwargs: dict[str, Any], *, received: int = 0) -> dict[str, str]:
        """Refuse, before anything is written, a call the function could not accept or we could not
        store; returns the stored text of the arguments (encoded once, here). ``received``: how many
        positional arguments come first at run time (a workflow step receiving a result)."""
        bound = (None,) * received + tuple(args)
        if not self._binds(bound, kwargs):
            try:
                self.signature.bind(*bound, **kwargs)
            except TypeError as exc:
                raise InvalidCall(f"Task {self.name!r} cannot be queued with these arguments: {exc}") from None
        try:
            return {
                "args": serialization.dumps(list(args), "the arguments", wrapper=True),
                "kwargs": serialization.dumps(dict(kwargs), "the keyword arguments", wrapper=True),
            }
        except serialization.UnstorableValue:
            # Say which argument, as the user wrote it.
            for index, value in enumerate(args):
                self._check_storable(value, f"positional argument {index}")
            for key, value in kwargs.items():
                self._check_storable(value, f"keyword argument {key!r}")
            raise

    def _warn_if_loading(self) -> None:
        """Queuing while Django loads its apps is almost always a ``.queue()`` at the module level of a
        ``tasks.py``: it would queue again at every ``manage.py`` command (and fail ``migrate`` on a new
        database). Say so, pointing at the line."""
        if not django_apps.ready:
            warnings.warn(
                f"Task {self.name!r} is queued while Django is still loading its apps, probably by a call at "
                "the module level of a tasks.py, which runs at every start of Django (every manage.py "
                "command, migrate included). Queue from a view, the shell, another task or a schedule instead.",
                RuntimeWarning,
                stacklevel=3,
            )

    def _binds(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """True if the function surely accepts these arguments, checked without ``Signature.bind``
        (which costs more than the rest of a ``queue_many()`` call) when its parameters are all plain
        positional-or-keyword ones; False means "ask ``bind``", which explains a refusal."""
        plan = self.__dict__.get("_bind_plan")
        if plan is None:
            parameters = list(self.signature.parameters.values())
            simple = all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in parameters)
            names = tuple(p.name for p in parameters)
            required = sum(1 for p in parameters if p.default is inspect.Parameter.empty)
            plan = self.__dict__["_bind_plan"] = (simple, names, required)
        simple, names, required = plan
        if not simple or len(args) > len(names):
            return False
        if not kwargs:
            return len(args) >= required
        given = set(names[: len(args)])
        if any(key in given or key not in names for key in kwargs):
            return False
        return all(name in kwargs for name in names[len(args) : required])

    def _check_storable(self, value: Any, what: str) -> None:
        try:
            serialization.dumps(value, what)
        except serialization.UnstorableValue as exc:
            raise InvalidCall(f"Task {self.name!r} cannot be queued: {exc}") from None

    def queue(self, *args: Any, due: datetime.datetime | None = None, **kwargs: Any) -> TaskExec:
        """Queue one call of this task and return its saved ``TaskExec`` (for a unique task whose
        identical call already waits: that one)."""
        self._warn_if_loading()
        encoded = self.check_call(args, kwargs)
        return get_engine().insert(self.new_exec(args, kwargs, due, encoded=encoded))

    def new_exec(
        self,
        args: Iterable[Any],
        kwargs: dict[str, Any],
        due: datetime.datetime | None = None,
        *,
        encoded: dict[str, str] | None = None,
        now: datetime.datetime | None = None,
        **options: Any,
    ) -> TaskExec:
        """An unsaved execution of one call (arguments already checked, ``encoded`` their stored text
        if known; ``now``: its creation time, by default the current time). ``options`` override the
        task's own: ``queue``, ``priority``, ``retries``, ``retry_delay``."""
        from .models import TaskExec

        if now is None:
            now = timezone.now()
        due = validation.due_for_db(self.name, due) if due is not None else now
        return TaskExec.build(
            encoded=encoded,
            task_name=self.name,
            args=list(args),
            kwargs=dict(kwargs),
            queue=options.get("queue", self.queue_name),
            priority=options.get("priority", self.priority),
            due=due,
            created=now,
            state=TaskExec.States.SLEEPING if due > now else TaskExec.States.QUEUED,
            retries=options.get("retries", self.retries),
            retry_delay=options.get("retry_delay", self.retry_delay),
            is_unique=self.unique,
            unique_key=serialization.call_fingerprint(self.name, args, kwargs) if self.unique else None,
            concurrency_key=self.key_of(tuple(args), kwargs) if self.concurrency_key is not None else None,
        )

    def queue_many(self, calls: Iterable[Any], *, due: datetime.datetime | None = None) -> list[TaskExec]:
        """Queue many calls of this task at once, in a few statements; returns their executions.

        Each call is a tuple or list of positional arguments, a dict of keyword arguments, or a
        ``Call(*args, **kwargs)``. Every call is checked first: one bad call queues nothing. A unique
        task gets one execution per distinct call, merged with those already waiting.
        """
        self._warn_if_loading()
        if due is not None:
            due = validation.due_for_db(self.name, due)  # refused even when there are no calls
        now = timezone.now()  # one creation time for the whole batch
        executions = []
        for index, call in enumerate(calls):
            args, kwargs = Call.split(call, self.name, index)
            try:
                encoded = self.check_call(args, kwargs)
            except TypeError as exc:
                raise InvalidCall(f"Call #{index}: {exc}") from None
            executions.append(self.new_exec(args, kwargs, due, encoded=encoded, now=now))
        return get_engine().insert_many(executions)

    def __repr__(self) -> str:
        return f"<Task {self.name}>"


def call_function(func: Callable[..., Any], args: Iterable[Any], kwargs: dict[str, Any]) -> Any:
    """Call ``func``; an ``async def`` function runs to completion on an event loop of its own.

    ``async_to_sync`` runs the loop in a helper thread while this thread serves the coroutine's
    ``sync_to_async`` calls (the async ORM included), so database connections stay on the task thread.
    """
    if inspect.iscoroutinefunction(func):
        return async_to_sync(func)(*args, **kwargs)
    return func(*args, **kwargs)


class Call:
    """One call for ``Task.queue_many``: ``Call(1, 2, key="x")``."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.args = args
        self.kwargs = kwargs

    @staticmethod
    def split(call: Any, task_name: str, index: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
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


TaskT = TypeVar("TaskT", bound="Task")


class TaskRegistry(dict[str, "Task"]):
    """Registered tasks by name."""

    def register(self, task: TaskT) -> TaskT:
        earlier = self.get(task.name)
        if earlier is not None:
            if _origin(earlier.func) == _origin(task.func):
                # The same function, its module imported again (e.g. by a test runner or importlib.reload).
                logger.info("Task %r registered again: the new definition replaces the earlier one", task.name)
            else:
                logger.warning(
                    "Task %r registered again by %s, replacing %s: two functions share this name, and only "
                    "the last one registered runs; give one of them another name (@register_task(name=...))",
                    task.name,
                    _origin(task.func),
                    _origin(earlier.func),
                )
        self[task.name] = task
        return task


def flow_limits() -> limits.FlowLimits:
    """The limits of the queues (``TOOSIMPLEQ_QUEUES``) and of the registered tasks, for the claim."""
    flow = limits.FlowLimits(queues=limits.queue_limits())
    for name, task in tasks_registry.items():
        limit = task.limit
        if limit:
            (flow.keyed if task.concurrency_key is not None else flow.tasks)[name] = limit
    return flow


def _origin(func: Callable[..., Any]) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


tasks_registry: TaskRegistry = TaskRegistry()
# Registered schedules by name, filled by ``@schedule_task`` (see ``schedules.register_schedule``).
schedules_registry: dict[str, Schedule] = {}
# Schedules declared with a value that cannot work (cron expression, time zone, arguments), by name:
# the reason. They are not registered; the system check ``toosimpleq.E001`` reports them.
invalid_schedules: dict[str, str] = {}
