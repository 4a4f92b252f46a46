"""Read-only figures about the queue, shared by the admin dashboard and ``manage.py toosimpleq_status``.

Every query here is bounded by an index (see the indexes on ``TaskExec``) so that it stays fast
with millions of finished executions: counts per state read the ``(state, finished)`` index only,
waiting rows are found by state, and the throughput chart reads a time window of that index.
The totals of finished executions (``finished_totals``, for the metrics) read the totals kept by
the engine plus the last few minutes of that index (see ``engine.totals``).
"""

from __future__ import annotations

import datetime
from dataclasses import asdict, dataclass, field
from typing import Any

from django.db import transaction
from django.db.models import Count, Func, IntegerField, Min
from django.utils import timezone

from .engine import get_engine
from .engine.totals import Aggregate
from .models import ScheduleExec, TaskExec, WorkerStatus
from .registry import schedules_registry
from .schedules import to_aware

States = TaskExec.States


class MinuteNumber(Func):
    """Whole minutes since the Unix epoch (UTC) of a datetime column, computed by the database.

    Native date arithmetic on each vendor: no per-row Python function (as Django's Trunc needs on
    SQLite), so bucketing a window of many rows stays cheap.
    """

    output_field = IntegerField()

    def as_sql(self, compiler, connection, **extra):  # PostgreSQL
        return super().as_sql(
            compiler, connection, template="CAST(FLOOR(EXTRACT(EPOCH FROM %(expressions)s) / 60) AS BIGINT)", **extra
        )

    def as_sqlite(self, compiler, connection, **extra):
        # ``%%%%s`` becomes ``%%s`` here and ``%s`` (strftime's "seconds since epoch") once the
        # backend has replaced its placeholders.
        return super().as_sql(
            compiler, connection, template="(CAST(strftime('%%%%s', %(expressions)s) AS INTEGER) / 60)", **extra
        )

    def as_mysql(self, compiler, connection, **extra):
        # Django stores UTC in DATETIME columns: count from the epoch in the same naive terms.
        return super().as_sql(
            compiler,
            connection,
            template="(TIMESTAMPDIFF(SECOND, '1970-01-01 00:00:00', %(expressions)s) DIV 60)",
            **extra,
        )


@dataclass
class QueueStats:
    queue: str
    queued: int = 0
    sleeping: int = 0
    processing: int = 0
    #: Workflow steps waiting for their upstream steps (never claimed until released).
    waiting: int = 0
    #: Executions whose due time has passed and that no worker took yet (QUEUED, or SLEEPING not yet woken).
    ready: int = 0
    #: Seconds the oldest ready execution has been waiting past its due time (0 when none waits).
    oldest_wait: float = 0.0


@dataclass
class WorkerInfo:
    id: int
    label: str
    host: str
    pid: int | None
    queues: list[str]
    excluded_queues: list[str]
    started: str
    last_seen: str
    #: True: the worker's listener proves that notifications arrive; False: it polls every tick.
    receives_notifications: bool = False


@dataclass
class Snapshot:
    now: str
    states: dict[str, int]
    total: int
    queues: list[QueueStats]
    #: Calls that finally failed in the last 24 hours (no retry left, not requeued).
    failures_24h: int
    workers_online: list[WorkerInfo] = field(default_factory=list)
    #: Failed attempts of the last 24 hours that were retried (or requeued): their call went on.
    retried_failures_24h: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def oldest_wait(self) -> float:
        return max((q.oldest_wait for q in self.queues), default=0.0)


def objects(using: str | None = None):
    return TaskExec.objects.using(using)


def state_counts(using: str | None = None) -> dict[str, int]:
    """Executions per state (every state present, zero when none)."""
    counts = {state: 0 for state in States.values}
    rows = objects(using).order_by().values_list("state").annotate(n=Count("*"))
    for state, n in rows:
        counts[state] = n
    return counts


def queue_stats(now: datetime.datetime | None = None, using: str | None = None) -> list[QueueStats]:
    """Depth of each queue that has waiting or running executions, and how long the oldest waits."""
    now = now or timezone.now()
    by_queue: dict[str, QueueStats] = {}
    active = [States.QUEUED, States.SLEEPING, States.PROCESSING, States.WAITING]
    rows = objects(using).filter(state__in=active).order_by().values_list("queue", "state").annotate(n=Count("*"))
    for queue, state, n in rows:
        stats = by_queue.setdefault(queue, QueueStats(queue))
        setattr(stats, state.lower(), n)
    ready = (
        objects(using)
        .filter(state__in=States.waiting(), due__lte=now)
        .order_by()
        .values_list("queue")
        .annotate(n=Count("*"), oldest=Min("due"))
    )
    for queue, n, oldest in ready:
        stats = by_queue.setdefault(queue, QueueStats(queue))
        stats.ready = n
        stats.oldest_wait = max(0.0, (now - oldest).total_seconds())
    return sorted(by_queue.values(), key=lambda q: q.queue)


def failures_since(since: datetime.datetime, using: str | None = None) -> int:
    """Calls that finally failed since ``since``: FAILED executions nothing replaced (no retry was
    left, nobody requeued them). A failed attempt followed by a retry is counted apart, below."""
    return objects(using).filter(state=States.FAILED, finished__gte=since, replaced_by__isnull=True).count()


def retried_failures_since(since: datetime.datetime, using: str | None = None) -> int:
    """Failed attempts since ``since`` whose call went on in a retry (or a requeue)."""
    return objects(using).filter(state=States.FAILED, finished__gte=since, replaced_by__isnull=False).count()


@dataclass
class Interval:
    """Executions that finished in ``[start, start + length)``, by outcome."""

    start: datetime.datetime
    succeeded: int = 0
    failed: int = 0


