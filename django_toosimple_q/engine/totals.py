"""Totals of finished executions for the metrics: counted from the database, monotonic across pruning.

The figures per task and final state (how many, run time and pick-up latency histograms) are the
totals kept in ``ExecutionTotal`` for the executions that finished before the *mark*, plus the
executions that finished since, counted at scrape time from the ``(state, finished)`` index. The
worker's housekeeping moves the mark forward (``fold_totals``, up to ``FOLD_MARGIN`` ago), so the
part counted at scrape time stays a few minutes of history; pruning deletes only executions that
finished before the mark, already in the totals: the figures never go down when history is deleted.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from django.db import IntegrityError, transaction
from django.utils import timezone

from ..models import ExecutionTotal, TaskExec

T = TypeVar("T")
States = TaskExec.States

#: Upper bounds, in seconds, of the histogram buckets of run time and pick-up latency.
BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
#: How far behind the present the mark stays: an outcome recorded more than this after the task
#: finished (a database outage while the worker retries, clocks of hosts that far apart) would be
#: missed by the totals. Longer is safer, shorter makes each scrape read fewer rows.
FOLD_MARGIN = datetime.timedelta(minutes=5)


@dataclass
class Aggregate:
    """Finished executions of one task in one final state."""

    task_name: str
    state: str
    executions: int = 0
    #: How many of them started (the others were cancelled or invalidated while waiting): the count
    #: of both histograms.
    started: int = 0
    run_seconds: float = 0.0
    wait_seconds: float = 0.0
    #: Cumulative counts per bucket of ``BUCKETS`` (executions that took at most that long).
    run_buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    wait_buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))

    def add(self, other: Aggregate) -> None:
        self.executions += other.executions
        self.started += other.started
        self.run_seconds += other.run_seconds
        self.wait_seconds += other.wait_seconds
        self.run_buckets = [a + b for a, b in zip(self.run_buckets, other.run_buckets)]
        self.wait_buckets = [a + b for a, b in zip(self.wait_buckets, other.wait_buckets)]


def _buckets(stored: str) -> list[int]:
    """Stored bucket counts, padded (or cut) to the current ``BUCKETS``."""
    try:
        values = [int(v) for v in json.loads(stored)]
    except (ValueError, TypeError):
        values = []
    return (values + [0] * len(BUCKETS))[: len(BUCKETS)]


def _from_row(row: ExecutionTotal) -> Aggregate:
    return Aggregate(
        row.task_name,
        row.state,
        row.executions,
        row.started,
        row.run_seconds,
        row.wait_seconds,
        _buckets(row.run_buckets),
        _buckets(row.wait_buckets),
    )


class Totals:
    """Mixed into ``Engine``: uses its ``db``, ``connection`` and ``retrying``."""

    if TYPE_CHECKING:  # provided by Engine
        db: str
        connection: Any

        def retrying(self, operation: Callable[[], T], attempts: int = 50) -> T: ...

    #: SQL for the seconds from ``{start}`` to ``{end}`` (datetime columns); NULL if either is NULL.
    seconds_between = "((julianday({end}) - julianday({start})) * 86400.0)"

    def _totals(self) -> Any:
        return ExecutionTotal.objects.using(self.db)

    def finished_aggregates(
        self, since: datetime.datetime | None, until: datetime.datetime | None
    ) -> list[Aggregate]:
        """Executions that finished in ``[since, until)`` (None: unbounded), per task and final state,
        counted by the database (a range of the ``(state, finished)`` index per state)."""
        qn = self.connection.ops.quote_name
        table = qn(TaskExec._meta.db_table)
        finished = TaskExec._meta.get_field("finished")
        where = [f"{qn('state')} IN ({', '.join(['%s'] * len(States.finished()))})"]
        params: list[Any] = list(States.finished())
        if since is not None:
            where.append(f"{qn('finished')} >= %s")
            params.append(finished.get_db_prep_value(since, self.connection))
        else:
            where.append(f"{qn('finished')} IS NOT NULL")
        if until is not None:
            where.append(f"{qn('finished')} < %s")
            params.append(finished.get_db_prep_value(until, self.connection))
        run = self.seconds_between.format(start=qn("started"), end=qn("finished"))
        wait = self.seconds_between.format(start=qn("due"), end=qn("started"))

        def bucket(name: str) -> str:
            """The index in ``BUCKETS`` of the first bound holding the value (len(BUCKETS): none)."""
            whens = " ".join(f"WHEN {name} <= {bound!r} THEN {i}" for i, bound in enumerate(BUCKETS))
            return f"CASE WHEN {name} IS NULL THEN NULL {whens} ELSE {len(BUCKETS)} END"

        # One row per task, state and pair of buckets: each execution is classified once (a CASE
        # that stops at its bucket), the cumulative counts are added up here.
        sql = (
            f"SELECT t, s, {bucket('r')}, {bucket('w')}, COUNT(*), COUNT(r), "
            f"SUM(CASE WHEN r > 0 THEN r ELSE 0 END), SUM(CASE WHEN w > 0 THEN w ELSE 0 END) "
            f"FROM (SELECT {qn('task_name')} AS t, {qn('state')} AS s, {run} AS r, {wait} AS w "
            f"FROM {table} WHERE {' AND '.join(where)}) AS f GROUP BY 1, 2, 3, 4"
        )
        with self.connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        found: dict[tuple[str, str], Aggregate] = {}
        for task, state, run_bucket, wait_bucket, count, started, run_sum, wait_sum in rows:
            aggregate = found.get((task, state))
            if aggregate is None:
                aggregate = found[task, state] = Aggregate(task, state)
            aggregate.executions += int(count)
            aggregate.started += int(started)
            aggregate.run_seconds += float(run_sum or 0)
            aggregate.wait_seconds += float(wait_sum or 0)
            # Cumulative: an execution in bucket i counts in every bucket from i on.
            for index, counts in ((run_bucket, aggregate.run_buckets), (wait_bucket, aggregate.wait_buckets)):
                if index is not None:
                    for i in range(int(index), len(BUCKETS)):
                        counts[i] += int(started)
        return list(found.values())

    def read_totals(self) -> tuple[list[Aggregate], datetime.datetime | None]:
        """The totals kept so far, and the mark: they count every execution finished before it."""
        mark: datetime.datetime | None = None
        totals = []
        for row in self._totals().all():
            if row.task_name == "" and row.state == "":
                mark = row.folded_until
            else:
                totals.append(_from_row(row))
        return totals, mark

    def totals_mark(self) -> datetime.datetime | None:
        row = self._totals().filter(task_name="", state="").values_list("folded_until", flat=True).first()
        return row

    def fold_totals(self, until: datetime.datetime) -> bool:
        """Add the executions that finished between the mark and ``until`` to the totals, and move the
        mark to ``until`` (the first time: every execution finished before ``until``). One
        transaction, serialised between workers by the mark's row; returns False when the mark
        already is at or after ``until``."""
        mark = self.totals_mark()
        if mark is not None and mark >= until:
            return False
        # Counted before taking the lock (the first fold reads the whole history: seconds on a large
        # table, during which SQLite would refuse every other writer), used if the mark has not moved.
        counted = (mark, self.finished_aggregates(mark, until))

        def lock_mark() -> bool:
            # An UPDATE first: a row lock on PostgreSQL and MariaDB, the write lock on SQLite, so
            # concurrent folds wait for each other instead of counting the same executions twice.
            return bool(self._totals().filter(task_name="", state="").update(task_name=""))

        def transact() -> bool:
            with transaction.atomic(using=self.db):
                if not lock_mark():
                    try:
                        with transaction.atomic(using=self.db):
                            self._totals().create(task_name="", state="", folded_until=None)
                    except IntegrityError:
                        pass  # another worker created it: its lock, taken below, orders us after it
                    lock_mark()
                since = self.totals_mark()
                if since is not None and since >= until:
                    return False
                rows = {(r.task_name, r.state): r for r in self._totals().exclude(task_name="", state="")}
                aggregates = counted[1] if since == counted[0] else self.finished_aggregates(since, until)
                for new in aggregates:
                    row = rows.get((new.task_name, new.state))
                    if row is None:
                        total = new
                        row = ExecutionTotal(task_name=new.task_name, state=new.state)
                    else:
                        total = _from_row(row)
                        total.add(new)
                    row.executions, row.started = total.executions, total.started
                    row.run_seconds, row.wait_seconds = total.run_seconds, total.wait_seconds
                    row.run_buckets, row.wait_buckets = json.dumps(total.run_buckets), json.dumps(total.wait_buckets)
                    row.save(using=self.db)
                self._totals().filter(task_name="", state="").update(folded_until=until)
                return True

        return self.retrying(transact)

    def fold_before_pruning(self, finished_before: datetime.datetime) -> datetime.datetime:
        """The cutoff to prune with: at most now, and every execution finished before it is in the
        totals (folded now if the housekeeping has not done it yet)."""
        cutoff = min(finished_before, timezone.now())
        self.fold_totals(cutoff)
        return cutoff
