"""Flow control inside the claim: concurrency limits, rate limits and paused queues.

Only claims of *limited* work come here (``Engine.claim`` sends the rest down the unchanged fast
path). Such a claim, in the claim's transaction:

1. locks the ``toosimpleq_flowscope`` rows of the limited queues and tasks it serves (``FOR UPDATE``
   in id order on PostgreSQL and MariaDB; on SQLite a write, which takes the database's write lock):
   limited claims of the same scopes run one at a time, everything else is untouched;
2. reads the database's clock, counts the PROCESSING executions of each limited queue, task and key
   (a dead worker's executions stop counting when they are rescued), and, for rate limits, the start
   times of the last period (``toosimpleq_flowstart``, older ones deleted);
3. walks the QUEUED executions of those scopes in claim order, skipping (in SQL) the queues, tasks and
   keys already full, and takes each one whose scopes all have room;
4. marks them PROCESSING with the database's time as ``started`` and records their start times.

See docs/architecture.md, "Flow control".
"""

from __future__ import annotations

import datetime
import math
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from django.db import transaction
from django.db.models import Count, F, Min, Q
from django.utils import timezone

from ..limits import FlowLimits, Limit
from ..models import FlowScope, FlowStart, TaskExec, WorkerStatus

if TYPE_CHECKING:
    from .base import Selection

States = TaskExec.States
T = TypeVar("T")
#: Start times are kept this long after they leave their rate's period (for the status and metrics:
#: starts per period as they were), then deleted by the next claims of their scope.
FLOW_START_RETENTION = datetime.timedelta(seconds=60)
#: The payload prefix of a pause or resume on the triggers' channel (PostgreSQL).
FLOW_PAYLOAD = "flow "


def queue_scope(name: str) -> str:
    return f"queue:{name}"


def task_scope(name: str) -> str:
    return f"task:{name}"