def outcomes_per_interval(
    hours: int, interval_minutes: int, now: datetime.datetime | None = None, using: str | None = None
) -> list[Interval]:
    """Succeeded and failed executions per interval of ``interval_minutes`` over the last ``hours``
    hours, oldest first; intervals are aligned on whole multiples of their length since the epoch."""
    now = now or timezone.now()
    last = int(now.timestamp() // 60) // interval_minutes
    first = last - hours * 60 // interval_minutes + 1
    since = datetime.datetime.fromtimestamp(first * interval_minutes * 60, tz=datetime.timezone.utc)
    intervals = {
        number: Interval(datetime.datetime.fromtimestamp(number * interval_minutes * 60, tz=datetime.timezone.utc))
        for number in range(first, last + 1)
    }
    rows = (
        objects(using)
        .filter(state__in=[States.SUCCEEDED, States.FAILED], finished__gte=since)
        .annotate(minute=MinuteNumber("finished"))
        .order_by()
        .values_list("minute", "state")
        .annotate(n=Count("*"))
    )
    for minute, state, n in rows:
        interval = intervals.get(int(minute) // interval_minutes)
        if interval is None:  # finished after ``now`` (clocks of several hosts)
            continue
        if state == States.SUCCEEDED:
            interval.succeeded += n
        else:
            interval.failed += n
    return list(intervals.values())


def finished_per_minute(
    minutes: int, now: datetime.datetime | None = None, using: str | None = None
) -> list[tuple[datetime.datetime, int]]:
    """``(minute start, executions finished in it)`` for the last ``minutes`` minutes, oldest first."""
    now = now or timezone.now()
    last = int(now.timestamp() // 60)
    first = last - minutes + 1
    since = datetime.datetime.fromtimestamp(first * 60, tz=datetime.timezone.utc)
    rows = (
        objects(using)
        .filter(state__in=States.finished(), finished__gte=since)
        .annotate(minute=MinuteNumber("finished"))
        .order_by()
        .values_list("minute")
        .annotate(n=Count("*"))
    )
    counts = {int(minute): n for minute, n in rows}
    return [
        (datetime.datetime.fromtimestamp(m * 60, tz=datetime.timezone.utc), counts.get(m, 0))
        for m in range(first, last + 1)
    ]


def online_workers(now: datetime.datetime | None = None, using: str | None = None) -> list[WorkerStatus]:
    return list(WorkerStatus.online(now, using=using).order_by("label", "id"))


def snapshot(now: datetime.datetime | None = None, using: str | None = None) -> Snapshot:
    """Everything ``toosimpleq_status`` prints, in one object."""
    now = now or timezone.now()
    since = now - datetime.timedelta(hours=24)
    states = state_counts(using)
    workers = [
        WorkerInfo(
            id=w.pk,
            label=w.label,
            host=w.host,
            pid=w.pid,
            queues=list(w.queues or []),
            excluded_queues=list(w.excluded_queues or []),
            started=w.started.isoformat(),
            last_seen=w.last_seen.isoformat(),
            receives_notifications=w.receives_notifications,
        )
        for w in online_workers(now, using)
    ]
    return Snapshot(
        now=now.isoformat(),
        states=states,
        total=sum(states.values()),
        queues=queue_stats(now, using),
        failures_24h=failures_since(since, using),
        workers_online=workers,
        retried_failures_24h=retried_failures_since(since, using),
    )


def finished_totals(using: str | None = None) -> list[Aggregate]:
    """Every execution that ever finished, per task and final state, with its run time and pick-up
    latency buckets: the totals the engine keeps plus what finished since their mark. Monotonic:
    pruning old executions does not lower them (see ``engine.totals``)."""
    engine = get_engine(using)
    # One transaction: the rows counted since the mark are those the totals read do not hold.
    with transaction.atomic(using=engine.db):
        kept, mark = engine.read_totals()
        recent = engine.finished_aggregates(mark, None)
    merged: dict[tuple[str, str], Aggregate] = {}
    for aggregate in [*kept, *recent]:
        key = (aggregate.task_name, aggregate.state)
        if key in merged:
            merged[key].add(aggregate)
        else:
            merged[key] = Aggregate(aggregate.task_name, aggregate.state)
            merged[key].add(aggregate)
    return sorted(merged.values(), key=lambda a: (a.task_name, a.state))


def worker_counts(now: datetime.datetime | None = None, using: str | None = None) -> dict[str, int]:
    """Workers running (no exit recorded) by state: ``ONLINE`` (heartbeat fresh) or ``TIMEDOUT``."""
    now = now or timezone.now()
    counts: dict[str, int] = {WorkerStatus.States.ONLINE: 0, WorkerStatus.States.TIMEDOUT: 0}
    for worker in WorkerStatus.objects.using(using).filter(stopped__isnull=True).only("last_seen", "timeout"):
        counts[WorkerStatus.States.ONLINE if worker.is_fresh(now) else WorkerStatus.States.TIMEDOUT] += 1
    return counts


def schedule_lags(now: datetime.datetime | None = None, using: str | None = None) -> dict[str, float]:
    """Per active schedule known to this process: seconds since its next occurrence came due without
    being queued yet (0 when none is overdue). A worker queues an occurrence within a tick of it: a
    lag growing past that means no worker runs the schedule."""
    now = now or timezone.now()
    lags = {}
    rows = ScheduleExec.objects.using(using).filter(state=ScheduleExec.States.ACTIVE)
    for name, last_due in rows.values_list("name", "last_due"):
        schedule = schedules_registry.get(name)
        if schedule is None:
            continue
        due = schedule.next_due(to_aware(last_due), now)
        lags[name] = max((now - due).total_seconds(), 0.0) if due is not None else 0.0
    return lags
