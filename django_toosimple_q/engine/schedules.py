"""The statements behind schedules: one row per schedule, advanced by a conditional UPDATE."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Callable, Iterable, Sequence, TypeVar

from django.db import IntegrityError, transaction

from ..models import ScheduleExec, TaskExec

T = TypeVar("T")


class ScheduleStatements:
    """Mixed into ``Engine``: uses its ``db``, ``retrying`` and ``insert``."""

    if TYPE_CHECKING:  # provided by Engine
        db: str

        def retrying(self, operation: Callable[[], T], attempts: int = 50) -> T: ...
        def insert(self, execution: TaskExec) -> TaskExec: ...
        def insert_many(self, executions: Sequence[TaskExec]) -> list[TaskExec]: ...

    # -- schedules ---------------------------------------------------------------------------------

    def schedule_rows(self, names: Iterable[str]) -> dict[str, ScheduleExec]:
        return self.retrying(
            lambda: {row.name: row for row in ScheduleExec.objects.using(self.db).filter(name__in=list(names))}
        )

    def ensure_schedule_row(self, name: str, last_due: datetime.datetime | None) -> ScheduleExec:
        """The row of schedule ``name``, inserted with ``last_due`` if it has none yet; if another
        worker inserts it at the same time, theirs is returned (the unique name arbitrates)."""

        def transact() -> ScheduleExec:
            row = ScheduleExec.objects.using(self.db).filter(name=name).first()
            if row is not None:
                return row
            try:
                with transaction.atomic(using=self.db):
                    return ScheduleExec.objects.using(self.db).create(name=name, last_due=last_due)
            except IntegrityError:
                return ScheduleExec.objects.using(self.db).get(name=name)

        return self.retrying(transact)

    def reactivate_schedules(self, names: Iterable[str]) -> int:
        """Rows marked INVALID whose schedule is back in the code become ACTIVE (history kept)."""
        return self.retrying(
            lambda: ScheduleExec.objects.using(self.db)
            .filter(name__in=list(names), state=ScheduleExec.States.INVALID)
            .update(state=ScheduleExec.States.ACTIVE)
        )

    def advance_schedule(
        self,
        name: str,
        last_due: datetime.datetime | None,
        new_last_due: datetime.datetime,
        executions: list[TaskExec],
    ) -> list[TaskExec] | None:
        """Move schedule ``name`` from ``last_due`` to ``new_last_due`` and insert ``executions``, in
        one transaction; None (nothing written) if another worker moved it first.

        The conditional UPDATE is the arbiter between workers: it only matches the ``last_due`` this
        worker read, and the row lock it takes is held until commit, so a concurrent worker's UPDATE
        waits, then matches nothing. Each occurrence is therefore queued exactly once.
        """

        def transact() -> list[TaskExec] | None:
            with transaction.atomic(using=self.db):
                rows = ScheduleExec.objects.using(self.db).filter(name=name)
                rows = rows.filter(last_due__isnull=True) if last_due is None else rows.filter(last_due=last_due)
                if not rows.update(last_due=new_last_due, state=ScheduleExec.States.ACTIVE):
                    return None
                saved = self.insert_many(executions)
                if saved:
                    ScheduleExec.objects.using(self.db).filter(name=name).update(last_task=saved[-1])
                return saved

        return self.retrying(transact)

    def record_schedule_run(self, name: str, execution: TaskExec, first_last_due: datetime.datetime) -> TaskExec:
        """Insert ``execution`` as an on-demand run of schedule ``name``; its cron timeline
        (``last_due``) is untouched, or starts at ``first_last_due`` if the schedule has no row yet."""
        self.ensure_schedule_row(name, first_last_due)

        def transact() -> TaskExec:
            with transaction.atomic(using=self.db):
                saved = self.insert(execution)
                ScheduleExec.objects.using(self.db).filter(name=name).update(last_task=saved)
                return saved

        return self.retrying(transact)

    def invalidate_unknown_schedules(self, known: Iterable[str]) -> int:
        """Mark INVALID the schedule rows that no online worker has in its code."""
        return self.retrying(
            lambda: ScheduleExec.objects.using(self.db)
            .filter(state=ScheduleExec.States.ACTIVE)
            .exclude(name__in=list(known))
            .update(state=ScheduleExec.States.INVALID)
        )
