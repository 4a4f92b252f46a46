"""Every statement the worker issues, in one place: the form SQLite runs (most of it portable).

Vendor subclasses (PostgreSQL, MariaDB) override only what their database does differently.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, TypeVar

from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError, connections, transaction
from django.db.models import Exists, OuterRef, Q

from django.utils import timezone

from .. import conf
from ..limits import FlowLimits
from ..models import EncodedJSON, StepLink, TaskExec, Workflow, WorkerStatus
from .flow import FlowStatements
from .outcome import Outcome
from .inserts import Inserts
from .schedules import ScheduleStatements
from .totals import Totals
from .workflows import WorkflowStatements

logger = logging.getLogger("django_toosimple_q.engine")
T = TypeVar("T")
States = TaskExec.States


@dataclass
class Selection:
    """Which executions a worker may claim."""

    task_names: list[str]
    queues: list[str]
    excluded_queues: list[str]
    #: Queues paused (as last read by the worker): never claimed.
    paused: list[str] = field(default_factory=list)
    #: The limits this worker enforces (None or empty: none, every claim takes the fast path).
    limits: FlowLimits | None = None
    #: At most this many executions under a concurrency limit per claim (the worker's idle threads:
    #: claimed ahead of its threads, they would hold slots no thread uses). None: no bound but ``limit``.
    limited_max: int | None = None

    @property
    def task_set(self) -> set[str]:
        return set(self.task_names)

    def serves(self, queue: str) -> bool:
        if queue in self.paused:
            return False
        if self.queues:
            return queue in self.queues
        return queue not in self.excluded_queues

    def unlimited(self) -> Selection | None:
        """The part of this selection that is neither limited nor paused (for the fast path), or None
        when nothing is left."""
        limits = self.limits
        if not limits and not self.paused:
            return self
        held = set(self.paused) | (set(limits.queues) if limits else set())
        tasks = set(limits.limited_tasks) if limits else set()
        task_names = [name for name in self.task_names if name not in tasks]
        if not task_names:
            return None
        if self.queues:
            queues = [queue for queue in self.queues if queue not in held]
            if not queues:
                return None
            return Selection(task_names, queues, [])
        return Selection(task_names, [], sorted(set(self.excluded_queues) | held))


#: The partial index of QUEUED rows in claim order (see ``TaskExec.Meta.indexes``).
CLAIM_INDEX = "toosimpleq_claim_idx"


class Engine(Inserts, ScheduleStatements, Totals, FlowStatements, WorkflowStatements):
    """Every statement, in the form SQLite runs; PostgreSQL and MariaDB override what differs."""

    #: True when ``claim()`` is a single statement (atomic without a transaction around it).
    claim_is_one_statement = True

    def __init__(self, db: str):
        self.db = db

    @property
    def connection(self) -> Any:
        return connections[self.db]

    def objects(self) -> Any:
        return TaskExec.objects.using(self.db)

    # -- retrying on transient lock errors ---------------------------------------------------------

    def retrying(self, operation: Callable[[], T], attempts: int = 50) -> T:
        """Run ``operation`` (a statement or a whole transaction) again when the database is busy.

        A statement refused with "database is locked" (or a deadlock victim) changed nothing, so
        running it again is safe.
        """
        if self.connection.in_atomic_block:
            return operation()  # inside a transaction: only the outermost caller may run it again
        delay = 0.005
        for attempt in range(attempts):
            try:
                return operation()
            except OperationalError as exc:
                if not self.is_busy_error(exc) or attempt == attempts - 1:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        raise AssertionError("unreachable")

    def is_busy_error(self, exc: Exception) -> bool:
        text = str(exc).lower()
        return "database is locked" in text or "database table is locked" in text or "deadlock" in text

    def persistently(self, operation: Callable[[], T], give_up: Callable[[], bool] = lambda: False) -> T:
        """Run ``operation`` until the database accepts it, reconnecting after connection faults.

        For writes that must not be lost (an execution's outcome): while the server restarts, wait
        and try again with back-off, until ``give_up()`` says the caller no longer needs it.
        """
        delay = 0.1
        while True:
            try:
                return self.retrying(operation)
            except (OperationalError, InterfaceError) as exc:
                if give_up():
                    raise
                logger.warning("Database unavailable (%s); trying again in %.1fs", str(exc).strip(), delay)
                self.reset_connection()
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def reset_connection(self) -> None:
        """Drop this thread's connection so that the next statement opens a fresh one."""
        conn = self.connection
        try:
            if conn.in_atomic_block:
                return  # the enclosing transaction owns the connection and will see the error itself
            conn.close()
        except Exception:  # noqa: BLE001 - closing a dead connection may fail; it is gone either way
            conn.connection = None

    # -- worker bookkeeping ------------------------------------------------------------------------

    def register_worker(self, **fields: Any) -> WorkerStatus:
        """Insert the row of a starting worker."""
        now = timezone.now()
        return WorkerStatus.objects.using(self.db).create(started=now, last_seen=now, **fields)

    def record_exit(self, worker: WorkerStatus, exit_code: int, exit_signal: int | None, crash: str | None) -> None:
        """Record how a worker ended (its state is derived from these)."""
        now = timezone.now()
        fields: dict[str, Any] = {"stopped": now, "last_seen": now, "exit_code": exit_code, "exit_signal": exit_signal}
        if crash:
            fields["exit_log"] = crash[-4000:]
        elif exit_signal is not None:
            fields["exit_log"] = f"Stopped by signal {signal.Signals(exit_signal).name}."
        WorkerStatus.objects.using(self.db).filter(pk=worker.pk).update(**fields)

    def heartbeat(self, worker: WorkerStatus, now: datetime.datetime) -> None:
        worker.last_seen = now
        self.retrying(lambda: WorkerStatus.objects.using(self.db).filter(pk=worker.pk).update(last_seen=now))

    def tick(
        self,
        worker: WorkerStatus,
        now: datetime.datetime,
        ping: int | None = None,
        then: Callable[[list[WorkerStatus]], None] | None = None,
    ) -> tuple[datetime.datetime | None, list[WorkerStatus]]:
        """The per-tick bookkeeping of an idle worker, in one transaction (one commit): heartbeat,
        wake due sleeping executions, and send ``ping`` to the worker's listener (see ``listener``);
        returns when the next sleeping one is due, and the live workers.

        ``then(live workers)``: more work for the same transaction (the worker's housekeeping round), in
        a savepoint: if the database refuses it, the tick's own writes still commit and its error is
        raised after the commit (a busy database or a deadlock runs the whole transaction again)."""

        def transact() -> tuple[datetime.datetime | None, list[WorkerStatus], DatabaseError | None]:
            with transaction.atomic(using=self.db):
                WorkerStatus.objects.using(self.db).filter(pk=worker.pk).update(last_seen=now)
                self.read_paused()
                next_sleeping = self.wake_sleeping(now)
                if ping is not None:
                    self.send_ping(worker, ping)
                live = self.live_workers()
                failure = None
                if then is not None:
                    try:
                        with transaction.atomic(using=self.db):
                            then(live)
                    except DatabaseError as exc:
                        if self.is_busy_error(exc) or self.connection.needs_rollback:
                            raise  # the transaction itself is lost: run it all again, or let the worker back off
                        failure = exc
                return next_sleeping, live, failure

        next_sleeping, live, failure = self.retrying(transact)
        worker.last_seen = now
        if failure is not None:
            raise failure
        return next_sleeping, live

    def send_ping(self, worker: WorkerStatus, seq: int) -> None:
        """Within the tick's transaction: tell the worker's listener that ping ``seq`` was sent."""

    def listener(
        self,
        worker: WorkerStatus,
        tick: float,
        queues_served: Callable[[str], bool],
        wake: Callable[[bool], None],
        flow_changed: Callable[[str], None] | None = None,
    ) -> Any:
        """Something that calls ``wake(sleeping)`` as soon as a served queue gets work, or None (poll only).

        It offers ``ping_due(now)``, ``ping_sent(seq, at)``, ``trusted(now)``, ``seconds_until_check(now)``,
        ``start()`` and ``stop()`` (see ``postgresql.Listener``)."""
        return None

    def record_notifications(self, worker: WorkerStatus, receiving: bool) -> None:
        """Record whether the worker receives notifications (True) or polls; written only when it changes."""
        worker.receives_notifications = receiving
        self.retrying(
            lambda: WorkerStatus.objects.using(self.db)
            .filter(pk=worker.pk)
            .update(receives_notifications=receiving)
        )

    # -- waking, claiming --------------------------------------------------------------------------

    def wake_sleeping(self, now: datetime.datetime) -> datetime.datetime | None:
        """SLEEPING executions whose due time has come become QUEUED; returns when the next one is due
        (so that an idle worker can wake up for it), or None."""

        def transact() -> datetime.datetime | None:
            self.objects().filter(state=States.SLEEPING, due__lte=now).update(state=States.QUEUED)
            return self.objects().filter(state=States.SLEEPING).order_by("due").values_list("due", flat=True).first()

        return self.retrying(transact)

    def live_workers(self) -> list[WorkerStatus]:
        """Workers that have not recorded an exit (alive, or dead without saying so)."""
        return list(WorkerStatus.objects.using(self.db).filter(stopped__isnull=True))

    def _claim_filter(self, selection: Selection, now: datetime.datetime) -> tuple[str, list[Any]]:
        qn = self.connection.ops.quote_name
        # QUEUED means due (SLEEPING rows become QUEUED when due): no comparison with this worker's
        # clock, which may lag the clock of the process that queued the row.
        # The state is written in the statement, not passed: SQLite uses a partial index only for a
        # query whose WHERE names the index's own literal condition.
        where = [f"{qn('state')} = '{States.QUEUED}'"]
        params: list[Any] = []
        where.append(f"{qn('task_name')} IN ({', '.join(['%s'] * len(selection.task_names))})")
        params += selection.task_names
        if selection.queues:
            where.append(f"{qn('queue')} IN ({', '.join(['%s'] * len(selection.queues))})")
            params += selection.queues
        if selection.excluded_queues:
            where.append(f"{qn('queue')} NOT IN ({', '.join(['%s'] * len(selection.excluded_queues))})")
            params += selection.excluded_queues
        return " AND ".join(where), params

    def _db_datetime(self, value: datetime.datetime) -> Any:
        field = TaskExec._meta.get_field("due")
        return field.get_db_prep_value(value, self.connection)

    def claim(self, worker: WorkerStatus, selection: Selection, limit: int, now: datetime.datetime) -> list[TaskExec]:
        """Atomically mark up to ``limit`` due executions PROCESSING for ``worker`` and return them.

        Without limits or paused queues, the fast path alone (``claim_ready``). Otherwise the fast path
        for the rest, then ``claim_limited`` (in the same transaction) for the limited queues and tasks.
        """
        if limit <= 0 or not selection.task_names:
            return []
        if not selection.limits and not selection.paused:
            return self.claim_ready(worker, selection, limit, now)
        fast = selection.unlimited()
        claimed = self.claim_ready(worker, fast, limit, now) if fast is not None else []
        room = limit - len(claimed)
        if room <= 0 or not selection.limits:
            return claimed

        if self.connection.in_atomic_block:
            return claimed + self.claim_limited(worker, selection, room)

        def transact() -> list[TaskExec]:
            with transaction.atomic(using=self.db):
                return self.claim_limited(worker, selection, room)

        return claimed + self.retrying(transact)

    def claim_ready(self, worker: WorkerStatus, selection: Selection, limit: int, now: datetime.datetime) -> list[TaskExec]:
        """The fast path: up to ``limit`` executions of ``selection``, whatever their queue's limits.

        One statement: the inner SELECT picks the rows in priority/due/creation order, the UPDATE
        takes them; two workers can never take the same row (SQLite: one writer at a time).

        ``INDEXED BY``: without statistics (no ``ANALYZE``), SQLite prefers the ``(state, finished)``
        index and sorts every QUEUED row at every claim, a cost that grows with the backlog; the
        claim's partial index gives the rows in order and stops at ``LIMIT``.
        """
        if limit <= 0 or not selection.task_names:
            return []
        qn = self.connection.ops.quote_name
        table = qn(TaskExec._meta.db_table)
        where, params = self._claim_filter(selection, now)
        columns = ", ".join(qn(f.column) for f in TaskExec._meta.concrete_fields)
        sql = (
            f"UPDATE {table} SET {qn('state')} = %s, {qn('started')} = %s, {qn('worker_id')} = %s, "
            f"{qn('unique_key')} = NULL "
            f"WHERE {qn('id')} IN (SELECT {qn('id')} FROM {table} INDEXED BY {qn(CLAIM_INDEX)} WHERE {where} "
            f"ORDER BY {qn('priority')} DESC, {qn('due')}, {qn('id')} LIMIT %s) "
            f"RETURNING {columns}"
        )
        all_params = [States.PROCESSING, self._db_datetime(now), worker.pk, *params, limit]

        def run() -> list[TaskExec]:
            with self.connection.cursor() as cursor:
                cursor.execute(sql, all_params)
                return self.executions_from_rows(cursor.fetchall())

        claimed = self.retrying(run)
        # RETURNING gives no order guarantee: restore the claim order.
        claimed.sort(key=lambda e: (-e.priority, e.due, e.id))
        return claimed

    def executions_from_rows(self, rows: list[tuple[Any, ...]]) -> list[TaskExec]:
        """Executions from rows of every concrete column in ``_meta`` order, values converted as a
        queryset would (the backend's converters, then the field's ``from_db_value``), built with
        ``TaskExec.build()``: ``raw()`` would call ``Model.__init__`` for each, the larger cost."""
        converters = self._converters()
        db = self.db
        connection = self.connection
        executions = []
        for row in rows:
            values = {}
            for (attname, expression, functions), value in zip(converters, row):
                for function in functions:
                    value = function(value, expression, connection)
                values[attname] = value
            executions.append(TaskExec.build(db, **values))
        return executions

    def _converters(self) -> list[tuple[str, Any, list[Any]]]:
        cached = self.__dict__.get("_converter_list")
        if cached is None:
            cached = []
            connection = self.connection
            for field in TaskExec._meta.concrete_fields:
                expression = field.get_col(TaskExec._meta.db_table)
                functions = connection.ops.get_db_converters(expression) + expression.get_db_converters(connection)
                cached.append((field.attname, expression, functions))
            self._converter_list = cached
        return cached

    # -- finishing ---------------------------------------------------------------------------------

    def record_and_claim(
        self,
        worker: WorkerStatus,
        outcomes: list[tuple[TaskExec, Outcome]],
        selection: Selection,
        limit: int,
        now: datetime.datetime,
    ) -> tuple[list[bool], list[TaskExec]]:
        """Record finished executions and claim new ones in ONE transaction: a commit (a disk flush
        on PostgreSQL and MariaDB) is the expensive part, so a batch of outcomes shares one.

        A failed execution that has retries left is linked to its retry (inserted, or merged into a
        waiting twin). Returns, for each outcome, whether it was recorded (False: the execution was
        taken from this worker meanwhile), and the claimed executions.

        If the database refuses the batch (a value it cannot hold), the transaction is run again with
        each outcome in a savepoint of its own: the others are recorded as they are, the refused one
        as a failure saying why. A refused outcome never stops the worker nor holds back the others.
        """

        def transact(careful: bool) -> tuple[list[bool], list[TaskExec]]:
            with transaction.atomic(using=self.db):
                if careful:
                    recorded = [self._record_carefully(worker, execution, outcome) for execution, outcome in outcomes]
                else:
                    retries = [outcome.retry_of(execution) for execution, outcome in outcomes]
                    plain = [pair for pair, retry in zip(outcomes, retries) if retry is None]
                    done = self.finish_many(worker, plain) if plain else set()
                    steps = [(e.pk, e.state) for e, _o in plain if e.workflow_id is not None and e.pk in done]
                    if steps:
                        self.steps_finished(steps, now)
                    recorded = [
                        execution.pk in done if retry is None else self._record(worker, execution, outcome, retry)
                        for (execution, outcome), retry in zip(outcomes, retries)
                    ]
                claimed = self.claim(worker, selection, limit, now) if limit > 0 else []
                return recorded, claimed

        if not outcomes:
            if self.claim_is_one_statement and not self.connection.in_atomic_block:
                # Nothing to record (an idle worker woken by new work): the claim alone, in autocommit,
                # is one statement and so atomic by itself; no BEGIN and COMMIT round trips before the
                # task can start.
                return [], self.claim(worker, selection, limit, now) if limit > 0 else []
            return self.retrying(lambda: transact(False))
        try:
            return self.retrying(lambda: transact(False))
        except DatabaseError as exc:
            if self.connection.in_atomic_block:
                raise
            # A connection fault fails again below and reaches the caller, which backs off.
            logger.error("The database refused a batch of %s outcome(s) (%s); recording them one by one", len(outcomes), exc)
            return self.retrying(lambda: transact(True))

    def _record_carefully(self, worker: WorkerStatus, execution: TaskExec, outcome: Outcome) -> bool:
        """Record one outcome in a savepoint; if the database refuses it, record a failure that says why
        (the task did run: not retried), with its text reduced to ASCII escapes."""
        try:
            with transaction.atomic(using=self.db):
                return self._record(worker, execution, outcome, outcome.retry_of(execution))
        except (OperationalError, InterfaceError) as exc:
            if not self.connection.is_usable():
                raise
            problem = exc
        except DatabaseError as exc:
            problem = exc
        logger.error("%s #%s: the database refused its outcome: %s", execution.task_name, execution.pk, problem)
        refused = f"The task ran ({outcome.state}), but the database refused its outcome: {problem}. Not retried."
        fallback = Outcome(
            state=States.FAILED,
            started=outcome.started,
            finished=outcome.finished,
            error=_ascii(refused + (f"\n{outcome.error}" if outcome.error else "")),
            output=_ascii(outcome.output or ""),
            retry=False,
        )
        try:
            with transaction.atomic(using=self.db):
                return self._record(worker, execution, fallback, None)
        except DatabaseError:
            if not self.connection.is_usable():
                raise
        with transaction.atomic(using=self.db):
            bare = dataclasses.replace(fallback, output="", error="The task ran, but the database refused its outcome. Not retried.")
            return self._record(worker, execution, bare, None)

    #: The columns an outcome writes.
    OUTCOME_COLUMNS = ("state", "started", "finished", "result", "error", "output", "exception_class")

    def _outcome_values(self, outcome: Outcome) -> dict[str, Any]:
        """The values an outcome writes, the result as its stored text (encoded once, by the executor)."""
        values = outcome.fields()
        if outcome.result_json is not None:
            values["result"] = EncodedJSON(outcome.result_json)
        return values

    #: SQLite joins at most this many ``SELECT``s in one compound ``SELECT`` (``SQLITE_MAX_COMPOUND_SELECT``);
    #: their parameters (9 each) stay well within its limit (32,766 since SQLite 3.32).
    MAX_COMPOUND_SELECT = 500

    def finish_many(self, worker: WorkerStatus, outcomes: list[tuple[TaskExec, Outcome]]) -> set[int]:
        """Record many outcomes in ONE statement (an UPDATE joined to the new values; a statement per
        ``MAX_COMPOUND_SELECT`` outcomes for a worker with that many threads), only for executions
        this worker still owns; returns the ids recorded. Where waiters are told (PostgreSQL,
        MariaDB), the engine's own ``finish_many`` announces them (see ``announce_finished``) in the
        same transaction; SQLite's waiters poll."""
        rows = self.MAX_COMPOUND_SELECT
        done: set[int] = set()
        for start in range(0, len(outcomes), rows):
            done |= self._finish_rows(worker, outcomes[start : start + rows])
        return done

    def _finish_rows(self, worker: WorkerStatus, outcomes: list[tuple[TaskExec, Outcome]]) -> set[int]:
        """One statement of ``finish_many``."""
        qn = self.connection.ops.quote_name
        table = qn(TaskExec._meta.db_table)
        fields = {name: TaskExec._meta.get_field(name) for name in self.OUTCOME_COLUMNS}
        names = ("id", *self.OUTCOME_COLUMNS)
        first = ", ".join(f"%s AS {qn(n)}" for n in names)
        rest = ", ".join(["%s"] * len(names))
        rows = " UNION ALL ".join([f"SELECT {first}"] + [f"SELECT {rest}"] * (len(outcomes) - 1))
        params: list[Any] = []
        connection = self.connection
        for execution, outcome in outcomes:
            values = self._outcome_values(outcome)
            params.append(execution.pk)
            params += [fields[n].get_db_prep_save(values[n], connection) for n in self.OUTCOME_COLUMNS]
            execution.apply(outcome)
        assignments = ", ".join(f"{qn(n)} = v.{qn(n)}" for n in self.OUTCOME_COLUMNS)
        sql = (
            f"UPDATE {table} SET {assignments} FROM ({rows}) AS v "
            f"WHERE {table}.{qn('id')} = v.{qn('id')} AND {table}.{qn('state')} = %s "
            f"AND {table}.{qn('worker_id')} = %s RETURNING {table}.{qn('id')}"
        )
        params += [States.PROCESSING, worker.pk]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return {row[0] for row in cursor.fetchall()}

    def finish(self, execution: TaskExec, worker: WorkerStatus, outcome: Outcome) -> bool:
        """Record one outcome in one UPDATE, only if this worker still owns the execution.

        Returns False when the execution was taken away meanwhile (e.g. rescued as interrupted).
        """
        values = self._outcome_values(outcome)
        execution.apply(outcome)
        rows = self.objects().filter(pk=execution.pk, state=States.PROCESSING, worker_id=worker.pk)
        return bool(self.retrying(lambda: rows.update(**values)))

    def _record(self, worker: WorkerStatus, execution: TaskExec, outcome: Outcome, retry: TaskExec | None) -> bool:
        if not self.finish(execution, worker, outcome):
            return False
        self.announce_finished([execution.pk])
        if retry is not None:
            retry.pk = None  # a retried transaction inserts afresh
            saved = self.insert(retry)
            self.objects().filter(pk=execution.pk).update(replaced_by=saved)
            execution.replaced_by = saved
            if execution.workflow_id is not None:
                self.replaced_step(execution.pk, saved, outcome.finished)
        elif execution.workflow_id is not None:
            self.steps_finished([(execution.pk, execution.state)], outcome.finished)
        return True

    def announce_finished(self, ids: Iterable[int]) -> None:
        """Within the transaction that finished executions ``ids``: tell whoever waits for them
        (``TaskExec.wait()``). PostgreSQL notifies; elsewhere waiters poll."""

    def release(self, executions: list[TaskExec], worker: WorkerStatus) -> int:
        """Give claimed executions that never started back to the queue (QUEUED, no worker)."""

        def transact() -> int:
            released = 0
            with transaction.atomic(using=self.db):
                for execution in executions:
                    rows = self.objects().filter(pk=execution.pk, state=States.PROCESSING, worker_id=worker.pk)
                    released += rows.update(state=States.QUEUED, started=None, worker=None)
                    if execution.is_unique:
                        # Waiting again: its call is unique again, unless an identical call was queued meanwhile.
                        key = self.step_fingerprint(execution)  # a plain call's, unless it receives
                        try:
                            with transaction.atomic(using=self.db):
                                self.objects().filter(pk=execution.pk).update(unique_key=key)
                        except IntegrityError:
                            pass
            return released

        return self.retrying(transact)

    # -- acting on executions from outside the worker (admin, your code) ---------------------------

    def requeue(
        self, execution: TaskExec, now: datetime.datetime, *, retries: int, retry_delay: float, unique: bool
    ) -> TaskExec:
        """Queue the call of ``execution`` again, due now, with the given options (the task's current ones
        when it is registered); a finished execution is linked to its rerun unless a retry already replaced
        it. A unique call merges into a waiting twin. Returns the execution that will run."""

        def transact() -> TaskExec:
            with transaction.atomic(using=self.db):
                rerun = execution.make_replacement(now, retries, retry_delay)
                rerun.is_unique = unique
                # A step takes its key once its links lead to it (``replaced_step``).
                rerun.unique_key = rerun.call_fingerprint() if unique and execution.workflow_id is None else None
                saved = self.insert(rerun)
                if saved.pk != execution.pk:
                    replaced = self.objects().filter(
                        pk=execution.pk, state__in=States.finished(), replaced_by__isnull=True
                    ).update(replaced_by=saved)
                    if execution.workflow_id is not None:
                        if replaced:
                            return self.replaced_step(execution.pk, saved, now, revive=True)
                        if unique:
                            return self.settle_unique_steps([saved.pk], now).get(saved.pk, saved)
                return saved

        return self.retrying(transact)

    def cancel(self, ids: Iterable[int], now: datetime.datetime) -> list[int]:
        """Cancel the waiting executions among ``ids``; returns those cancelled. One conditional UPDATE
        per row: it cannot cancel a row a worker has just claimed, and tells exactly which were."""
        cancelled = []

        def cancel_one(pk: int) -> int:
            with transaction.atomic(using=self.db):
                done = self.objects().filter(pk=pk, state__in=States.not_started()).update(
                    state=States.CANCELLED, finished=now, unique_key=None
                )
                if done:
                    self.announce_finished([pk])
                    if self.objects().filter(pk=pk, workflow__isnull=False).exists():
                        self.steps_finished([(pk, States.CANCELLED)], now)
                return int(done)

        for pk in ids:
            if self.retrying(lambda: cancel_one(pk)):
                cancelled.append(pk)
        return cancelled

    # -- unknown task names ------------------------------------------------------------------------

    def invalidate_unknown(self, known: Iterable[str], due_before: datetime.datetime, now: datetime.datetime) -> int:
        """Mark INVALID the queued executions whose task no online worker has registered (a workflow
        step among them blocks what waits for it)."""

        def transact() -> int:
            with transaction.atomic(using=self.db):
                rows = self.objects().filter(state=States.QUEUED, due__lte=due_before).exclude(task_name__in=list(known))
                steps = list(rows.filter(workflow__isnull=False).values_list("pk", flat=True))
                count = int(
                    rows.update(
                        state=States.INVALID,
                        finished=now,
                        unique_key=None,
                        error="No online worker has this task registered (is the module defining it imported, "
                        "e.g. from the app's tasks.py?).",
                    )
                )
                if steps:
                    invalid = list(self.objects().filter(pk__in=steps, state=States.INVALID).values_list("pk", flat=True))
                    self.announce_finished(invalid)
                    self.steps_finished([(pk, States.INVALID) for pk in invalid], now)
                return count

        return self.retrying(transact)

    # -- retention ---------------------------------------------------------------------------------

    def prune(self, finished_before: datetime.datetime, batch: int = 1000) -> int:
        """Delete up to ``batch`` executions that finished before the cutoff (small batches keep
        locks short). Returns how many went: call again until 0, then ``prune_workers``. They are
        counted in the metrics' totals first (``fold_before_pruning``), which therefore never go down."""
        cutoff = self.fold_before_pruning(finished_before)

        def transact() -> int:
            with transaction.atomic(using=self.db):
                # A step whose result a step not yet run will read stays until that one has run.
                needed = StepLink.objects.using(self.db).filter(
                    upstream_id=OuterRef("pk"), downstream__state__in=[*States.not_started(), States.PROCESSING]
                )
                rows = list(
                    self.objects()
                    .filter(finished__lt=cutoff, state__in=States.finished())
                    .filter(Q(workflow__isnull=True) | ~Exists(needed))
                    .values_list("id", "workflow_id")[:batch]
                )
                ids = [pk for pk, _workflow in rows]
                if ids:
                    self.objects().filter(pk__in=ids).delete()
                    workflows = {workflow for _pk, workflow in rows if workflow is not None}
                    if workflows:
                        links = StepLink.objects.using(self.db)
                        links.filter(Q(upstream_id__in=ids) | Q(downstream_id__in=ids)).delete()
                        Workflow.objects.using(self.db).filter(pk__in=workflows).exclude(
                            Exists(TaskExec.objects.using(self.db).filter(workflow_id=OuterRef("pk")))
                        ).delete()
                return len(ids)

        return self.retrying(transact)

    def prune_workers(self, stopped_before: datetime.datetime) -> int:
        """Delete the records of workers that recorded their exit before the cutoff; never a running
        worker's (nor one that stopped responding without recording an exit: the admin shows it
        TIMEDOUT, see ``WorkerStatus``). Their executions keep their history, without the link."""
        deleted, _ = self.retrying(
            lambda: WorkerStatus.objects.using(self.db)
            .filter(stopped__isnull=False, stopped__lt=stopped_before)
            .delete()
        )
        return int(deleted)

    # -- interruption and rescue ------------------------------------------------------------------

    def interrupt(
        self,
        execution: TaskExec,
        reason: str,
        now: datetime.datetime,
        worker: WorkerStatus | None = None,
        crashed: bool = False,
    ) -> TaskExec | None:
        """PROCESSING -> INTERRUPTED, with a replacement due now linked by ``replaced_by``.

        ``crashed``: its worker died while holding it. That counts against the call's crash budget
        (``TOOSIMPLEQ_MAX_CRASHES``): once spent, the execution is FAILED instead of replaced, so a
        task that kills every worker running it cannot stop the queue. Graceful interruptions (a
        worker stopped past its grace period) do not count.

        A conditional update, so when several workers try at once exactly one succeeds; returns the
        replacement, or None if the execution was no longer PROCESSING (for ``worker``) or was ended.
        """
        crashes = execution.crashes + 1 if crashed else execution.crashes
        limit = conf.max_crashes()

        def transact() -> TaskExec | None:
            with transaction.atomic(using=self.db):
                rows = self.objects().filter(pk=execution.pk, state=States.PROCESSING)
                if worker is not None:
                    rows = rows.filter(worker_id=worker.pk)
                if crashed and crashes >= limit:
                    error = (
                        f"{reason} Its worker died {crashes} times while holding this call, so it is not run "
                        f"again (TOOSIMPLEQ_MAX_CRASHES = {limit}): the task may kill the process running it "
                        "(os._exit, a crash in native code, the out-of-memory killer)."
                    )
                    if rows.update(state=States.FAILED, finished=now, error=error, unique_key=None, crashes=crashes):
                        logger.error("%s #%s FAILED: %s", execution.task_name, execution.pk, error)
                        self.announce_finished([execution.pk])
                        if execution.workflow_id is not None:
                            self.steps_finished([(execution.pk, States.FAILED)], now)
                    return None
                if not rows.update(state=States.INTERRUPTED, finished=now, error=reason, unique_key=None, crashes=crashes):
                    return None
                replacement = self.insert(
                    execution.make_replacement(now, execution.retries, execution.retry_delay, crashes=crashes)
                )
                self.objects().filter(pk=execution.pk).update(replaced_by=replacement)
                self.announce_finished([execution.pk])
                if execution.workflow_id is not None:
                    replacement = self.replaced_step(execution.pk, replacement, now)
                execution.state, execution.replaced_by = States.INTERRUPTED, replacement
                return replacement

        return self.retrying(transact)

    def orphans(self, dead_workers: Iterable[int], include_stopped: bool) -> list[TaskExec]:
        """PROCESSING executions whose worker is dead (or, with ``include_stopped``, stopped or gone)."""
        where = Q(worker_id__in=list(dead_workers))
        if include_stopped:
            where |= Q(worker__stopped__isnull=False) | Q(worker__isnull=True)
        elif not dead_workers:
            return []
        return list(self.objects().filter(state=States.PROCESSING).filter(where))



def _ascii(text: str) -> str:
    """``text`` with every non-ASCII character as a backslash escape: storable in any text column."""
    return text.encode("ascii", "backslashreplace").decode("ascii")
