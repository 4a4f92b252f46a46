"""The worker: a plain object whose loop heartbeats, wakes, rescues, claims and runs executions.

Threads: the main thread runs the loop (so heartbeats continue while tasks run); each of the
``threads`` task threads runs claimed executions one at a time, in-process or, for executions with a
time limit, in its own child process (see ``isolation``).
"""

from __future__ import annotations

import datetime
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Iterable

from django.db import DatabaseError, InterfaceError, OperationalError, connections
from django.utils import timezone

from .. import conf, signals
from ..engine import Selection, get_engine
from ..models import TaskExec, WorkerStatus
from ..registry import schedules_registry, tasks_registry
from .executor import failed_outcome, log_outcome, replacement_for_retry, run_execution, runs_isolated, timeout_of
from .isolation import ChildDied, ChildRunner, TimeLimitExceeded
from .scheduler import Scheduler

logger = logging.getLogger("django_toosimple_q.worker")
States = TaskExec.States

#: Exit codes of ``manage.py worker`` (documented in the README).
EXIT_OK = 0
EXIT_CRASHED = 1
EXIT_USAGE = 2  # bad command-line arguments (argparse)
EXIT_RELOAD = 3  # asks the autoreloading parent to start a fresh child

DEFAULT_TICK = 10.0
DEFAULT_TIMEOUT = 120.0
DEFAULT_GRACE = 25.0
#: Seconds between housekeeping rounds (unknown tasks, stopped workers' leftovers, retention).
HOUSEKEEPING_INTERVAL = 60.0


class StartupError(Exception):
    """The worker cannot start as configured; the message says what to do."""


