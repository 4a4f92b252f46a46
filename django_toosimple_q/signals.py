"""Signals sent by the worker around each execution, for users' own metrics and logs.

Both are sent from the thread that runs the task, with ``sender=TaskExec`` and the execution as
``execution``. Receivers are called with ``send_robust``: an exception in a receiver is logged and
never changes the outcome of the task or stops the worker.

- ``task_started``: just before the task's function is called (state PROCESSING, ``started`` set).
- ``task_finished``: after the outcome was written; ``execution.state`` is the final state
  (SUCCEEDED, FAILED, INVALID, ...) and ``result``/``error``/``finished`` are filled in.
  An execution found invalid is finished without having been started.
"""

from __future__ import annotations

import logging

from django.dispatch import Signal

logger = logging.getLogger("django_toosimple_q.signals")

task_started = Signal()
task_finished = Signal()


def send(signal: Signal, execution) -> None:
    """Send ``signal`` for ``execution``; a failing receiver is logged, never raised."""
    for receiver, outcome in signal.send_robust(sender=type(execution), execution=execution):
        if isinstance(outcome, Exception):
            logger.error("Signal receiver %r failed for execution #%s", receiver, execution.pk, exc_info=outcome)
