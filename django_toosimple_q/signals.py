"""Signals sent by the worker around each execution, for users' own metrics and logs.

Both are sent by the worker process (also for executions with a time limit, which run in a child
process), from the thread that handles the execution, with ``sender=TaskExec`` and the execution as
``execution``. Receivers are called with ``send_robust``: an exception in a receiver is logged and
never changes the outcome of the task or stops the worker.

- ``task_started``: when the worker starts handling a claimed execution (state PROCESSING,
  ``started`` and ``worker`` set), just before its function is called.
- ``task_finished``: after the outcome was written; ``execution.state`` is the final state
  (SUCCEEDED, FAILED, INVALID, ...) and ``result``/``error``/``output``/``finished`` are filled in.
  Also given ``exception``: the exception the task raised, when it ran in the worker process itself
  (None otherwise; for a time-limited execution, which runs in a child process, only its text is kept).
  Not sent when the outcome could not be recorded (the execution is then marked INTERRUPTED).
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import Signal

logger = logging.getLogger("django_toosimple_q.signals")

task_started = Signal()
task_finished = Signal()


def send(signal: Signal, execution: Any, **extra: Any) -> None:
    """Send ``signal`` for ``execution``; a failing receiver is logged, never raised."""
    for receiver, outcome in signal.send_robust(sender=type(execution), execution=execution, **extra):
        if isinstance(outcome, Exception):
            logger.error("Signal receiver %r failed for execution #%s", receiver, execution.pk, exc_info=outcome)
