"""Public decorators: ``@register_task`` and ``@schedule_task`` (see ``schedules``)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from .backends import adapter_for
from .registry import ConfigurationError, Task, tasks_registry
from .schedules import Schedule, register_schedule


def register_task(
    *,
    name: str | None = None,
    priority: int = 0,
    queue: str = "default",
    retries: int = 0,
    retry_delay: float = 0,
    unique: bool = False,
    timeout: float | None = None,
    concurrency: int | None = None,
    concurrency_key: str | Callable[..., Any] | None = None,
    rate_limit: str | None = None,
) -> Callable[[Callable[..., Any]], Task]:
    """Register a function as a task; the result is still callable and gains ``.queue()``.

    Flow control (enforced by the database across every worker, see docs/tasks.md): ``concurrency``
    (at most N running at once), ``rate_limit`` (at most N starts per period, e.g. ``"14/s"``), and
    ``concurrency_key`` (an argument name or a callable on the arguments): both limits then apply per
    distinct key."""

    def decorator(func: Callable[..., Any]) -> Task:
        # The options are checked by Task (see ``validation``), for every way a task is made.
        task = Task(
            func=func,
            name=name if name is not None else default_task_name(func),
            priority=priority,
            queue_name=queue,
            retries=retries,
            retry_delay=retry_delay,
            unique=unique,
            timeout=timeout,
            concurrency=concurrency,
            concurrency_key=concurrency_key,
            rate_limit=rate_limit,
        )
        return tasks_registry.register(task)

    return decorator


def default_task_name(func: Callable[..., Any]) -> str:
    qualname = getattr(func, "__qualname__", "")
    if not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        raise ConfigurationError(
            f"Task {qualname or func!r} is defined in a local scope, so it has no importable dotted path: "
            "give it a name with @register_task(name=...)"
        )
    return f"{func.__module__}.{qualname}"


def as_registered_task(obj: Any) -> Task | None:
    """The registered ``Task`` behind ``obj``: ``obj`` itself, or the adapter of a Django ``@task``
    function (Django >= 6.0, see ``backends``); None for anything else."""
    if isinstance(obj, Task):
        return obj
    return adapter_for(obj)


def schedule_task(
    *,
    cron: str,
    name: str | None = None,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    run_on_creation: bool = False,
    catch_up: bool = False,
    datetime_kwarg: str | None = None,
    queue: str = "default",
    timezone: str | None = None,
) -> Callable[[Task], Task]:
    """Queue the task below (decorated with ``@register_task``) at each occurrence of ``cron``.

    ``cron``: 5 fields, 6 with seconds last, an alias such as ``"@daily"``, or ``"manual"`` (only run
    on demand, see ``schedules.run_schedule_now``). ``name`` defaults to the task's name and must be
    unique. ``queue`` picks which workers handle the schedule (the task runs in its own queue).
    ``timezone`` is an IANA name; by default the project's ``TIME_ZONE``.
    """

    def decorator(obj: Any) -> Any:
        # A task of ours, or a Django @task function (Django >= 6.0 with our backend).
        task = as_registered_task(obj)
        if task is None:
            raise ConfigurationError(
                f"Schedule {name!r} (cron {cron!r}) must decorate a registered task: "
                f"put @schedule_task above @register_task() (or above Django's @task), not below it"
            )
        register_schedule(
            Schedule(
                name=name if name is not None else task.name,
                task=task,
                cron=cron,
                args=tuple(args) if isinstance(args, list) else args,  # other types: refused by validate()
                kwargs=kwargs if kwargs is not None else {},
                run_on_creation=run_on_creation,
                catch_up=catch_up,
                datetime_kwarg=datetime_kwarg,
                queue_name=queue,
                timezone=timezone,
            )
        )
        return obj

    return decorator
