"""Settings read by the library, in one place, with their defaults and validation."""

from __future__ import annotations

import datetime

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, router


def queue_database() -> str:
    """The database alias holding the queue, the one answer used everywhere (the engine, the models'
    manager, the admin, contrib apps, Django's tasks backend): ``TOOSIMPLEQ_DATABASE``, else the
    database your routers give for writing the queue's models (usually ``"default"``)."""
    alias = getattr(settings, "TOOSIMPLEQ_DATABASE", None)
    if alias is None:
        return router.db_for_write(apps.get_model("toosimpleq", "TaskExec"))
    if alias not in settings.DATABASES:
        raise ImproperlyConfigured(
            f"TOOSIMPLEQ_DATABASE is {alias!r}, which is not an alias in DATABASES ({', '.join(settings.DATABASES)})"
        )
    return alias


def listen_database() -> str | None:
    """``TOOSIMPLEQ_LISTEN_DATABASE``: the database alias the worker's LISTEN connection uses (PostgreSQL).

    Unset: the queue database. An alias of ``DATABASES``: that connection instead (a direct one, when
    the rest goes through a transaction-pooling PgBouncer). ``None`` or ``False``: no LISTEN at all,
    workers poll every ``--tick``.
    """
    if not hasattr(settings, "TOOSIMPLEQ_LISTEN_DATABASE"):
        return queue_database()
    value = settings.TOOSIMPLEQ_LISTEN_DATABASE
    if value is None or value is False:
        return None
    if not isinstance(value, str) or value not in settings.DATABASES:
        raise ImproperlyConfigured(
            f"TOOSIMPLEQ_LISTEN_DATABASE is {value!r}, which is not an alias in DATABASES "
            f"({', '.join(settings.DATABASES)}): set it to the alias of a PostgreSQL connection that reaches "
            "the server directly (or through a session-pooling PgBouncer), or to None to turn notifications "
            "off (workers then poll every --tick)."
        )
    vendor = connections[value].vendor  # loads the backend; connects to nothing
    if vendor != "postgresql":
        raise ImproperlyConfigured(
            f"TOOSIMPLEQ_LISTEN_DATABASE is {value!r}, a {vendor} database: notifications need "
            "PostgreSQL. Set it to the alias of a PostgreSQL connection, or to None to turn them off."
        )
    return value


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


#: ``metrics_token()`` when ``TOOSIMPLEQ_METRICS_TOKEN`` is not set at all.
NOT_SET = object()


def metrics_token() -> object:
    """``TOOSIMPLEQ_METRICS_TOKEN``: the bearer token the metrics view asks for (a string); ``None``:
    the view answers anyone (your middleware or network protects it); ``NOT_SET`` when the setting is
    missing: the view refuses every request, saying how to configure it."""
    if not hasattr(settings, "TOOSIMPLEQ_METRICS_TOKEN"):
        return NOT_SET
    value = settings.TOOSIMPLEQ_METRICS_TOKEN
    if value is not None and (not isinstance(value, str) or not value):
        raise ImproperlyConfigured(
            "TOOSIMPLEQ_METRICS_TOKEN must be a non-empty string (the bearer token Prometheus sends) or None "
            f"(the metrics view then answers every request: protect it yourself), not {value!r}"
        )
    return value
