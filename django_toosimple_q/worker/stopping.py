"""How a worker stops: signals ask for it; running executions get the grace period; what has not
started goes back to the queue; what still runs when the grace period ends is interrupted and replaced."""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from django.utils import timezone

if TYPE_CHECKING:
    from ..models import TaskExec
    from .worker import Worker

logger = logging.getLogger("django_toosimple_q.worker")
T = TypeVar("T")


def install_signal_handlers(worker: Worker) -> None:
    """SIGTERM/SIGINT: a first one stops gracefully, a second one stops without waiting."""
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers (e.g. a worker driven from a test thread)

    def on_signal(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if worker.stopping.is_set() and worker.stop_signal is not None:
            logger.warning("Second %s: interrupting running tasks and stopping now", name)
            worker.request_abandon()
            return
        logger.info("Received %s: finishing running tasks (up to %gs), then stopping", name, worker.grace)
        worker.request_stop(worker.exit_code, signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def finish_in_flight(worker: Worker) -> None:
    """After a stop: give back what has not started, let running executions finish until the grace
    period ends (recording their outcomes), then interrupt what still runs."""
    engine, in_flight = worker.engine, worker._in_flight
    not_started = worker.pool.take_unstarted()
    if not_started and safely(worker, lambda: engine.release(not_started, worker.duties.status)) is not None:
        for execution in not_started:
            in_flight.pop(execution.pk, None)
    while in_flight and not worker._abandon.is_set():
        remaining = (worker._grace_deadline or time.monotonic()) - time.monotonic()
        if remaining <= 0:
            break
        worker.wait(min(remaining, worker.duties.seconds_until_heartbeat()))
        safely(worker, lambda: worker.duties.heartbeat_if_due(timezone.now()))
        safely(worker, lambda: worker.record_and_claim(0, timezone.now()))
    safely(worker, lambda: worker.record_and_claim(0, timezone.now()))
    if not in_flight:
        return
    worker.abandoned = True
    worker._abandon.set()
    stopped_again = (
        worker.stop_signal is not None and worker._grace_deadline and time.monotonic() < worker._grace_deadline
    )
    reason = (
        "Interrupted: the worker was stopped again before it finished."
        if stopped_again
        else f"Interrupted: the worker stopped and the task did not finish within the {worker.grace:g}s grace period."
    )
    worker.pool.kill_children()
    for execution in list(in_flight.values()):
        _interrupt(worker, execution, reason)


def _interrupt(worker: Worker, execution: TaskExec, reason: str) -> None:
    replacement = safely(worker, lambda: worker.engine.interrupt(execution, reason, timezone.now(), worker.status))
    if replacement is not None:
        logger.warning("%s #%s interrupted; replaced by #%s", execution.task_name, execution.pk, replacement.pk)


def safely(worker: Worker, operation: Callable[[], T]) -> T | None:
    """Bookkeeping on the way out: try hard, but never let it prevent the exit."""
    try:
        return worker.engine.persistently(operation, give_up=lambda: True)
    except Exception:  # noqa: BLE001
        logger.exception("Database bookkeeping failed while stopping; other workers will rescue what is left")
        return None