class Worker:
    def __init__(
        self,
        *,
        queues: Iterable[str] = (),
        excluded_queues: Iterable[str] = (),
        tick: float = DEFAULT_TICK,
        once: bool = False,
        until_done: bool = False,
        label: str = "worker-{pid}",
        timeout: float = DEFAULT_TIMEOUT,
        threads: int = 1,
        grace: float = DEFAULT_GRACE,
        task_timeout: float | None = None,
        no_schedules: bool = False,
    ):
        self.queues = sorted(set(queues))
        self.excluded_queues = sorted(set(excluded_queues))
        if self.queues and self.excluded_queues:
            raise ValueError("Give either queues to run or queues to exclude, not both.")
        for name, value in (("tick", tick), ("timeout", timeout)):
            if value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        if grace < 0:
            raise ValueError(f"grace must be a number of seconds >= 0, not {grace!r}")
        if task_timeout is not None and task_timeout <= 0:
            raise ValueError(f"task_timeout must be a positive number of seconds, not {task_timeout!r}")
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads!r}")
        if once and until_done:
            raise ValueError("once and until_done cannot be combined.")
        self.tick = float(tick)
        self.once = once
        self.until_done = until_done
        self.label = label.replace("{pid}", str(os.getpid()))
        self.timeout = float(timeout)
        self.threads = threads
        self.grace = float(grace)
        self.task_timeout = task_timeout
        self.db = conf.queue_database()
        self.engine = get_engine(self.db)
        self.status: WorkerStatus | None = None
        self.exit_code = EXIT_OK
        self.stop_signal: int | None = None
        #: True once the worker gave up on executions still running (grace over or second signal).
        self.abandoned = False
        self._stopping = threading.Event()
        self._abandon = threading.Event()
        self._wake = threading.Event()
        self._reread_sleeping = threading.Event()
        self._listener = None
        #: With a live listener, claim only when work may be there: after a notification, or while
        #: claims come back full. Without one, every pass claims (polling).
        self._maybe_work = threading.Event()
        self._maybe_work.set()
        self._grace_deadline: float | None = None
        #: Claimed and not yet recorded: waiting in ``_todo``, running, or finished in ``_done``.
        self._in_flight: dict[int, TaskExec] = {}
        self._todo: queue.SimpleQueue[TaskExec | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[tuple[TaskExec, dict]] = queue.SimpleQueue()
        #: Outcomes taken from ``_done`` whose recording has not been committed yet.
        self._pending: list[tuple[TaskExec, dict, TaskExec | None]] = []
        self._average_run = None  # seconds, a moving average of how long executions take
        self._children: list[ChildRunner] = []
        self._last_heartbeat: datetime.datetime | None = None
        self._duties_due: datetime.datetime | None = None  # None: at the first pass
        self._last_housekeeping: datetime.datetime | None = None
        # None: this worker never touches schedules (--no_schedules).
        self.scheduler: Scheduler | None = None
        if not no_schedules:
            served = [s for s in schedules_registry.values() if self._serves(s.queue_name)]
            self.scheduler = Scheduler(self.engine, served)

    # -- public ------------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until done or stopped; return the process exit code."""
        self._install_signal_handlers()
        self.status = self._register_when_possible()
        if self.status is None:
            return self.exit_code  # stopped before the database came up
        self._log_start()
        threads = [
            threading.Thread(target=self._task_thread, name=f"toosimpleq-task-{i}", daemon=True)
            for i in range(self.threads)
        ]
        for thread in threads:
            thread.start()
        # --once/--until_done poll: they stop when a claim finds nothing.
        listener = None if self.once or self.until_done else self.engine.listener(self._serves, self._notified)
        if listener is not None:
            self._listener = listener.start()
        crash = None
        try:
            self._loop()
            self._finish_in_flight()
        except Exception:  # noqa: BLE001 - record the crash, then report it by the exit code
            crash = traceback.format_exc()
            logger.critical("Worker %s crashed:\n%s", self.label, crash)
            self.exit_code = EXIT_CRASHED
            self._stopping.set()
            self._finish_in_flight()
        finally:
            if listener is not None:
                listener.stop()
            if not self.abandoned:
                for _ in threads:
                    self._todo.put(None)
                for thread in threads:
                    thread.join()
            self._record_exit(crash)
        return self.exit_code

    def request_stop(self, exit_code: int = EXIT_OK, signum: int | None = None) -> None:
        """Stop claiming; running executions get ``grace`` seconds to finish, then are interrupted."""
        if signum is not None:
            self.stop_signal = signum
        self.exit_code = exit_code
        if not self._stopping.is_set():
            self._grace_deadline = time.monotonic() + self.grace
            self._stopping.set()
        self._wake.set()

    @property
    def stopping(self) -> threading.Event:
        """Set once the worker was asked to stop."""
        return self._stopping

    def request_abandon(self) -> None:
        """Interrupt running executions now (a second signal)."""
        self._abandon.set()
        self._wake.set()

    @property
    def selection(self) -> Selection:
        return Selection(sorted(tasks_registry), self.queues, self.excluded_queues)

    # -- the loop ----------------------------------------------------------------------------------

    def _loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                more = self._pass()
            except DatabaseError as exc:
                # The database restarted or the connection dropped: back off, reconnect, carry on. Any
                # other database error is logged and retried the same way: the worker never stops on one.
                failures += 1
                delay = self._backoff(failures)
                if isinstance(exc, (OperationalError, InterfaceError)):
                    logger.warning("Database unavailable (%s); retrying in %.1fs", str(exc).strip(), delay)
                else:
                    logger.exception("Database error in the worker's loop; retrying in %.1fs", delay)
                self.engine.reset_connection()
                self._wait(delay)
                continue
            failures = 0
            if more is None:
                return

    def _backoff(self, failures: int) -> float:
        return min(0.25 * 2**failures, max(self.tick, 1.0), 30.0)

    def _pass(self) -> bool | None:
        """One pass of the loop; returns None when the worker is done (``--once``/``--until_done``).

        While executions keep coming, a pass is one transaction that records the outcomes finished
        since the last pass and claims as many new executions; the other duties run once per tick
        (or when the next sleeping execution is due).
        """
        now = timezone.now()
        if self._duties_due is None or now >= self._duties_due or self._reread_sleeping.is_set():
            self._reread_sleeping.clear()
            self._duties(now)  # heartbeats too
        self._heartbeat_if_due(now)
        if self.scheduler:
            self.scheduler.run_due(now)
        capacity = self.threads if self.once else self._capacity()
        free, claimed = self._record_and_claim(capacity, now)
        for execution in claimed:
            self._in_flight[execution.pk] = execution
            self._todo.put(execution)

        if self.once:
            self._wait_for_all()
            return None
        if self.until_done and free > 0 and not claimed and not self._in_flight:
            return None
        if not self._done.empty():
            return True  # more outcomes to record already
        if self._in_flight and len(claimed) >= free:
            # Every slot is busy and there may be more work: wait for an outcome, not a tick.
            self._wait(min(self._seconds_until_heartbeat(), self._seconds_until_schedule()))
        elif not claimed:
            # Idle: until the next duties (tick or sleeping execution due), an outcome, or a notification.
            until_duties = (self._duties_due - timezone.now()).total_seconds()
            self._wait(min(self._seconds_until_heartbeat(), until_duties, self._seconds_until_schedule()))
        return True

    def _record_and_claim(self, capacity: int, now: datetime.datetime) -> tuple[int, list[TaskExec]]:
        """Record the outcomes finished so far and claim executions up to ``capacity`` held at once,
        in one transaction; returns how many could be claimed, and the claimed executions."""
        while True:
            try:
                execution, fields = self._done.get_nowait()
            except queue.Empty:
                break
            self._pending.append((execution, fields, replacement_for_retry(execution, fields)))
        free = capacity - (len(self._in_flight) - len(self._pending))
        polling = self._listener is None or not self._listener.connected
        claim = free > 0 and not self._stopping.is_set() and (polling or self._maybe_work.is_set())
        if claim:
            self._maybe_work.clear()  # set again by a notification arriving from now on
        if not self._pending and not claim:
            return free, []
        recorded, claimed = self.engine.record_and_claim(
            self.status, self._pending, self.selection, free if claim else 0, now
        )
        if claim and len(claimed) >= free:
            self._maybe_work.set()  # a full claim: there may be more
        pending, self._pending = self._pending, []
        for (execution, fields, _replacement), ok in zip(pending, recorded):
            self._in_flight.pop(execution.pk, None)
            log_outcome(execution, fields, ok)
            if ok:
                signals.send(signals.task_finished, execution)
        return (free if claim else 0), claimed

    def _capacity(self) -> int:
        """How many executions to hold at once: one per thread, plus, when executions are short, a few
        more claimed ahead so that threads never wait for the database (about 50 ms of work)."""
        if self._average_run is None:
            return self.threads
        extra = int(self.threads * 0.05 / max(self._average_run, 0.0005))
        return self.threads + min(extra, 32)

    def _notified(self, sleeping: bool) -> None:
        """Called by the listener thread: a served queue got work (or the listener reconnected)."""
        if sleeping:
            self._reread_sleeping.set()  # re-read when the next sleeping execution is due
        else:
            self._maybe_work.set()
        self._wake.set()

    def _serves(self, queue_name: str) -> bool:
        if self.queues:
            return queue_name in self.queues
        return queue_name not in self.excluded_queues

    def _task_thread(self) -> None:
        """Run claimed executions one after the other until told to stop (``None``); their outcomes
        go to the main thread, which records them."""
        child = ChildRunner()
        self._children.append(child)
        try:
            while (execution := self._todo.get()) is not None:
                signals.send(signals.task_started, execution)
                try:
                    fields = self._run(execution, child)
                except Exception as exc:  # noqa: BLE001 - a fault of ours, not of the task
                    logger.exception("Running execution #%s failed", execution.pk)
                    fields = failed_outcome(f"The worker failed to run the task: {exc!r}")
                fields.setdefault("started", execution.started)
                duration = (fields["finished"] - fields["started"]).total_seconds()
                self._average_run = duration if self._average_run is None else 0.9 * self._average_run + 0.1 * duration
                self._done.put((execution, fields))
                self._wake.set()
                # A task that broke its connection must not poison the next one on this thread (checked
                # only after a database error: ``is_usable()`` costs a round trip).
                for conn in connections.all():
                    if conn.connection is not None and conn.errors_occurred:
                        if conn.is_usable():
                            conn.errors_occurred = False
                        else:
                            conn.close()
        finally:
            child.close()
            connections.close_all()

    def _run(self, execution: TaskExec, child: ChildRunner) -> dict:
        limit = timeout_of(execution, self.task_timeout)
        if not runs_isolated(execution, limit):
            return run_execution(execution)
        try:
            return child.run(execution, limit)
        except (TimeLimitExceeded, ChildDied) as exc:
            logger.error("%s #%s: %s", execution.task_name, execution.pk, exc)
            return failed_outcome(f"{type(exc).__name__}: {exc}")

    def _wait(self, seconds: float) -> None:
        self._wake.wait(max(seconds, 0))
        self._wake.clear()

    def _wait_for_all(self) -> None:
        """Wait until every claimed execution has run and its outcome is recorded."""
        while self._in_flight:
            self._wait(self._seconds_until_heartbeat())
            now = timezone.now()
            self._heartbeat_if_due(now)
            self._record_and_claim(0, now)

    def _seconds_until_schedule(self) -> float:
        """Until the next occurrence of a schedule: a long tick must not make it late."""
        next_due = self.scheduler.next_wake_up() if self.scheduler else None
        if next_due is None:
            return float("inf")
        return max((next_due - timezone.now()).total_seconds(), 0.0)

    # -- stopping ----------------------------------------------------------------------------------

    def _finish_in_flight(self) -> None:
        """After a stop: give back what has not started, let running executions finish until the grace
        period ends (recording their outcomes), then interrupt what still runs."""
        not_started = []
        while True:
            try:
                execution = self._todo.get_nowait()
            except queue.Empty:
                break
            if execution is not None:
                not_started.append(execution)
        if not_started and self._safely(lambda: self.engine.release(not_started, self.status)) is not None:
            for execution in not_started:
                self._in_flight.pop(execution.pk, None)
        while self._in_flight and not self._abandon.is_set():
            remaining = (self._grace_deadline or time.monotonic()) - time.monotonic()
            if remaining <= 0:
                break
            self._wait(min(remaining, self._seconds_until_heartbeat()))
            self._safely(lambda: self._heartbeat_if_due(timezone.now()))
            self._safely(lambda: self._record_and_claim(0, timezone.now()))
        self._safely(lambda: self._record_and_claim(0, timezone.now()))
        if not self._in_flight:
            return
        self.abandoned = True
        self._abandon.set()
        reason = (
            "Interrupted: the worker was stopped again before it finished."
            if self.stop_signal is not None and self._grace_deadline and time.monotonic() < self._grace_deadline
            else f"Interrupted: the worker stopped and the task did not finish within the {self.grace:g}s grace period."
        )
        for child in self._children:
            child.close(kill=True)
        for execution in list(self._in_flight.values()):
            self._interrupt_safely(execution, reason)

    def _interrupt_safely(self, execution: TaskExec, reason: str) -> None:
        replacement = self._safely(lambda: self.engine.interrupt(execution, reason, timezone.now(), self.status))
        if replacement is not None:
            logger.warning("%s #%s interrupted; replaced by #%s", execution.task_name, execution.pk, replacement.pk)

    def _safely(self, operation):
        """Bookkeeping on the way out: try hard, but never let it prevent the exit."""
        try:
            return self.engine.persistently(operation, give_up=lambda: True)
        except Exception:  # noqa: BLE001
            logger.exception("Database bookkeeping failed while stopping; other workers will rescue what is left")
            return None

    # -- periodic duties ---------------------------------------------------------------------------

    def _heartbeat_interval(self) -> float:
        return min(self.tick, self.timeout / 4)

    def _seconds_until_heartbeat(self) -> float:
        elapsed = (timezone.now() - self._last_heartbeat).total_seconds()
        return max(self._heartbeat_interval() - elapsed, 0.0)

    def _heartbeat_if_due(self, now: datetime.datetime) -> None:
        if (now - self._last_heartbeat).total_seconds() >= self._heartbeat_interval():
            self.engine.heartbeat(self.status, now)
            self._last_heartbeat = now

    def _duties(self, now: datetime.datetime) -> None:
        """Once per tick: heartbeat, wake due sleeping executions and rescue those of dead workers;
        every ``HOUSEKEEPING_INTERVAL`` at most, the housekeeping (see ``_housekeeping``)."""
        next_sleeping, live = self.engine.tick(self.status, now)
        self._last_heartbeat = now
        self._duties_due = now + datetime.timedelta(seconds=self.tick)
        if next_sleeping is not None:
            self._duties_due = min(self._duties_due, next_sleeping)
        dead = [w.pk for w in live if not w.is_fresh(now) and w.pk != self.status.pk]
        housekeeping = self._last_housekeeping is None or (now - self._last_housekeeping).total_seconds() >= max(
            self.tick, HOUSEKEEPING_INTERVAL
        )
        self._rescue(now, dead, include_stopped=housekeeping)
        if housekeeping:
            self._last_housekeeping = now
            self._housekeeping(now, live)

    def _rescue(self, now: datetime.datetime, dead: list[int], include_stopped: bool) -> None:
        for orphan in self.engine.orphans(dead, include_stopped):
            # A worker that stopped responding died holding it (its crash budget pays); one that
            # recorded its exit only failed to give it back.
            crashed = orphan.worker_id in dead
            replacement = self.engine.interrupt(
                orphan,
                f"Interrupted: its worker (#{orphan.worker_id}) stopped or stopped responding.",
                now,
                crashed=crashed,
            )
            if replacement is not None:
                logger.warning(
                    "Rescued %s #%s from a dead worker: replaced by #%s", orphan.task_name, orphan.pk, replacement.pk
                )


    def _housekeeping(self, now: datetime.datetime, live: list[WorkerStatus]) -> None:
        """Invalidate executions of tasks that no online worker knows; delete old finished ones."""
        grace = conf.unknown_task_grace()
        known = set(tasks_registry)
        for worker in live:
            if worker.is_fresh(now):
                known.update(worker.tasks or [])
        count = self.engine.invalidate_unknown(known, now - datetime.timedelta(seconds=grace), now)
        if count:
            logger.warning("Marked %s execution(s) INVALID: no online worker has their task registered", count)
        keep = conf.delete_finished_after()
        if keep is not None:
            # Small batches, for at most about a second per housekeeping round.
            deadline = time.monotonic() + 1.0
            deleted = 0
            while time.monotonic() < deadline and not self._stopping.is_set():
                batch = self.engine.prune(now - keep)
                deleted += batch
                if batch == 0:
                    break
            if deleted:
                logger.info("Deleted %s execution(s) finished more than %s ago", deleted, keep)
        if self.scheduler:
            # Rolling deploys: a schedule missing from this worker's code may be in an older one's.
            known_schedules = set(schedules_registry)
            for worker in live:
                if worker.is_fresh(now):
                    known_schedules.update(worker.schedules or [])
            self.scheduler.invalidate_unknown(known_schedules)
            # Also the first pass's reading of the schedules' rows; later, it picks up outside changes.
            self.scheduler.refresh(now)

    # -- start and exit ----------------------------------------------------------------------------

    def _register_when_possible(self) -> WorkerStatus | None:
        """Record this worker, waiting with back-off for a database that is not up yet (a worker started
        before its database still comes up); a database without our tables stops it with a clear error."""
        failures = 0
        while not self._stopping.is_set():
            try:
                return self._register()
            except DatabaseError as exc:
                missing = self._missing_tables()
                if missing:
                    raise StartupError(
                        f"The queue's tables ({', '.join(missing)}) do not exist in database {self.db!r}: "
                        "run `python manage.py migrate` first."
                    ) from None
                if missing is None:  # could not even connect
                    failures += 1
                    delay = self._backoff(failures)
                    logger.error(
                        "Database %r unreachable (%s); trying again in %.1fs",
                        self.db,
                        " ".join(str(exc).split()),
                        delay,
                    )
                    self.engine.reset_connection()
                    self._wait(delay)
                    continue
                raise
        return None

    def _missing_tables(self) -> list[str] | None:
        """The queue's tables missing from its database; None if the database cannot be reached."""
        connection = connections[self.db]
        try:
            existing = set(connection.introspection.table_names())
        except DatabaseError:
            self.engine.reset_connection()
            return None
        return [model._meta.db_table for model in (TaskExec, WorkerStatus) if model._meta.db_table not in existing]

    def _register(self) -> WorkerStatus:
        now = timezone.now()
        self._last_heartbeat = now
        return WorkerStatus.objects.using(self.db).create(
            label=self.label,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=self.queues,
            excluded_queues=self.excluded_queues,
            tasks=sorted(tasks_registry),
            schedules=sorted(schedules_registry),
            timeout=self.timeout,
            started=now,
            last_seen=now,
        )

    def _log_start(self) -> None:
        if self.queues:
            queues = "queues " + ", ".join(self.queues)
        elif self.excluded_queues:
            queues = "every queue except " + ", ".join(self.excluded_queues)
        else:
            queues = "every queue"
        if self.scheduler is None:
            schedules = "not run (--no_schedules)"
        else:
            schedules = ", ".join(sorted(self.scheduler.schedules)) or "none for these queues"
        logger.info(
            "Worker %s started (%s, %s thread(s), tick %ss, database %r); tasks: %s; schedules: %s",
            self.label,
            queues,
            self.threads,
            self.tick,
            self.db,
            ", ".join(sorted(tasks_registry)) or "none registered",
            schedules,
        )

    def _record_exit(self, crash: str | None) -> None:
        if self.status is None:
            return
        now = timezone.now()
        fields = {"stopped": now, "last_seen": now, "exit_code": self.exit_code, "exit_signal": self.stop_signal}
        if crash:
            fields["exit_log"] = crash[-4000:]
        elif self.stop_signal is not None:
            fields["exit_log"] = f"Stopped by signal {signal.Signals(self.stop_signal).name}."
        self._safely(lambda: WorkerStatus.objects.using(self.db).filter(pk=self.status.pk).update(**fields))
        logger.info("Worker %s stopped (exit code %s)", self.label, self.exit_code)

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers (e.g. a worker driven from a test thread)

        def on_signal(signum, frame):
            name = signal.Signals(signum).name
            if self._stopping.is_set() and self.stop_signal is not None:
                logger.warning("Second %s: interrupting running tasks and stopping now", name)
                self.request_abandon()
                return
            logger.info("Received %s: finishing running tasks (up to %gs), then stopping", name, self.grace)
            self.request_stop(EXIT_OK, signum)

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)


def run_process(worker: Worker, own_process: bool = True) -> int:
    """Run ``worker`` as the body of a process and return its exit code.

    ``own_process``: the process exists only for this worker (``manage.py worker`` from the command
    line), so once the worker is done nothing may keep it alive: if the worker abandoned running tasks
    (their threads cannot be stopped, their executions are already INTERRUPTED) or a task left a
    non-daemon thread running, the process leaves at once. In-process callers (``call_command``) only
    get a warning about such threads.
    """
    try:
        code = worker.run()
    except StartupError as exc:
        logger.critical("%s", exc)
        return EXIT_CRASHED
    leftovers = [t for t in threading.enumerate() if not t.daemon and t is not threading.main_thread() and t.is_alive()]
    if leftovers:
        logger.warning(
            "Thread(s) started by tasks are still running after the worker stopped: %s%s",
            ", ".join(t.name for t in leftovers),
            "; leaving without waiting for them" if own_process else "",
        )
    if own_process and (worker.abandoned or leftovers):
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(code)
    return code
