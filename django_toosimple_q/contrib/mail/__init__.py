"""A queued email backend: messages are stored as task executions and delivered by the worker.

Settings: ``EMAIL_BACKEND = "django_toosimple_q.contrib.mail.backends.QueueBackend"`` to queue,
``TOOSIMPLEQ_EMAIL_BACKEND`` for the backend that really delivers (SMTP by default), and
``TOOSIMPLEQ_EMAIL_RETRIES`` / ``TOOSIMPLEQ_EMAIL_RETRY_DELAY`` for retries of failed deliveries.
Adding ``django_toosimple_q.contrib.mail`` to ``INSTALLED_APPS`` is recommended; as in 1.x, the
queue also works with only ``EMAIL_BACKEND`` set (the worker then loads the delivery task itself).
"""

from __future__ import annotations

APP = "django_toosimple_q.contrib.mail"
#: ``EMAIL_BACKEND`` values that mean "queue the emails" (``backend`` is the 1.x module name).
QUEUE_BACKENDS = (f"{APP}.backends.QueueBackend", f"{APP}.backend.QueueBackend")


def queue_backend_configured() -> bool:
    """Whether the project sends its emails through the queue: ``EMAIL_BACKEND``, or on Django >= 6.1
    the ``default`` entry of ``MAILERS``."""
    from django.conf import settings

    mailers = getattr(settings, "MAILERS", None)
    if mailers:  # Django >= 6.1 refuses to read EMAIL_BACKEND when MAILERS is set
        return (mailers.get("default") or {}).get("BACKEND") in QUEUE_BACKENDS
    return getattr(settings, "EMAIL_BACKEND", None) in QUEUE_BACKENDS


def load_delivery_task() -> None:
    """Register the delivery task if the project queues emails, even without the app installed (as in
    1.x). Called by ``manage.py worker`` at start-up."""
    if queue_backend_configured():
        from . import tasks  # noqa: F401 - registers the delivery task
