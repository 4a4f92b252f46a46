"""Flow control, the public side: pause and resume queues, and what the limits are doing now.

The limits themselves are settings (``TOOSIMPLEQ_QUEUES``) and task options (``@register_task(
concurrency=..., concurrency_key=..., rate_limit=...)``); the worker enforces them in its claims (see
``engine.flow`` and docs/tasks.md, "Flow control").
"""

from __future__ import annotations

import datetime
from dataclasses import asdict, dataclass
from typing import Any

from django.db.models import Count
from django.utils import timezone

from . import validation
from .conf import queue_database
from .engine import get_engine
from .engine.flow import queue_scope, task_scope
from .errors import ConfigurationError
from .limits import Limit
from .models import FlowStart, TaskExec
from .registry import flow_limits

__all__ = ["pause_queue", "resume_queue", "paused_queues", "flow_status", "FlowStatus"]


def _checked(queue: str) -> str:
    problem = validation.text_problem(queue)
    if problem:
        raise ConfigurationError(f"Queue name {validation.show(queue)} {problem}")
    return queue


def pause_queue(queue: str, *, using: str | None = None) -> bool:
    """Pause ``queue``: workers stop starting its executions (at once on PostgreSQL with notifications,
    at their next tick elsewhere); running ones finish, and queuing still works. Returns False if it
    was already paused."""
    return get_engine(using).set_paused(_checked(queue), True)


def resume_queue(queue: str, *, using: str | None = None) -> bool:
    """Resume a paused ``queue``; returns False if it was not paused."""
    return get_engine(using).set_paused(_checked(queue), False)


def paused_queues(*, using: str | None = None) -> list[str]:
    """The names of the paused queues."""
    return get_engine(using).read_paused()


@dataclass
class FlowStatus:
    """One limited or paused queue, or one limited task: its limits and what they hold now."""

    kind: str  # "queue" or "task"
    name: str
    concurrency: int | None
    rate_limit: str | None
    #: Whether the limits apply per ``concurrency_key`` (tasks only).
    per_key: bool
    paused: bool
    #: Executions running (PROCESSING) now.
    running: int
    #: Distinct keys with executions running (per-key limits).
    keys_running: int
    #: Starts within the last rate period (None without a rate limit).
    rate_used: int | None
    #: Executions waiting (QUEUED).
    queued: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def flow_status(*, using: str | None = None, now: datetime.datetime | None = None) -> list[FlowStatus]:
    """Every limited or paused queue and every limited task, with its current use (a few small queries)."""
    db = using or queue_database()
    now = now or timezone.now()
    limits = flow_limits()
    paused = set(paused_queues(using=db))
    executions = TaskExec.objects.using(db)
    queue_names = sorted(set(limits.queues) | paused)
    task_limits: dict[str, tuple[Limit, bool]] = {name: (limit, False) for name, limit in limits.tasks.items()}
    task_limits.update({name: (limit, True) for name, limit in limits.keyed.items()})
    running_q = dict(
        executions.filter(state=TaskExec.States.PROCESSING, queue__in=queue_names).values_list("queue").annotate(n=Count("id")).order_by()
    )
    queued_q = dict(
        executions.filter(state=TaskExec.States.QUEUED, queue__in=queue_names).values_list("queue").annotate(n=Count("id")).order_by()
    )
    running_t: dict[str, int] = {}
    keys_t: dict[str, int] = {}
    for name, key, count in (
        executions.filter(state=TaskExec.States.PROCESSING, task_name__in=list(task_limits))
        .values_list("task_name", "concurrency_key")
        .annotate(n=Count("id"))
        .order_by()
    ):
        running_t[name] = running_t.get(name, 0) + count
        keys_t[name] = keys_t.get(name, 0) + 1
    queued_t = dict(
        executions.filter(state=TaskExec.States.QUEUED, task_name__in=list(task_limits))
        .values_list("task_name")
        .annotate(n=Count("id"))
        .order_by()
    )

    def rate_used(scope: str, limit: Limit | None) -> int | None:
        if limit is None or limit.rate is None:
            return None
        since = now - datetime.timedelta(seconds=limit.rate.period)
        return FlowStart.objects.using(db).filter(scope=scope, at__gt=since).count()

    statuses = []
    for name in queue_names:
        limit = limits.queues.get(name) or Limit()
        statuses.append(
            FlowStatus(
                kind="queue",
                name=name,
                concurrency=limit.concurrency,
                rate_limit=limit.rate.text if limit.rate else None,
                per_key=False,
                paused=name in paused,
                running=running_q.get(name, 0),
                keys_running=0,
                rate_used=rate_used(queue_scope(name), limit),
                queued=queued_q.get(name, 0),
            )
        )
    for name, (limit, per_key) in sorted(task_limits.items()):
        statuses.append(
            FlowStatus(
                kind="task",
                name=name,
                concurrency=limit.concurrency,
                rate_limit=limit.rate.text if limit.rate else None,
                per_key=per_key,
                paused=False,
                running=running_t.get(name, 0),
                keys_running=keys_t.get(name, 0) if per_key else 0,
                rate_used=rate_used(task_scope(name), limit),
                queued=queued_t.get(name, 0),
            )
        )
    return statuses

