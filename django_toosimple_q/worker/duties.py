"""The worker's periodic duties, run by its main thread between claims: the heartbeat, waking sleeping
executions, rescuing those of dead workers, and (every minute) the housekeeping."""

from __future__ import annotations

import datetime
import logging
import threading
import time

from django.utils import timezone

from .. import conf
from ..engine import Engine
from ..engine.totals import FOLD_MARGIN
from ..models import WorkerStatus
from ..registry import schedules_registry, tasks_registry
from .scheduler import Scheduler

logger = logging.getLogger("django_toosimple_q.worker")

#: Seconds between housekeeping rounds (unknown tasks, stopped workers' leftovers, retention).
HOUSEKEEPING_INTERVAL = 60.0


class Duties:
    def __init__(
        self,
        engine: Engine,
        tick: float,
        timeout: float,
        scheduler: Scheduler | None,
        stopping: threading.Event,
    ):
        self.engine = engine
        self.tick = tick
        self.timeout = timeout
        self.scheduler = scheduler
        self._stopping = stopping
        self.status: WorkerStatus  # set by registered(), before any duty runs
        #: The worker's listener, if any: each tick's transaction carries its ping when one is due.
        self.listener = None
        #: Set (by the listener) when the next sleeping execution may be due sooner than we think.
        self.reread_sleeping = threading.Event()
        self._last_heartbeat: datetime.datetime  # set by registered()
        self._due: datetime.datetime | None = None  # None: at the first pass
        self._last_housekeeping: datetime.datetime | None = None

    def registered(self, status: WorkerStatus, now: datetime.datetime) -> None:
        self.status = status
        self._last_heartbeat = now

    # -- when ----------------------------------------------------------------------------------------

    def due(self, now: datetime.datetime) -> bool:
        return self._due is None or now >= self._due or self.reread_sleeping.is_set()

    def seconds_until_due(self) -> float:
        return (self._due - timezone.now()).total_seconds() if self._due is not None else 0.0

    def heartbeat_interval(self) -> float:
        return min(self.tick, self.timeout / 4)

    def seconds_until_heartbeat(self) -> float:
        elapsed = (timezone.now() - self._last_heartbeat).total_seconds()
        return max(self.heartbeat_interval() - elapsed, 0.0)

    def seconds_until_schedule(self) -> float:
        """Until the next occurrence of a schedule: a long tick must not make it late."""
        next_due = self.scheduler.next_wake_up() if self.scheduler else None
        if next_due is None:
            return float("inf")
        return max((next_due - timezone.now()).total_seconds(), 0.0)

    # -- what --------------------------------------------------------------------------------------

    def heartbeat_if_due(self, now: datetime.datetime) -> None:
        if (now - self._last_heartbeat).total_seconds() >= self.heartbeat_interval():
            self.engine.heartbeat(self.status, now)
            self._last_heartbeat = now

    def run(self, now: datetime.datetime) -> None:
        """Once per tick: heartbeat, wake due sleeping executions and rescue those of dead workers;
        every ``HOUSEKEEPING_INTERVAL`` at most, the housekeeping (see ``housekeeping``)."""
        self.reread_sleeping.clear()
        ping = self.listener.ping_due(time.monotonic()) if self.listener is not None else None
        next_sleeping, live = self.engine.tick(self.status, now, ping)
        if ping is not None:
            self.listener.ping_sent(ping, time.monotonic())
        self._last_heartbeat = now
        self._due = now + datetime.timedelta(seconds=self.tick)
        if next_sleeping is not None:
            self._due = min(self._due, next_sleeping)
        dead = [w.pk for w in live if not w.is_fresh(now) and w.pk != self.status.pk]
        last = self._last_housekeeping
        housekeeping = last is None or (now - last).total_seconds() >= max(self.tick, HOUSEKEEPING_INTERVAL)
        self.rescue(now, dead, include_stopped=housekeeping)
        if housekeeping:
            self._last_housekeeping = now
            self.housekeeping(now, live)

    def rescue(self, now: datetime.datetime, dead: list[int], include_stopped: bool) -> None:
        for orphan in self.engine.orphans(dead, include_stopped):
            # A worker that stopped responding died holding it (its crash budget pays); one that
            # recorded its exit only failed to give it back.
            replacement = self.engine.interrupt(
                orphan,
                f"Interrupted: its worker (#{orphan.worker_id}) stopped or stopped responding.",
                now,
                crashed=orphan.worker_id in dead,
            )
            if replacement is not None:
                logger.warning(
                    "Rescued %s #%s from a dead worker: replaced by #%s", orphan.task_name, orphan.pk, replacement.pk
                )

    def housekeeping(self, now: datetime.datetime, live: list[WorkerStatus]) -> None:
        """Move the metrics' totals forward; invalidate executions of tasks that no online worker knows;
        delete old finished ones; the schedules' rows (unknown ones invalidated, changes made elsewhere read)."""
        # The metrics' totals: executions finished a few minutes ago and before are counted there.
        self.engine.fold_totals(now - FOLD_MARGIN)
        online = [worker for worker in live if worker.is_fresh(now)]
        grace = conf.unknown_task_grace()
        known = set(tasks_registry).union(*(worker.tasks or [] for worker in online))
        count = self.engine.invalidate_unknown(known, now - datetime.timedelta(seconds=grace), now)
        if count:
            logger.warning("Marked %s execution(s) INVALID: no online worker has their task registered", count)
        keep = conf.delete_finished_after()
        if keep is not None:
            # Small batches, for at most about a second per housekeeping round.
            deadline = time.monotonic() + 1.0
            deleted, batch = 0, -1
            while time.monotonic() < deadline and not self._stopping.is_set():
                batch = self.engine.prune(now - keep)
                deleted += batch
                if batch == 0:
                    break
            if batch == 0:
                self.engine.prune_workers(now - keep)
            if deleted:
                logger.info("Deleted %s execution(s) finished more than %s ago", deleted, keep)
        if self.scheduler:
            # Rolling deploys: a schedule missing from this worker's code may be in an older one's.
            known_schedules = set(schedules_registry).union(*(worker.schedules or [] for worker in online))
            self.scheduler.invalidate_unknown(known_schedules)
            # Also the first pass's reading of the schedules' rows; later, it picks up outside changes.
            self.scheduler.refresh(now)
