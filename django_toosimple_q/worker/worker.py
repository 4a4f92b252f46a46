"""The worker: a plain object whose loop heartbeats, wakes, claims and runs executions."""

from __future__ import annotations

import datetime
import logging
import os
import signal
import socket
import threading
import traceback
import queue
from typing import Iterable

from django.conf import settings
from django.db import connections, router
from django.utils import timezone

from ..engine import Selection, get_engine
from ..models import TaskExec, WorkerStatus
from ..registry import schedules_registry, tasks_registry
from .executor import execute
from .scheduler import Scheduler

logger = logging.getLogger("django_toosimple_q.worker")

#: Exit codes of ``manage.py worker`` (documented in the README).
EXIT_OK = 0
EXIT_CRASHED = 1
EXIT_RELOAD = 3  # asks the autoreloading parent to start a fresh child


class Worker:
    def __init__(
        self,
        *,
        queues: Iterable[str] = (),
        excluded_queues: Iterable[str] = (),
        tick: float = 10.0,
        once: bool = False,
        until_done: bool = False,
        label: str = "worker-{pid}",
        timeout: float = 120.0,
        threads: int = 1,
        no_schedules: bool = False,
    ):
        self.queues = sorted(set(queues))
        self.excluded_queues = sorted(set(excluded_queues))
        if self.queues and self.excluded_queues:
            raise ValueError("Give either queues to run or queues to exclude, not both.")
        if tick <= 0:
            raise ValueError(f"tick must be a positive number of seconds, not {tick!r}")
        if timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
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
        self.db = router.db_for_write(TaskExec)
        self.engine = get_engine(self.db)
        self.status: WorkerStatus | None = None
        self.exit_code = EXIT_OK
        self.stop_signal: int | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._in_flight: dict[int, TaskExec] = {}
        self._todo: queue.SimpleQueue[TaskExec | None] = queue.SimpleQueue()
        self._last_heartbeat: datetime.datetime | None = None
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
        self.status = self._register()
        self._log_start()  # the first pass's housekeeping reads the schedules' rows
        threads = [
            threading.Thread(target=self._task_thread, name=f"toosimpleq-task-{i}", daemon=True)
            for i in range(self.threads)
        ]
        for thread in threads:
            thread.start()
        crash = None
        try:
            self._loop()
        except Exception:  # noqa: BLE001 - record the crash, then report it by the exit code
            crash = traceback.format_exc()
            logger.critical("Worker %s crashed:\n%s", self.label, crash)
            self.exit_code = EXIT_CRASHED
        finally:
            for _ in threads:
                self._todo.put(None)
            for thread in threads:
                thread.join()
            self._record_exit(crash)
        return self.exit_code

    def request_stop(self, exit_code: int = EXIT_OK, signum: int | None = None) -> None:
        """Stop claiming; the loop ends once running executions are finished."""
        if signum is not None:
            self.stop_signal = signum
        self.exit_code = exit_code
        self._stopping.set()
        self._wake.set()

    @property
    def selection(self) -> Selection:
        return Selection(sorted(tasks_registry), self.queues, self.excluded_queues)

    # -- the loop ----------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            now = timezone.now()
            self._heartbeat_if_due(now)
            self.engine.wake_sleeping(now)
            self._housekeeping_if_due(now)
            if self.scheduler:
                self.scheduler.run_due(now)
            free = self.threads - len(self._in_flight)
            claimed = self.engine.claim(self.status, self.selection, free, now)
            for execution in claimed:
                self._in_flight[execution.pk] = execution
                self._todo.put(execution)

            if self.once:
                self._wait_for_all()
                return
            if self.until_done and not claimed and not self._in_flight:
                return
            if self._in_flight and len(claimed) == free:
                # Every slot is busy and there may be more work: wait for a slot, not a tick.
                self._wait(min(self._seconds_until_heartbeat(), self._seconds_until_schedule()))
            elif not claimed:
                self._wait(self._idle_wait(now))
        self._wait_for_all()

    def _task_thread(self) -> None:
        """Run claimed executions one after the other until told to stop (``None``)."""
        try:
            while (execution := self._todo.get()) is not None:
                try:
                    execute(execution, self.engine, self.status)
                except Exception:  # noqa: BLE001 - ``execute`` records task failures; this is our own fault
                    logger.exception("Recording the outcome of execution #%s failed", execution.pk)
                finally:
                    self._in_flight.pop(execution.pk, None)
                    self._wake.set()
                    # A task that broke its connection must not poison the next one on this thread.
                    for conn in connections.all():
                        if conn.connection is not None and not conn.is_usable():
                            conn.close()
        finally:
            connections.close_all()

    def _wait(self, seconds: float) -> None:
        self._wake.wait(max(seconds, 0))
        self._wake.clear()

    def _wait_for_all(self) -> None:
        while self._in_flight:
            self._wait(self._seconds_until_heartbeat())
            self._heartbeat_if_due(timezone.now())

    def _idle_wait(self, now: datetime.datetime) -> float:
        wait = min(self._seconds_until_heartbeat(), self._seconds_until_schedule())
        next_due = self.engine.next_wake_up()
        if next_due is not None:
            wait = min(wait, (next_due - now).total_seconds())
        return wait

    def _seconds_until_schedule(self) -> float:
        """Until the next occurrence of a schedule: a long tick must not make it late."""
        next_due = self.scheduler.next_wake_up() if self.scheduler else None
        if next_due is None:
            return float("inf")
        return max((next_due - timezone.now()).total_seconds(), 0.0)

    def _serves(self, queue_name: str) -> bool:
        if self.queues:
            return queue_name in self.queues
        return queue_name not in self.excluded_queues

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

    def _housekeeping_if_due(self, now: datetime.datetime) -> None:
        """Duties that need not run every pass: flag executions of tasks no online worker knows."""
        interval = max(self.tick, 30.0)
        if self._last_housekeeping and (now - self._last_housekeeping).total_seconds() < interval:
            return
        self._last_housekeeping = now
        grace = getattr(settings, "TOOSIMPLEQ_UNKNOWN_TASK_GRACE", 60)
        online = list(WorkerStatus.online(now, using=self.db))
        known = set(tasks_registry)
        for worker in online:
            known.update(worker.tasks or [])
        count = self.engine.invalidate_unknown(known, now - datetime.timedelta(seconds=grace), now)
        if count:
            logger.warning("Marked %s execution(s) INVALID: no online worker has their task registered", count)
        if self.scheduler:
            # Rolling deploys: a schedule only this worker lacks may still be in an older worker's code.
            known_schedules = set(schedules_registry)
            for worker in online:
                known_schedules.update(worker.schedules or [])
            self.scheduler.invalidate_unknown(known_schedules)
            self.scheduler.refresh(now)

    # -- start and exit ----------------------------------------------------------------------------

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
        try:
            WorkerStatus.objects.using(self.db).filter(pk=self.status.pk).update(**fields)
        except Exception:  # noqa: BLE001 - the database may be what failed
            logger.exception("Could not record the exit of worker %s", self.label)
        logger.info("Worker %s stopped (exit code %s)", self.label, self.exit_code)

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers (e.g. a worker driven from a test thread)

        def on_signal(signum, frame):
            if self._stopping.is_set():
                logger.warning("Second %s: stopping now", signal.Signals(signum).name)
                self.exit_code = EXIT_OK
                os._exit(EXIT_OK)
            logger.info("Received %s: finishing running tasks, then stopping", signal.Signals(signum).name)
            self.request_stop(EXIT_OK, signum)

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