class FlowStatements:
    """Mixed into ``Engine``: uses its ``db``, ``connection``, ``objects`` and ``retrying``."""

    if TYPE_CHECKING:  # provided by Engine
        db: str
        connection: Any

        def objects(self) -> Any: ...
        def retrying(self, operation: Callable[[], T], attempts: int = 50) -> T: ...

    #: The queues paused at the last ``read_paused()`` (each tick, and on a notification).
    paused_queues: list[str] = []
    #: After a claim held executions back for a rate limit: seconds until a start frees up (measured on
    #: the database's clock, so a worker's clock skew does not matter).
    flow_retry_after: float | None = None
    #: Whether the last limited claim found a scope full (limited work may be waiting for a slot).
    flow_held: bool = False

    # -- the database's clock ----------------------------------------------------------------------

    def db_now(self) -> datetime.datetime:
        """The database's current time (SQLite: the clock of this host, where the database lives)."""
        vendor = self.connection.vendor
        if vendor == "sqlite":
            return timezone.now()
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT clock_timestamp()" if vendor == "postgresql" else "SELECT UTC_TIMESTAMP(6)")
            value = cursor.fetchone()[0]
        if timezone.is_naive(value):
            value = value.replace(tzinfo=datetime.timezone.utc)
        return value

    # -- paused queues -----------------------------------------------------------------------------

    def read_paused(self) -> list[str]:
        """The paused queues (also kept in ``paused_queues``)."""
        scopes = FlowScope.objects.using(self.db).filter(paused=True, scope__startswith="queue:")
        self.paused_queues = sorted(scope[len("queue:") :] for scope in scopes.values_list("scope", flat=True))
        return self.paused_queues

    def set_paused(self, queue: str, paused: bool) -> bool:
        """Pause or resume ``queue``; returns whether that changed anything. On PostgreSQL, workers are
        notified at the commit; elsewhere they read it at their next tick. Limited claims read it under
        the row's lock, so they never claim from a queue paused before their transaction."""

        def transact() -> bool:
            with transaction.atomic(using=self.db):
                scopes = FlowScope.objects.using(self.db)
                scope = queue_scope(queue)
                changed = scopes.filter(scope=scope).exclude(paused=paused).update(
                    paused=paused, paused_at=timezone.now() if paused else None
                )
                if not changed and paused and not scopes.filter(scope=scope).exists():
                    scopes.bulk_create([FlowScope(scope=scope, paused=True, paused_at=timezone.now())], ignore_conflicts=True)
                    changed = scopes.filter(scope=scope, paused=True).exists()
                if changed and self.connection.vendor == "postgresql":
                    with self.connection.cursor() as cursor:
                        cursor.execute("SELECT pg_notify('toosimpleq', %s)", [FLOW_PAYLOAD + queue])
                return bool(changed)

        return self.retrying(transact)

    # -- the claim of limited work -------------------------------------------------------------------

    def _lock_scopes(self, scopes: list[str]) -> dict[str, bool]:
        """Lock the rows of ``scopes`` (creating those missing) for the transaction; returns whether each
        is paused."""
        rows = self._locked(scopes)
        if len(rows) < len(scopes):
            FlowScope.objects.using(self.db).bulk_create(
                [FlowScope(scope=scope) for scope in scopes if scope not in rows], ignore_conflicts=True
            )
            rows = self._locked(scopes)
        return rows

    def _locked(self, scopes: list[str]) -> dict[str, bool]:
        rows = FlowScope.objects.using(self.db).filter(scope__in=scopes)
        if self.connection.vendor == "sqlite":
            rows.update(paused=F("paused"))  # a write: SQLite's write lock, held until the commit
            return dict(rows.values_list("scope", "paused"))
        return {row.scope: row.paused for row in rows.order_by("id").select_for_update()}

    def claim_limited(self, worker: WorkerStatus, selection: Selection, limit: int) -> list[TaskExec]:
        """Claim up to ``limit`` executions of the limited queues and tasks of ``selection``, within
        their limits (run inside the claim's transaction)."""
        limits = selection.limits
        self.flow_held = False
        if limit <= 0 or not limits:
            return []
        queues = [name for name in limits.queues if selection.serves(name)]
        tasks = [name for name in limits.limited_tasks if name in selection.task_set]
        if not queues and not tasks:
            return []
        paused = self._lock_scopes([queue_scope(q) for q in queues] + [task_scope(t) for t in tasks])
        open_queues = [q for q in queues if not paused.get(queue_scope(q))]
        now = self.db_now()
        room = Room(limits, now, selection.limited_max)
        processing = self.objects().filter(state=States.PROCESSING)
        if open_queues:
            room.running_queue.update(
                dict(processing.filter(queue__in=open_queues).values_list("queue").annotate(n=Count("id")).order_by())
            )
        if tasks:
            for name, key, count in (
                processing.filter(task_name__in=tasks)
                .values_list("task_name", "concurrency_key")
                .annotate(n=Count("id"))
                .order_by()
            ):
                room.running_task[name] += count
                room.running_key[(name, key or "")] += count
        rated = room.rated_scopes(open_queues, tasks)
        if rated:
            starts = FlowStart.objects.using(self.db)
            for scope, rate in rated.items():
                since = now - datetime.timedelta(seconds=rate.period)
                starts.filter(scope=scope, at__lte=since - FLOW_START_RETENTION).delete()
                for key, count, oldest in (
                    starts.filter(scope=scope, at__gt=since).values_list("key").annotate(n=Count("id"), first=Min("at")).order_by()
                ):
                    room.started[(scope, key)] = count
                    room.oldest[(scope, key)] = oldest

        limited_queues = set(queues)
        taken: list[TaskExec] = []
        batch = limit * 2 + 20
        for _ in range(4):
            rows = self._flow_candidates(selection, room, open_queues, tasks, limited_queues, taken, batch)
            for execution in rows:
                if room.take(execution, execution.queue in limited_queues):
                    taken.append(execution)
                    if len(taken) >= limit:
                        break
            if len(taken) >= limit or len(rows) < batch:
                break
        retry_at = room.retry_at()
        self.flow_retry_after = max((retry_at - now).total_seconds(), 0.0) if retry_at is not None else None
        self.flow_held = (
            room.held
            or any(room.queue_room(q) <= 0 for q in open_queues)
            or any(room.task_room(t) <= 0 for t in tasks)
            or bool(room.closed_keys())
        )
        if not taken:
            return []
        ids = [e.pk for e in taken]
        updated = self.objects().filter(pk__in=ids, state=States.QUEUED).update(
            state=States.PROCESSING, started=now, worker_id=worker.pk, unique_key=None
        )
        if updated != len(ids):  # locked rows cannot change; read back what was taken all the same
            taken = list(self.objects().filter(pk__in=ids, state=States.PROCESSING, worker_id=worker.pk, started=now))
        for execution in taken:
            execution.state, execution.started, execution.worker_id, execution.unique_key = (
                States.PROCESSING,
                now,
                worker.pk,
                None,
            )
        self._taken_by_flow([e.pk for e in taken])
        logs = [FlowStart(scope=scope, key=key, at=now) for execution in taken for scope, key in room.rated_of(execution)]
        if logs:
            FlowStart.objects.using(self.db).bulk_create(logs)
        return taken

    def _taken_by_flow(self, ids: list[int]) -> None:
        """Hook: the executions ``ids`` were claimed by ``claim_limited`` (PostgreSQL drops their ready rows)."""

    def _flow_candidates(
        self,
        selection: Selection,
        room: Room,
        queues: list[str],
        tasks: list[str],
        limited_queues: set[str],
        taken: list[TaskExec],
        batch: int,
    ) -> list[TaskExec]:
        """The next QUEUED executions of the limited scopes in claim order, without those of full queues,
        tasks and keys (and those already taken), locked (skipping rows another transaction holds)."""
        open_queues = [q for q in queues if room.queue_room(q) > 0]
        open_tasks = [t for t in tasks if room.task_room(t) > 0]
        if not open_queues and not open_tasks:
            return []
        rows = self.objects().filter(state=States.QUEUED, task_name__in=selection.task_names)
        if selection.queues:
            rows = rows.filter(queue__in=selection.queues)
        excluded = [*selection.excluded_queues, *selection.paused, *(limited_queues - set(open_queues))]
        if excluded:
            rows = rows.exclude(queue__in=excluded)
        # In a limited queue with room, or (in another queue) of a limited task with room.
        rows = rows.filter(Q(queue__in=open_queues) | Q(task_name__in=open_tasks))
        closed_tasks = [t for t in tasks if room.task_room(t) <= 0]
        if closed_tasks:
            rows = rows.exclude(task_name__in=closed_tasks)
        for name, keys in room.closed_keys().items():
            rows = rows.exclude(task_name=name, concurrency_key__in=keys)
        if taken:
            rows = rows.exclude(pk__in=[e.pk for e in taken])
        rows = rows.order_by("-priority", "due", "id")
        if self.connection.features.has_select_for_update_skip_locked:
            rows = rows.select_for_update(skip_locked=True)
        return list(rows[:batch])


