"""MariaDB / MySQL: no UPDATE ... RETURNING, so lock the rows first, then update them."""

from __future__ import annotations

import datetime

from django.db import transaction

from ..models import TaskExec, WorkerStatus
from .base import Engine, Selection, States
from .outcome import Outcome


class MySQLEngine(Engine):
    #: ``INSERT IGNORE`` would also turn other errors into warnings: unique calls are inserted one by
    #: one in savepoints instead.
    insert_ignoring_conflicts = None
    seconds_between = "(TIMESTAMPDIFF(MICROSECOND, {start}, {end}) / 1000000.0)"
    #: The claim locks rows, then updates them: two statements, one transaction.
    claim_is_one_statement = False

    def is_busy_error(self, exc: Exception) -> bool:
        # 1213: deadlock found; 1205: lock wait timeout. Both roll back and are safe to run again.
        code = exc.args[0] if exc.args else None
        return code in (1205, 1213) or super().is_busy_error(exc)

    def finish_many(self, worker: WorkerStatus, outcomes: list[tuple[TaskExec, Outcome]]) -> set[int]:
        """MariaDB has no UPDATE ... RETURNING: one UPDATE per outcome (still one commit for all)."""
        done = {execution.pk for execution, outcome in outcomes if self.finish(execution, worker, outcome)}
        self.announce_finished(done)
        return done

    def _insert_batch(self, batch: list[TaskExec], ignore_conflicts: bool) -> list[TaskExec]:
        if self.connection.features.can_return_rows_from_bulk_insert:  # MariaDB: INSERT ... RETURNING
            return super()._insert_batch(batch, ignore_conflicts)
        # MySQL: one INSERT per row, its id from the cursor.
        for execution in batch:
            execution.save(using=self.db, force_insert=True)
        return batch

    def claim_ready(self, worker: WorkerStatus, selection: Selection, limit: int, now: datetime.datetime) -> list[TaskExec]:
        if limit <= 0 or not selection.task_names:
            return []

        def transact() -> list[TaskExec]:
            with transaction.atomic(using=self.db):
                rows = self.objects().filter(state=States.QUEUED, task_name__in=selection.task_names)
                if selection.queues:
                    rows = rows.filter(queue__in=selection.queues)
                if selection.excluded_queues:
                    rows = rows.exclude(queue__in=selection.excluded_queues)
                claimed = list(rows.order_by("-priority", "due", "id").select_for_update(skip_locked=True)[:limit])
                if claimed:
                    self.objects().filter(pk__in=[e.pk for e in claimed]).update(
                        state=States.PROCESSING, started=now, worker_id=worker.pk, unique_key=None
                    )
                for execution in claimed:
                    execution.state, execution.started, execution.worker_id = States.PROCESSING, now, worker.pk
                    execution.unique_key = None
                return claimed

        return self.retrying(transact)
