"""Django system checks: schedules and settings that cannot work stop ``manage.py worker`` (and ``check``)
at start-up."""

from __future__ import annotations

from typing import Any

from django.core import checks

from .registry import ConfigurationError, invalid_schedules, schedules_registry


@checks.register("toosimpleq")
def check_schedules(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Each registered schedule must name a registered task, a valid cron expression and time zone,
    and arguments the task accepts (the decorator refuses these too; this catches later changes)."""
    from .schedules import validate

    errors: list[checks.CheckMessage] = []
    for name, schedule in sorted(schedules_registry.items()):
        try:
            validate(schedule)
            if name != schedule.name:
                raise ConfigurationError(
                    f"Schedule {schedule.name!r} (cron {schedule.cron!r}) is registered under another name, {name!r}"
                )
        except ConfigurationError as exc:
            errors.append(checks.Error(str(exc), obj=schedule, id="toosimpleq.E001"))
    for name, problem in sorted(invalid_schedules.items()):
        errors.append(checks.Error(problem, obj=name, id="toosimpleq.E001"))
    return errors


@checks.register("toosimpleq")
def check_mail_app(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Emails queued without the contrib app installed still work (workers load its task), but the
    documented set-up lists the app; say so."""
    from django.apps import apps

    from .contrib.mail import APP, queue_backend_configured

    if queue_backend_configured() and not apps.is_installed(APP):
        return [
            checks.Warning(
                f"EMAIL_BACKEND queues emails through django-toosimple-q, but {APP!r} is not in INSTALLED_APPS.",
                hint=f"Workers deliver them anyway; add {APP!r} to INSTALLED_APPS, as the documentation asks.",
                id="toosimpleq.W001",
            )
        ]
    return []


@checks.register("toosimpleq")
def check_listen_database(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``TOOSIMPLEQ_LISTEN_DATABASE`` must be None/False or the alias of a PostgreSQL database."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    from . import conf

    if not hasattr(settings, "TOOSIMPLEQ_LISTEN_DATABASE"):
        return []
    try:
        conf.listen_database()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="toosimpleq.E002")]
    return []


@checks.register("toosimpleq")
def check_queue_limits(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``TOOSIMPLEQ_QUEUES`` (and the ``queue_limits`` of our Django tasks backends) must be valid limits."""
    from .limits import queue_limits

    try:
        queue_limits()
    except ConfigurationError as exc:
        return [checks.Error(str(exc), id="toosimpleq.E003")]
    return []
