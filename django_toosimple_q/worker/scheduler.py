"""The worker's scheduler: turns due occurrences of schedules into executions, once each.

Each pass costs no query until a schedule is due: the next due time of each schedule is kept in
memory. When one is due, its ``ScheduleExec`` row is read and moved forward with a conditional
UPDATE in the same transaction as the inserted executions (``Engine.advance_schedule``); the
database, not this cache, decides which worker queues an occurrence.
"""

from __future__ import annotations

import datetime
import logging
from typing import Iterable

from django.conf import settings

from ..engine import Engine
from ..models import ScheduleExec, describe
from ..schedules import Schedule, to_aware, to_db

logger = logging.getLogger("django_toosimple_q.scheduler")

#: Default of ``TOOSIMPLEQ_SCHEDULE_CATCH_UP_MAX``: the most executions one catch-up queues.
CATCH_UP_MAX = 1000


def catch_up_max() -> int:
    return int(getattr(settings, "TOOSIMPLEQ_SCHEDULE_CATCH_UP_MAX", CATCH_UP_MAX))


class Scheduler:
    def __init__(self, engine: Engine, schedules: Iterable[Schedule]):
        self.engine = engine
        self.schedules = {schedule.name: schedule for schedule in schedules}
        self.next_due: dict[str, datetime.datetime | None] = {}

    def refresh(self, now: datetime.datetime) -> None:
        """Read every row (creating missing ones) and recompute next due times. At start-up, then
        from time to time so that changes made elsewhere (e.g. in the admin) are seen."""
        if not self.schedules:
            return
        now = to_aware(now)
        rows = self.engine.schedule_rows(self.schedules)
        if any(row.state == ScheduleExec.States.INVALID for row in rows.values()):
            self.engine.reactivate_schedules(self.schedules)
        for name, schedule in self.schedules.items():
            row = rows.get(name) or self.engine.ensure_schedule_row(name, self._first_last_due(schedule, now))
            self.next_due[name] = schedule.next_due(to_aware(row.last_due), now)

    def next_wake_up(self) -> datetime.datetime | None:
        return min((due for due in self.next_due.values() if due is not None), default=None)

    def run_due(self, now: datetime.datetime) -> None:
        now = to_aware(now)
        for name, due in list(self.next_due.items()):
            if due is not None and due <= now:
                self._fire(self.schedules[name], now)

    # -- one schedule ------------------------------------------------------------------------------

    def _fire(self, schedule: Schedule, now: datetime.datetime) -> None:
        # A lost race means another worker moved the row: read it again (then usually nothing is due).
        for _attempt in range(5):
            row = self.engine.ensure_schedule_row(schedule.name, self._first_last_due(schedule, now))
            last_due = to_aware(row.last_due)
            occurrences = self._missed(schedule, last_due, now)
            if not occurrences:
                self.next_due[schedule.name] = schedule.next_due(last_due, now)
                return
            if last_due is None:  # run_on_creation: now, as its cron's latest occurrence (as in 1.x)
                executions = [schedule.new_exec(schedule.latest_until(now), due=now)]
            else:
                executions = [schedule.new_exec(occurrence) for occurrence in occurrences]
            # The row's own value (not a conversion of it) is what the conditional UPDATE must match.
            saved = self.engine.advance_schedule(schedule.name, row.last_due, to_db(occurrences[-1]), executions)
            if saved is not None:
                self._log_queued(schedule, saved)
                self.next_due[schedule.name] = schedule.next_due(occurrences[-1], now)
                return
        # Not expected (each conflict means another worker made progress); retry soon, not in a busy loop.
        logger.warning("Schedule %s: gave up after repeated conflicts; will try again in a second", schedule.name)
        self.next_due[schedule.name] = now + datetime.timedelta(seconds=1)

    def _log_queued(self, schedule: Schedule, saved: list) -> None:
        first, last = saved[0], saved[-1]
        if len(saved) == 1:
            logger.info(
                "Schedule %s queued %s #%s%s due %s",
                schedule.name,
                first.task_name,
                first.pk,
                describe(tuple(first.args)),
                first.due.isoformat(),
            )
        else:
            logger.info(
                "Schedule %s queued %s executions of %s (#%s to #%s) due %s to %s",
                schedule.name,
                len(saved),
                first.task_name,
                first.pk,
                last.pk,
                first.due.isoformat(),
                last.due.isoformat(),
            )

    def _missed(
        self, schedule: Schedule, last_due: datetime.datetime | None, now: datetime.datetime
    ) -> list[datetime.datetime]:
        """The occurrences to queue now, oldest first."""
        if last_due is None:  # a new schedule with run_on_creation=True
            return [now]
        if schedule.manual:
            return []
        keep = catch_up_max() if schedule.catch_up else 1
        occurrences, left_out = schedule.parsed_cron.latest(last_due, now, keep)
        if left_out and schedule.catch_up:
            logger.warning(
                "Schedule %s missed more than %s occurrences since %s: queuing only the latest %s "
                "(the cap is the TOOSIMPLEQ_SCHEDULE_CATCH_UP_MAX setting)",
                schedule.name,
                keep,
                last_due.isoformat(),
                len(occurrences),
            )
        elif left_out:
            logger.info(
                "Schedule %s missed several occurrences since %s: queuing only the latest (%s); "
                "set catch_up=True to queue each one",
                schedule.name,
                last_due.isoformat(),
                occurrences[-1].isoformat(),
            )
        return occurrences

    def _first_last_due(self, schedule: Schedule, now: datetime.datetime) -> datetime.datetime | None:
        return to_db(schedule.first_last_due(now))

    # -- housekeeping ------------------------------------------------------------------------------

    def invalidate_unknown(self, known: Iterable[str]) -> None:
        """Mark INVALID the rows of schedules that neither this worker nor any online one knows."""
        count = self.engine.invalidate_unknown_schedules(set(known) | set(self.schedules))
        if count:
            logger.warning("Marked %s schedule(s) INVALID: no online worker has them in its code", count)
