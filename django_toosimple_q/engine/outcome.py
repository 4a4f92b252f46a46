"""What one run of an execution produced: a value made by the worker's executor, recorded by the engine."""

from __future__ import annotations

import dataclasses
import datetime
import math
from dataclasses import dataclass, field
from typing import Any

from .. import validation
from ..models import TaskExec

States = TaskExec.States

#: The longest retry delay applied, whatever a row says (registration refuses longer chains).
MAX_RETRY_DELAY = validation.MAX_RETRY_WAIT.total_seconds()
#: Where a retry lands when its delay overflows a datetime (only rows written by hand or by other
#: versions can ask for that): a due time every database stores and reads back in any time zone.
LATEST_DUE = validation.LATEST_DUE


@dataclass(frozen=True)
class Outcome:
    """The end of one run: its final state, when it ran, what it returned, printed or raised.

    ``result_json`` is the result already encoded for storage (the executor encodes it once, to know
    that it can be stored); ``exception_class`` the dotted path of the exception a FAILED run raised;
    ``retry`` False when a failure must not be retried whatever the task's retries (it ran to the end,
    e.g. with an unstorable result). ``exception`` is the exception object itself, only in the process
    that ran the task (for logs and Django's signals), never stored nor sent between processes.
    """

    state: str
    started: datetime.datetime | None
    finished: datetime.datetime
    result: Any = None
    result_json: str | None = None
    error: str | None = None
    output: str = ""
    exception_class: str | None = None
    retry: bool = True
    exception: BaseException | None = field(default=None, compare=False, repr=False)

    def without_exception(self) -> Outcome:
        """This outcome as it can cross a process boundary (exceptions may not pickle)."""
        return dataclasses.replace(self, exception=None) if self.exception is not None else self

    def fields(self) -> dict[str, Any]:
        """The columns of the execution this outcome writes."""
        return {
            "state": self.state,
            "started": self.started,
            "finished": self.finished,
            "result": self.result,
            "error": self.error,
            "output": self.output,
            "exception_class": self.exception_class,
        }

    def retry_due(self, execution: TaskExec) -> datetime.datetime | None:
        """When the retry of ``execution`` ending with this outcome is due, or None (not retried)."""
        if self.state != States.FAILED or not self.retry or execution.retries <= 0:
            return None
        try:
            return self.finished + datetime.timedelta(seconds=bounded_delay(execution.retry_delay))
        except OverflowError:
            return LATEST_DUE if self.finished.tzinfo is not None else LATEST_DUE.replace(tzinfo=None)

    def retry_of(self, execution: TaskExec) -> TaskExec | None:
        """The unsaved replacement that retries ``execution``, or None. Each retry waits twice as long."""
        due = self.retry_due(execution)
        if due is None:
            return None
        delay = bounded_delay(execution.retry_delay)
        return execution.make_replacement(due, execution.retries - 1, bounded_delay(delay * 2))


def bounded_delay(seconds: float) -> float:
    """A retry delay in [0, MAX_RETRY_DELAY]; anything else (nan, inf, negative) is clamped."""
    if math.isnan(seconds) or seconds > MAX_RETRY_DELAY:
        return MAX_RETRY_DELAY
    return max(float(seconds), 0.0)
