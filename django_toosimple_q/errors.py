"""Every exception django-toosimple-q raises on purpose (a foundation: imports nothing of ours).

``ToosimpleQError`` is their base: ``except ToosimpleQError`` catches any of them. Each also derives
from the built-in exception its situation has always raised (``ValueError`` for a bad declaration,
``TypeError`` for a call that cannot be queued...), so code written against those keeps working.
"""

from __future__ import annotations

from typing import Any


class ToosimpleQError(Exception):
    """The base of every exception of django-toosimple-q."""


# -- declaring and queuing (raised to your code, at the earliest point) --------------------------------


class ConfigurationError(ToosimpleQError, ValueError):
    """A task or schedule is declared in a way that cannot work; the message says what to change."""


class InvalidCron(ConfigurationError):
    """A cron expression or time zone that cannot be used; the message says why."""


class InvalidCall(ToosimpleQError, TypeError):
    """A call refused by ``queue()``/``queue_many()``: arguments the function cannot take, or a ``due``
    that is not a datetime; nothing was written. The message names the task and the argument."""


class InvalidDue(ToosimpleQError, ValueError):
    """A ``due`` outside the range every database can store and read back; nothing was written."""


class UnstorableValue(ToosimpleQError, TypeError):
    """A value with no faithful stored form; ``path`` says where it is, ``reason`` why."""

    def __init__(self, value: Any, path: str, reason: str | None = None):
        self.value = value
        self.path = path
        self.reason = reason or (
            f"is a {type(value).__module__}.{type(value).__qualname__}, which cannot be stored; "
            "use JSON types, tuple, set, bytes, datetime, date, time, timedelta, Decimal or UUID "
            "(for a model instance, pass its primary key)"
        )
        super().__init__(f"{path} {self.reason}")


# -- the worker ----------------------------------------------------------------------------------


class StartupError(ToosimpleQError):
    """The worker cannot start as configured (e.g. its tables do not exist); the message says what to do."""


class TimeLimitExceeded(ToosimpleQError):
    """Recorded for an execution stopped at its time limit (its class path is stored with the failure)."""


class ChildDied(ToosimpleQError):
    """Recorded for an execution whose child process ended before it finished (``os._exit``, a crash)."""


# -- how a call ended without a failure of its own (reported by Django's tasks framework) --------------


class ExecutionInterrupted(ToosimpleQError):
    """An attempt stopped before it finished (its worker was stopped or lost)."""


class ExecutionInvalid(ToosimpleQError):
    """An execution that could not start (unknown task, unusable arguments)."""


class ExecutionCancelled(ToosimpleQError):
    """An execution cancelled before it ran."""


class TaskFailed(ToosimpleQError):
    """Stands for a task's exception outside the process that ran it; the message is its traceback."""


# -- upgrading from 1.x --------------------------------------------------------------------------


class LegacyValueError(ToosimpleQError, ValueError):
    """A 1.x value that cannot become typed JSON; the message says what it holds."""


# -- workflows -------------------------------------------------------------------------------------


class WaitTimeout(ToosimpleQError, TimeoutError):
    """``TaskExec.wait()`` gave up: the call had not finished within its ``timeout``."""


class InvalidWorkflow(ToosimpleQError, TypeError):
    """A chain or group that cannot be queued (empty, or holding something that is not a step)."""


class UpstreamFailed(ToosimpleQError):
    """What a step that runs after failures (``run_on_failure=True``) receives in place of the result of
    an upstream step that ended without succeeding: its id, task, final state and error."""

    def __init__(self, step_id: int, task_name: str, state: str, error: str | None):
        super().__init__(f"upstream step {task_name} #{step_id} ended {state}")
        self.step_id = step_id
        self.task_name = task_name
        self.state = state
        self.error = error

    def __reduce__(self) -> tuple[type, tuple[int, str, str, str | None]]:
        return (type(self), (self.step_id, self.task_name, self.state, self.error))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UpstreamFailed) and (self.step_id, self.state) == (other.step_id, other.state)

    def __hash__(self) -> int:
        return hash((self.step_id, self.state))
