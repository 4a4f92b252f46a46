"""What may enter the queue: one copy of each rule on task options, names and due times.

``Task`` (so ``@register_task`` and the adapters of Django's ``@task``), schedules, Django's tasks
backend and ``contrib.mail`` all check their values here, so that nothing the database would refuse
later, or that would overflow when a worker computes a retry or a time limit, is accepted at
registration or queue time.

Each ``*_problem`` function returns what is wrong as the end of a sentence ("must be ..., not ...")
or None when the value is fine; the caller names the task or setting in front and raises the
exception its API promises (``ConfigurationError``, Django's ``InvalidTask``, ``ImproperlyConfigured``).
"""

from __future__ import annotations

import datetime
import math
import re
from typing import Any

from django.conf import settings
from django.utils import timezone

from .errors import ConfigurationError, InvalidCall, InvalidDue

UTC = datetime.timezone.utc

#: ``TaskExec.priority`` is an IntegerField: 32 bits, signed, on every database.
PRIORITY_MIN = -(2**31)
PRIORITY_MAX = 2**31 - 1
#: More attempts than this is a mistake rather than a policy (each retry doubles the delay).
MAX_RETRIES = 1000
#: The longest wait a retry chain may reach: ``retry_delay * 2 ** (retries - 1)`` seconds.
MAX_RETRY_WAIT = datetime.timedelta(days=36525)  # 100 years: due times stay far from year 9999
#: The longest time limit: the worker waits on its child with ``poll()``, which takes at most ~24.8 days.
MAX_TIMEOUT = datetime.timedelta(days=7)
#: Task, queue and schedule names are stored in ``CharField(max_length=255)`` columns.
MAX_NAME_LENGTH = 255
#: ``due`` stays a day inside what Python's datetime holds (in UTC), so that it reads back in any time
#: zone (offsets are under a day) on every database.
EARLIEST_DUE = datetime.datetime.min.replace(tzinfo=UTC) + datetime.timedelta(days=1)
LATEST_DUE = datetime.datetime.max.replace(tzinfo=UTC) - datetime.timedelta(days=1)

# What no text column takes: NUL (PostgreSQL refuses it) and lone surrogates (not encodable in UTF-8).
_UNSTORABLE_CHARACTER = re.compile("[\x00\ud800-\udfff]")


