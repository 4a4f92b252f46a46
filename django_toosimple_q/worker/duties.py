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
#: Executions deleted per statement by the retention.
PRUNE_BATCH = 1000


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
        #: Whether a housekeeping round ran on its own transactions (the first one does: its first
        #: count of the metrics' totals may read the whole history); later rounds ride in the tick's.
        self._housekept = False
        #: The retention found more to delete than one batch: go on after the tick's transaction.
        self._prune_more = False

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
        last = self._last_housekeeping
        housekeeping = last is None or (now - last).total_seconds() >= max(self.tick, HOUSEKEEPING_INTERVAL)
        if housekeeping:
            self._last_housekeeping = now  # a round that fails is tried again at the next one, not at once
        inside = None
        if housekeeping and self._housekept:
            # In the tick's transaction: an idle worker then commits once per tick, housekeeping included.
            def inside(live: list[WorkerStatus]) -> None:
                self.housekeeping_round(now, live, prune_seconds=0.0)

        next_sleeping, live = self.engine.tick(self.status, now, ping, inside)
        if ping is not None:
            self.listener.ping_sent(ping, time.monotonic())
        self._last_heartbeat = now
        self._due = now + datetime.timedelta(seconds=self.tick)
        if next_sleeping is not None:
            self._due = min(self._due, next_sleeping)
        if housekeeping and inside is None:
            self.housekeeping_round(now, live, prune_seconds=1.0)
            self._housekept = True
        elif not housekeeping:
            self.rescue(now, self._dead(live, now), include_stopped=False)
        if self._prune_more:
            self.prune(now, seconds=1.0)

    def _dead(self, live: list[WorkerStatus], now: datetime.datetime) -> list[int]:
        return [w.pk for w in live if not w.is_fresh(now) and w.pk != self.status.pk]

    def housekeeping_round(self, now: datetime.datetime, live: list[WorkerStatus], prune_seconds: float) -> None:
        """Every ``HOUSEKEEPING_INTERVAL``: rescue from dead and stopped workers, then ``housekeeping``."""
        self.rescue(now, self._dead(live, now), include_stopped=True)
        self.housekeeping(now, live, prune_seconds)

    def prune(self, now: datetime.datetime, seconds: float) -> None:
        """Retention: small batches, for about ``seconds`` (0: one batch; ``_prune_more`` says if more
        is left, for after the tick's transaction)."""
        self._prune_more = False
        keep = conf.delete_finished_after()
        if keep is None:
            return
        deadline = time.monotonic() + seconds
        deleted, batch = 0, -1
        while not self._stopping.is_set():
            batch = self.engine.prune(now - keep, PRUNE_BATCH)
            deleted += batch
            if batch < PRUNE_BATCH or time.monotonic() >= deadline:
                break
        if 0 <= batch < PRUNE_BATCH:  # none left
            self.engine.prune_workers(now - keep)
        else:
            self._prune_more = seconds == 0.0
        if deleted:
            logger.info("Deleted %s execution(s) finished more than %s ago", deleted, keep)

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

    def housekeeping(self, now: datetime.datetime, live: list[WorkerStatus], prune_seconds: float = 1.0) -> None:
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
        self.prune(now, prune_seconds)
        if self.scheduler:
            # Rolling deploys: a schedule missing from this worker's code may be in an older one's.
            known_schedules = set(schedules_registry).union(*(worker.schedules or [] for worker in online))
            self.scheduler.invalidate_unknown(known_schedules)
            # Also the first pass's reading of the schedules' rows; later, it picks up outside changes.
            self.scheduler.refresh(now)
