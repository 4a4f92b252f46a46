"""The worker: a plain object whose main thread loops over duties (``duties``), schedules
(``scheduler``) and record-and-claim through the engine, while its task threads (``pool``) run the
claimed executions. Stopping (signals, the grace period) is in ``stopping``; the process around it in
``process``.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import threading
import time
import traceback
from typing import Iterable

from django.db import DatabaseError, InterfaceError, OperationalError, connections
from django.utils import timezone

from .. import conf, signals
from ..errors import StartupError
from ..engine import Selection, get_engine
from ..engine.outcome import Outcome
from ..models import TaskExec, WorkerStatus
from ..registry import flow_limits, schedules_registry, tasks_registry
from . import stopping
from .duties import Duties
from .executor import log_outcome
from .pool import TaskPool
from .scheduler import Scheduler
from .waking import Waker

logger = logging.getLogger("django_toosimple_q.worker")
States = TaskExec.States

#: Exit codes of ``manage.py worker`` (documented in docs/worker.md).
EXIT_OK = 0
EXIT_CRASHED = 1
EXIT_USAGE = 2  # bad command-line arguments (argparse)
EXIT_RELOAD = 3  # asks the autoreloading parent to start a fresh child

DEFAULT_TICK = 10.0
DEFAULT_TIMEOUT = 120.0
DEFAULT_GRACE = 25.0
#: At most this many executions claimed ahead of the threads (see ``Worker._capacity``).
MAX_AHEAD = 512


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
        self.db = conf.queue_database()
        self.engine = get_engine(self.db)
        conf.listen_database()  # a bad TOOSIMPLEQ_LISTEN_DATABASE stops the worker before it starts
        self.status: WorkerStatus | None = None
        self.exit_code = EXIT_OK
        self.stop_signal: int | None = None
        #: True once the worker gave up on executions still running (grace over or second signal).
        self.abandoned = False
        self._stopping = threading.Event()
        self._abandon = threading.Event()
        #: Ends the main thread's sleep (outcomes, stops, notifications read by the listener thread).
        self._wake = Waker()
        self._grace_deadline: float | None = None
        self._listener = None
        #: Whether the listener is trusted (it proves that notifications arrive), as last recorded.
        self._listening = False
        #: With a trusted listener, claim only when work may be there: after a notification, or while
        #: claims come back full. Otherwise every pass claims (polling).
        self._maybe_work = threading.Event()
        self._maybe_work.set()
        #: The limits enforced in this worker's claims (None: none; see ``engine.flow``).
        self.limits = flow_limits() or None
        #: Set by the listener when a queue is paused or resumed: read the paused queues before claiming.
        self._flow_changed = threading.Event()
        #: The paused queues this worker last acted upon.
        self._paused: list[str] = []
        #: Monotonic time when a start held back by a rate limit may happen (None: none held back).
        self._flow_retry: float | None = None
        self.pool = TaskPool(threads, task_timeout, on_outcome=self._wake.set)
        #: Claimed and not yet recorded: waiting for a thread, running, or finished but not recorded.
        self._in_flight: dict[int, TaskExec] = {}
        #: Outcomes taken from the pool whose recording has not been committed yet.
        self._pending: list[tuple[TaskExec, Outcome]] = []
        # None: this worker never touches schedules (--no_schedules).
        scheduler = None
        if not no_schedules:
            scheduler = Scheduler(self.engine, [s for s in schedules_registry.values() if self._serves(s.queue_name)])
        self.duties = Duties(self.engine, self.tick, self.timeout, scheduler, self._stopping)

    @property
    def scheduler(self) -> Scheduler | None:
        return self.duties.scheduler

    # -- public ------------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until done or stopped; return the process exit code."""
        stopping.install_signal_handlers(self)
        self.status = self._register_when_possible()
        if self.status is None:
            return self.exit_code  # stopped before the database came up
        self.duties.registered(self.status, self.status.started)
        self._log_start()
        self.pool.start()
        # --once/--until_done poll: they stop when a claim finds nothing.
        listener = (
            None
            if self.once or self.until_done
            else self.engine.listener(self.status, self.tick, self._serves, self._notified, self._flow_notified)
        )
        if listener is not None:
            self._listener = self.duties.listener = listener.start()
        crash = None
        try:
            self._loop()
            stopping.finish_in_flight(self)
        except Exception:  # noqa: BLE001 - record the crash, then report it by the exit code
            crash = traceback.format_exc()
            logger.critical("Worker %s crashed:\n%s", self.label, crash)
            self.exit_code = EXIT_CRASHED
            self._stopping.set()
            stopping.finish_in_flight(self)
        finally:
            if listener is not None:
                listener.stop()
            if not self.abandoned:
                self.pool.stop()
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
        return Selection(sorted(tasks_registry), self.queues, self.excluded_queues, list(self._paused), self.limits)

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
                self.wait(delay)
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
        duties = self.duties
        if duties.due(now):
            duties.run(now)  # heartbeats too (and reads the paused queues)
        duties.heartbeat_if_due(now)
        self._follow_pauses()
        self._check_listener()
        if duties.scheduler:
            duties.scheduler.run_due(now)
        capacity = self.threads if self.once else self._capacity()
        if self.once or self.pool.waiting() <= self._refill_below():
            free, claimed = self.record_and_claim(capacity, now)
        else:
            free, claimed = 0, []  # the threads have work enough: record and claim in a bigger batch
        for execution in claimed:
            self._in_flight[execution.pk] = execution

        if self.once:
            self._start(claimed)
            self._wait_for_all()
            return None
        if self.until_done and free > 0 and not claimed and not self._in_flight and not self._flow_waiting():
            return None
        sleep = self._sleep_after(claimed, free)
        # Started last: this thread then goes to sleep at once and leaves the interpreter to the task
        # threads (a thread woken to start a task would otherwise wait for this one to finish its pass).
        self._start(claimed)
        if sleep is not None:
            self.wait(sleep)
        return True

    def _start(self, claimed: list[TaskExec]) -> None:
        for execution in claimed:
            self.pool.submit(execution)

    def _sleep_after(self, claimed: list[TaskExec], free: int) -> float | None:
        """Seconds to sleep after a pass that claimed ``claimed`` out of ``free``; None: pass again now."""
        duties = self.duties
        if self.pool.has_finished() and self.pool.waiting() + len(claimed) <= self._refill_below():
            return None  # outcomes to record, and the threads' claimed-ahead work runs low
        if self._in_flight and len(claimed) >= free:
            # Every slot is busy and there may be more work: wait for an outcome, not a tick.
            return min(duties.seconds_until_heartbeat(), duties.seconds_until_schedule())
        # Idle, or the claim took every waiting execution: until the next duties (tick or sleeping
        # execution due), an outcome, a notification, or (trusting the listener) until the ping in
        # flight is overdue. After a partial claim another pass would find nothing to claim.
        listener = self._listener
        until_check = listener.seconds_until_check(time.monotonic()) if listener and self._listening else float("inf")
        until_flow = max(self._flow_retry - time.monotonic(), 0.0) if self._flow_retry is not None else float("inf")
        return min(
            duties.seconds_until_heartbeat(),
            duties.seconds_until_due(),
            duties.seconds_until_schedule(),
            until_check,
            until_flow,
        )

    def record_and_claim(self, capacity: int, now: datetime.datetime) -> tuple[int, list[TaskExec]]:
        """Record the outcomes finished so far and claim executions up to ``capacity`` held at once,
        in one transaction; returns how many could be claimed, and the claimed executions."""
        self._pending += self.pool.finished()
        free = capacity - (len(self._in_flight) - len(self._pending))
        # Limited work held back may start once a slot (one of ours just ended) or a start frees up.
        flow_due = self.limits is not None and (
            bool(self._pending) or (self._flow_retry is not None and time.monotonic() >= self._flow_retry)
        )
        claim = (
            free > 0
            and not self._stopping.is_set()
            and (not self._listening or self._maybe_work.is_set() or flow_due)
        )
        if claim:
            self._maybe_work.clear()  # set again by a notification arriving from now on
        if not self._pending and not claim:
            return free, []
        selection = self.selection
        # Limited work is claimed for idle threads only: claimed ahead, it would hold slots unused.
        selection.limited_max = max(self.threads - (len(self._in_flight) - len(self._pending)), 0)
        self.engine.flow_retry_after, self.engine.flow_held = None, False
        recorded, claimed = self.engine.record_and_claim(
            self.duties.status, self._pending, selection, free if claim else 0, now
        )
        retry = self.engine.flow_retry_after
        self._flow_retry = time.monotonic() + retry + 0.001 if retry is not None else None
        if claim and len(claimed) >= free:
            self._maybe_work.set()  # a full claim: there may be more
        pending, self._pending = self._pending, []
        for (execution, outcome), ok in zip(pending, recorded):
            self._in_flight.pop(execution.pk, None)
            log_outcome(execution, outcome, ok)
            if ok:
                signals.send(signals.task_finished, execution, exception=outcome.exception)
        return (free if claim else 0), claimed

    def _flow_waiting(self) -> bool:
        """Whether limited work may still be waiting for a slot or a start (``--until_done`` waits for it)."""
        return self.limits is not None and (self._flow_retry is not None or self.engine.flow_held)

    def _flow_notified(self, queue_name: str) -> None:
        """Called by the listener thread: ``queue_name`` was paused or resumed. The task threads hold its
        executions at once (a pause stops new starts within milliseconds, not after a read of the
        pauses by the main thread); the main thread then reads which queues are paused."""
        self.pool.add_hold(queue_name)
        self._flow_changed.set()
        self._maybe_work.set()
        self._wake.set()

    def _follow_pauses(self) -> None:
        """Act on the paused queues as last read (each tick), or read them now after a notification: stop
        claiming from a paused queue and give back to the queue its executions claimed but not started."""
        read = self._flow_changed.is_set()
        if read:
            self._flow_changed.clear()
            self.engine.read_paused()
        paused = list(self.engine.paused_queues)
        # The threads' holds follow each read (a notification's hold is undone by the truth); not when
        # another notification came meanwhile: the next pass reads again first.
        if (read or paused != self._paused) and not self._flow_changed.is_set():
            self.pool.hold(paused)
        back = self.pool.held_back()
        if back:
            for execution in back:
                if execution.queue not in paused:
                    self.pool.submit(execution)  # not paused after all (a resume, or a pause undone)
            self._give_back([e for e in back if e.queue in paused])
        if paused == self._paused:
            return
        newly = set(paused) - set(self._paused)
        if set(self._paused) - set(paused):
            self._maybe_work.set()  # resumed: its waiting executions may start
        self._paused = paused
        if newly:
            logger.info("Queue(s) paused: %s; their running executions finish, no new one starts", ", ".join(sorted(newly)))
            unstarted = self.pool.take_unstarted()
            back = [e for e in unstarted if e.queue in newly]
            for execution in unstarted:
                if execution.queue not in newly:
                    self.pool.submit(execution)
            self._give_back(back)

    def _give_back(self, executions: list[TaskExec]) -> None:
        """Return claimed executions that did not start to the queue (their queue was paused)."""
        if executions:
            self.engine.release(executions, self.duties.status)
            for execution in executions:
                self._in_flight.pop(execution.pk, None)

    def _check_listener(self) -> None:
        """Trust the listener only while it proves that notifications arrive; record changes (the admin
        and ``toosimpleq_status`` show them)."""
        listening = self._listener is not None and self._listener.trusted(time.monotonic())
        if listening == self._listening:
            return
        self.engine.record_notifications(self.duties.status, listening)
        self._listening = listening
        if listening:
            logger.info("Notifications arrive: new work starts at once, no polling while they keep arriving")
        else:
            logger.warning(
                "Notifications stopped arriving (a ping did not come back, or the LISTEN connection is being "
                "reopened): polling every tick until they do"
            )

    def _capacity(self) -> int:
        """How many executions to hold at once: one per thread, plus, when executions are short, more
        claimed ahead so that threads never wait for the database (about 50 ms of work, at most
        ``MAX_AHEAD``): a pass (its commit, its statements) then serves many executions."""
        average = self.pool.average_run
        if average is None:
            return self.threads
        extra = int(self.threads * 0.05 / max(average, 0.00005))
        return self.threads + min(extra, MAX_AHEAD)

    def _refill_below(self) -> int:
        """Record and claim again once no more than this many claimed executions wait for a thread: a
        quarter of the work claimed ahead is done, so a pass serves a batch, not each outcome, and the
        threads still have three quarters of it to run while the pass records and claims. (Waiting
        for half made the threads of a single-process drain idle for most of each pass: a pass of
        ~180 outcomes and claims takes 10-13 ms on PostgreSQL, more than the work left.)"""
        return max(self._capacity() - self.threads, 0) * 3 // 4

    def _notified(self, sleeping: bool) -> None:
        """Called by the listener thread: a served queue got work (or the listener reconnected)."""
        if sleeping:
            self.duties.reread_sleeping.set()  # re-read when the next sleeping execution is due
        else:
            self._maybe_work.set()
        self._wake.set()

    def _serves(self, queue_name: str) -> bool:
        if self.queues:
            return queue_name in self.queues
        return queue_name not in self.excluded_queues

    def wait(self, seconds: float) -> None:
        """Sleep until ``seconds`` pass, an outcome arrives, a notification comes or a stop is asked. A
        notification arriving on the listener's connection is read here, by this thread (see
        ``waking``)."""
        listener = self._listener
        fd = listener.fileno() if listener is not None else None
        if self._wake.wait(seconds, fd) and listener is not None:
            listener.take_notifications()
            self._wake.clear()  # this thread was already awake for what it just read

    def _wait_for_all(self) -> None:
        """Wait until every claimed execution has run and its outcome is recorded."""
        while self._in_flight:
            self.wait(self.duties.seconds_until_heartbeat())
            now = timezone.now()
            self.duties.heartbeat_if_due(now)
            self.record_and_claim(0, now)

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
                if missing is not None:
                    raise
                failures += 1
                delay = self._backoff(failures)
                logger.error(
                    "Database %r unreachable (%s); trying again in %.1fs", self.db, " ".join(str(exc).split()), delay
                )
                self.engine.reset_connection()
                self.wait(delay)
        return None

    def _missing_tables(self) -> list[str] | None:
        """The queue's tables missing from its database; None if the database cannot be reached."""
        try:
            existing = set(connections[self.db].introspection.table_names())
        except DatabaseError:
            self.engine.reset_connection()
            return None
        return [model._meta.db_table for model in (TaskExec, WorkerStatus) if model._meta.db_table not in existing]

    def _register(self) -> WorkerStatus:
        return self.engine.register_worker(
            label=self.label,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=self.queues,
            excluded_queues=self.excluded_queues,
            tasks=sorted(tasks_registry),
            schedules=sorted(schedules_registry),
            timeout=self.timeout,
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
        status = self.status
        if status is None:
            return
        stopping.safely(self, lambda: self.engine.record_exit(status, self.exit_code, self.stop_signal, crash))
        logger.info("Worker %s stopped (exit code %s)", self.label, self.exit_code)