def show(value: Any, limit: int = 60) -> str:
    """A short repr for an error message; never raises (``repr(10**5000)`` does)."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - too large or too deep to show: say what it is
        if isinstance(value, int):
            return f"an int of {value.bit_length()} bits"
        return f"a {type(value).__qualname__}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _seconds(value: Any) -> float | None:
    """``value`` as a finite float, or None (nan, infinity, an int too large for a float)."""
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) else None


def text_problem(value: Any, max_length: int = MAX_NAME_LENGTH) -> str | None:
    """A name stored in a text column: a non-empty string the databases accept."""
    if not isinstance(value, str):
        return f"must be a string, not {show(value)}"
    if not value:
        return "must not be empty"
    if len(value) > max_length:
        return f"must be at most {max_length} characters long, not {len(value)} ({show(value, 40)})"
    bad = _UNSTORABLE_CHARACTER.search(value)
    if bad is not None:
        return (
            f"must not contain {bad.group()!r} (at position {bad.start()} of {show(value, 40)}): databases "
            "refuse NUL and lone surrogates in text"
        )
    return None


def priority_problem(value: Any) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return f"must be a whole number, not {show(value)}"
    if not PRIORITY_MIN <= value <= PRIORITY_MAX:
        return f"must be between {PRIORITY_MIN} and {PRIORITY_MAX} (a 32-bit database column), not {show(value)}"
    return None


def retries_problem(value: Any) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_RETRIES:
        return f"must be a whole number from 0 to {MAX_RETRIES}, not {show(value)}"
    return None


def retry_delay_problem(value: Any, retries: Any = 0) -> str | None:
    """``retry_delay`` alone, then with ``retries`` (if valid): the doubled delays must stay in bounds."""
    if not _is_number(value):
        return f"must be a number of seconds, not {show(value)}"
    seconds = _seconds(value)
    if seconds is None or seconds < 0:
        return f"must be a finite number of seconds >= 0, not {show(value)}"
    if retries_problem(retries) is None and retries > 0:
        longest = seconds * 2.0 ** (retries - 1)
        limit = MAX_RETRY_WAIT.total_seconds()
        if longest > limit:
            return (
                f"is too long with retries={retries}: the last retry would wait retry_delay * 2**(retries - 1) = "
                f"{longest:.3g}s, and the longest wait allowed is {limit:.0f}s (100 years); "
                "lower retry_delay or retries"
            )
    return None


def timeout_problem(value: Any) -> str | None:
    """A time limit in seconds, or None for none."""
    if value is None:
        return None
    if not _is_number(value):
        return f"must be a number of seconds or None, not {show(value)}"
    seconds = _seconds(value)
    limit = MAX_TIMEOUT.total_seconds()
    if seconds is None or not 0 < seconds <= limit:
        return f"must be a number of seconds > 0 and at most {limit:.0f} (7 days), or None; not {show(value)}"
    return None


def options_problem(
    *, priority: Any = 0, queue: Any = "default", retries: Any = 0, retry_delay: Any = 0, timeout: Any = None
) -> str | None:
    """The first problem among a task's options, as "<option> must ...", or None."""
    checks = (
        ("priority", priority_problem(priority)),
        ("queue", text_problem(queue)),
        ("retries", retries_problem(retries)),
        ("retry_delay", retry_delay_problem(retry_delay, retries)),
        ("timeout", timeout_problem(timeout)),
    )
    for option, problem in checks:
        if problem is not None:
            return f"{option} {problem}"
    return None


def check_task(name: Any, **options: Any) -> None:
    """Raise ``ConfigurationError`` naming the task and what to change, if its name or an option cannot work."""
    problem = text_problem(name)
    if problem is not None:
        raise ConfigurationError(f"Task name {show(name, 80)} {problem}: give the task another name (name=...)")
    problem = options_problem(**options)
    if problem is not None:
        raise ConfigurationError(f"Task {name!r}: {problem}")


def due_for_db(task_name: str, due: Any) -> datetime.datetime:
    """``due`` checked and as the database takes it: aware in UTC with ``USE_TZ`` (a naive one is read in
    the current time zone, as Django does for model fields), naive local time without.

    Raises TypeError for a value that is not a ``datetime.datetime`` (a ``date``, a string...) and
    ValueError for one out of range, both naming the task.
    """
    if not isinstance(due, datetime.datetime):
        raise InvalidCall(
            f"Task {task_name!r}: due must be a datetime.datetime, not {type(due).__qualname__} {show(due)}"
            + (" (for a day, give a datetime at the hour you want)" if isinstance(due, datetime.date) else "")
        )
    try:
        if settings.USE_TZ:
            # In UTC: PostgreSQL refuses some offsets Python allows (beyond 15:59, or with fractions of a second).
            value = (timezone.make_aware(due) if timezone.is_naive(due) else due).astimezone(UTC)
            instant = value
        else:  # stored as naive local time: the range applies to that reading
            value = timezone.make_naive(due) if timezone.is_aware(due) else due
            instant = value.replace(tzinfo=UTC)
    except (OverflowError, ValueError):  # beyond what a datetime holds once converted
        instant = None
    if instant is None or not EARLIEST_DUE <= instant <= LATEST_DUE:
        raise InvalidDue(
            f"Task {task_name!r}: due {show(due)} is out of range: it must lie between "
            f"{EARLIEST_DUE.isoformat(' ', 'minutes')} and {LATEST_DUE.isoformat(' ', 'minutes')}, so that every "
            "database can store it and read it back in any time zone"
        )
    return value
