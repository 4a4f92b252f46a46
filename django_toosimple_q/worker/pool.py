"""The worker's task threads: each runs the executions handed to it one after the other, in-process or
in its own child process (see ``isolation``), and hands back their outcomes to the main thread,
which records them."""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from typing import Callable, Iterable

from django.db import connections

from .. import signals, tracing
from ..engine.outcome import Outcome
from ..models import TaskExec
from .executor import failed_outcome, run_execution, runs_isolated, timeout_of
from ..errors import ChildDied, TimeLimitExceeded
from .isolation import ChildRunner

logger = logging.getLogger("django_toosimple_q.worker")


class TaskPool:
    def __init__(self, size: int, task_timeout: float | None, on_outcome: Callable[[], None]):
        self.size = size
        #: The time limit of tasks that set none themselves (``--task_timeout``).
        self.task_timeout = task_timeout
        self._on_outcome = on_outcome
        self._todo: queue.SimpleQueue[TaskExec | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[tuple[TaskExec, Outcome]] = queue.SimpleQueue()
        self._children: list[ChildRunner] = []
        self._threads = [
            threading.Thread(target=self._serve, name=f"toosimpleq-task-{i}", daemon=True) for i in range(size)
        ]
        #: Seconds, a moving average of how long executions take (None until one has run).
        self.average_run: float | None = None
        #: Queues whose executions the threads hand back instead of starting (paused, or maybe paused: a
        #: notification said so and the main thread has not read the pauses yet). Replaced, never mutated.
        self._held: frozenset[str] = frozenset()
        self._held_back: queue.SimpleQueue[TaskExec] = queue.SimpleQueue()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, execution: TaskExec) -> None:
        self._todo.put(execution)

    def hold(self, queues: Iterable[str]) -> None:
        """From now on, hand back instead of starting the executions of ``queues`` (and only those)."""
        self._held = frozenset(queues)

    def add_hold(self, queue_name: str) -> None:
        """Also hold ``queue_name`` (called by the listener thread: a pause may have happened)."""
        self._held = self._held | {queue_name}

    def held_back(self) -> list[TaskExec]:
        """The executions the threads handed back since the last call, not started."""
        back: list[TaskExec] = []
        if self._held_back.empty():
            return back  # every pass asks: no exception raised in the usual case
        while True:
            try:
                back.append(self._held_back.get_nowait())
            except queue.Empty:
                return back

    def finished(self) -> list[tuple[TaskExec, Outcome]]:
        """The executions that ended since the last call, with their outcomes."""
        done = []
        while True:
            try:
                done.append(self._done.get_nowait())
            except queue.Empty:
                return done

    def has_finished(self) -> bool:
        return not self._done.empty()

    def waiting(self) -> int:
        """How many executions handed over wait for a thread."""
        return self._todo.qsize()

    def take_unstarted(self) -> list[TaskExec]:
        """Take back the executions handed over that no thread has started (those held back included)."""
        unstarted: list[TaskExec] = self.held_back()
        while True:
            try:
                execution = self._todo.get_nowait()
            except queue.Empty:
                return unstarted
            if execution is not None:
                unstarted.append(execution)

    def stop(self) -> None:
        """Let each thread finish what it runs, then end it."""
        for _ in self._threads:
            self._todo.put(None)
        for thread in self._threads:
            thread.join()

    def kill_children(self) -> None:
        """Stop what runs in child processes now (the worker gave up waiting for it)."""
        for child in self._children:
            child.kill()

    # -- in each thread -----------------------------------------------------------------------------

    def _serve(self) -> None:
        child = ChildRunner()
        self._children.append(child)
        try:
            while (execution := self._todo.get()) is not None:
                if execution.queue in self._held:
                    self._held_back.put(execution)  # the main thread releases it, or hands it over again
                    self._on_outcome()
                    continue
                signals.send(signals.task_started, execution)
                try:
                    outcome = self._run(execution, child)
                except Exception as exc:  # noqa: BLE001 - a fault of ours, not of the task
                    logger.exception("Running execution #%s failed", execution.pk)
                    outcome = failed_outcome(f"The worker failed to run the task: {exc!r}", type(exc))
                if outcome.started is None:
                    outcome = dataclasses.replace(outcome, started=execution.started)
                duration = (outcome.finished - (outcome.started or outcome.finished)).total_seconds()
                average = self.average_run
                self.average_run = duration if average is None else 0.9 * average + 0.1 * duration
                self._done.put((execution, outcome))
                self._on_outcome()
                _drop_broken_connections()
        finally:
            child.close()
            connections.close_all()

    def _run(self, execution: TaskExec, child: ChildRunner) -> Outcome:
        limit = timeout_of(execution, self.task_timeout)
        if not runs_isolated(execution, limit):
            return run_execution(execution)
        try:
            return child.run(execution, limit)
        except (TimeLimitExceeded, ChildDied) as exc:
            logger.error("%s #%s: %s", execution.task_name, execution.pk, exc)
            if tracing.ENABLED:  # the child's own span never ended
                tracing.lost_run(execution, exc, execution.started.timestamp() if execution.started else None)
            return failed_outcome(f"{type(exc).__name__}: {exc}", type(exc), started=execution.started)


def _drop_broken_connections() -> None:
    """A task that broke its connection must not poison the next one on this thread (checked only after
    a database error: ``is_usable()`` costs a round trip)."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is not None and conn.errors_occurred:
            if conn.is_usable():
                conn.errors_occurred = False
            else:
                conn.close()
