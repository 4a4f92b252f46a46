"""Settings read by the library, in one place, with their defaults and validation."""

from __future__ import annotations

import datetime

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import router


def queue_database() -> str:
    """The database alias holding the queue: ``TOOSIMPLEQ_DATABASE``, else what the routers say."""
    alias = getattr(settings, "TOOSIMPLEQ_DATABASE", None)
    if alias is None:
        from .models import TaskExec

        return router.db_for_write(TaskExec)
    if alias not in settings.DATABASES:
        raise ImproperlyConfigured(
            f"TOOSIMPLEQ_DATABASE is {alias!r}, which is not an alias in DATABASES ({', '.join(settings.DATABASES)})"
        )
    return alias


def delete_finished_after() -> datetime.timedelta | None:
    """``TOOSIMPLEQ_DELETE_FINISHED_AFTER``: age after which finished executions are deleted (None: never)."""
    value = getattr(settings, "TOOSIMPLEQ_DELETE_FINISHED_AFTER", datetime.timedelta(days=30))
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = datetime.timedelta(seconds=value)
    if not isinstance(value, datetime.timedelta) or value.total_seconds() < 0:
        raise ImproperlyConfigured(
            "TOOSIMPLEQ_DELETE_FINISHED_AFTER must be a timedelta, a number of seconds, or None to keep "
            f"finished executions forever; not {value!r}"
        )
    return value


def unknown_task_grace() -> float:
    """``TOOSIMPLEQ_UNKNOWN_TASK_GRACE``: seconds before an execution no online worker knows is INVALID."""
    value = getattr(settings, "TOOSIMPLEQ_UNKNOWN_TASK_GRACE", 60)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ImproperlyConfigured(f"TOOSIMPLEQ_UNKNOWN_TASK_GRACE must be a number of seconds >= 0, not {value!r}")
    return float(value)


def max_crashes() -> int:
    """``TOOSIMPLEQ_MAX_CRASHES``: after this many worker deaths while holding a call, it is FAILED."""
    value = getattr(settings, "TOOSIMPLEQ_MAX_CRASHES", 3)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ImproperlyConfigured(f"TOOSIMPLEQ_MAX_CRASHES must be a whole number >= 1, not {value!r}")
    return value