class Room:
    """What each limited scope may still take in this claim."""

    def __init__(self, limits: FlowLimits, now: datetime.datetime, slots: int | None = None):
        self.limits = limits
        self.now = now
        #: How many more executions under a concurrency limit this claim may take (idle threads).
        self.slots = math.inf if slots is None else slots
        self.running_queue: Counter[str] = Counter()
        self.running_task: Counter[str] = Counter()
        self.running_key: Counter[tuple[str, str]] = Counter()
        #: Starts within the current period, per (scope, key) of a rate limit.
        self.started: Counter[tuple[str, str]] = Counter()
        self.oldest: dict[tuple[str, str], datetime.datetime] = {}
        #: (scope, key) held back by their rate limit in this claim.
        self.rate_held: set[tuple[str, str]] = set()
        #: Whether an execution was passed over for want of room.
        self.held = False

    def rated_scopes(self, queues: list[str], tasks: list[str]) -> dict[str, Any]:
        rated = {queue_scope(q): self.limits.queues[q].rate for q in queues if self.limits.queues[q].rate}
        for name in tasks:
            limit = self.limits.tasks.get(name) or self.limits.keyed.get(name)
            if limit is not None and limit.rate:
                rated[task_scope(name)] = limit.rate
        return rated

    @staticmethod
    def _free(limit: Limit | None, running: int, started: int) -> float:
        if limit is None:
            return math.inf
        free = math.inf
        if limit.concurrency is not None:
            free = limit.concurrency - running
        if limit.rate is not None:
            free = min(free, limit.rate.count - started)
        return free

    def queue_room(self, name: str) -> float:
        return self._free(self.limits.queues.get(name), self.running_queue[name], self.started[(queue_scope(name), "")])

    def task_room(self, name: str) -> float:
        return self._free(self.limits.tasks.get(name), self.running_task[name], self.started[(task_scope(name), "")])

    def key_room(self, name: str, key: str) -> float:
        return self._free(self.limits.keyed.get(name), self.running_key[(name, key)], self.started[(task_scope(name), key)])

    def closed_keys(self) -> dict[str, list[str]]:
        closed: dict[str, list[str]] = {}
        keys = set(self.running_key) | {(s[len("task:") :], k) for s, k in self.started if s.startswith("task:")}
        for name, key in sorted(keys):
            if name in self.limits.keyed and self.key_room(name, key) <= 0:
                closed.setdefault(name, []).append(key)
        return closed

    def rated_of(self, execution: TaskExec) -> list[tuple[str, str]]:
        """The (scope, key) whose rate limit this execution's start counts against."""
        rated = []
        limit = self.limits.queues.get(execution.queue)
        if limit is not None and limit.rate:
            rated.append((queue_scope(execution.queue), ""))
        name = execution.task_name
        limit = self.limits.tasks.get(name)
        if limit is not None and limit.rate:
            rated.append((task_scope(name), ""))
        limit = self.limits.keyed.get(name)
        if limit is not None and limit.rate:
            rated.append((task_scope(name), execution.concurrency_key or ""))
        return rated

    def take(self, execution: TaskExec, in_limited_queue: bool) -> bool:
        """Take ``execution`` if every scope it belongs to has room; counts it."""
        name, key = execution.task_name, execution.concurrency_key or ""
        checks = []
        if in_limited_queue:
            checks.append((self.queue_room(execution.queue), (queue_scope(execution.queue), "")))
        if name in self.limits.tasks:
            checks.append((self.task_room(name), (task_scope(name), "")))
        if name in self.limits.keyed:
            checks.append((self.key_room(name, key), (task_scope(name), key)))
        if self.slots <= 0 and self._needs_slot(execution, in_limited_queue):
            return False  # no idle thread for it here: another worker's, or this one's next claim
        for free, scope_key in checks:
            if free <= 0:
                self.held = True
                if self._rate_full(scope_key):
                    self.rate_held.add(scope_key)
                return False
        if in_limited_queue:
            self.running_queue[execution.queue] += 1
        if name in self.limits.tasks:
            self.running_task[name] += 1
        if name in self.limits.keyed:
            self.running_key[(name, key)] += 1
            self.running_task[name] += 1
        for scope_key in self.rated_of(execution):
            self.started[scope_key] += 1
            self.oldest.setdefault(scope_key, self.now)
        if self._needs_slot(execution, in_limited_queue):
            self.slots -= 1
        return True

    def _needs_slot(self, execution: TaskExec, in_limited_queue: bool) -> bool:
        """Whether ``execution`` takes a slot of a concurrency limit."""
        limits = self.limits
        for limit in (
            limits.queues.get(execution.queue) if in_limited_queue else None,
            limits.tasks.get(execution.task_name),
            limits.keyed.get(execution.task_name),
        ):
            if limit is not None and limit.concurrency is not None:
                return True
        return False

    def _rate_full(self, scope_key: tuple[str, str]) -> bool:
        scope, key = scope_key
        kind, _, name = scope.partition(":")
        if kind == "queue":
            limit = self.limits.queues.get(name)
        else:
            limit = self.limits.keyed.get(name) if key or name in self.limits.keyed else self.limits.tasks.get(name)
        return bool(limit and limit.rate and self.started[scope_key] >= limit.rate.count)

    def retry_at(self) -> datetime.datetime | None:
        """When the first start held back by a rate limit (in this claim, or full before it) may happen."""
        times = []
        for scope, key in set(self.rate_held) | {sk for sk in self.started if self._rate_full(sk)}:
            oldest = self.oldest.get((scope, key))
            rate = self._rate_of(scope, key)
            if oldest is not None and rate is not None:
                times.append(oldest + datetime.timedelta(seconds=rate))
        return min(times) if times else None

    def _rate_of(self, scope: str, key: str) -> float | None:
        kind, _, name = scope.partition(":")
        limit = self.limits.queues.get(name) if kind == "queue" else (self.limits.keyed.get(name) or self.limits.tasks.get(name))
        return limit.rate.period if limit is not None and limit.rate is not None else None


__all__ = ["FlowStatements", "FLOW_PAYLOAD", "queue_scope", "task_scope"]
