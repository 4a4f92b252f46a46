"""The delivery task and how emails are queued for it.

The queue and retries are read from the settings each time emails are queued (not when this module
is imported), so ``TOOSIMPLEQ_EMAIL_QUEUE``, ``TOOSIMPLEQ_EMAIL_RETRIES`` and
``TOOSIMPLEQ_EMAIL_RETRY_DELAY`` take effect without a restart and work with ``override_settings``.
The worker doubles the delay after each failed attempt.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any, Iterable

from django.conf import settings
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from ... import validation
from ...errors import ToosimpleQError
from ...decorators import register_task
from ...engine import get_engine
from ...models import TaskExec
from .serialization import message_from_data, message_to_data

logger = logging.getLogger("django_toosimple_q.contrib.mail")

DEFAULT_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
DEFAULT_RETRIES = 10
# Seconds before the first retry; with 10 retries the last attempt comes about 8.5 hours after the first.
DEFAULT_RETRY_DELAY = 30.0


class EmailDeliveryError(ToosimpleQError):
    """The delivery backend did not send a message (it raised, or reported nothing sent)."""


@register_task(
    name="django_toosimple_q.contrib.mail.send_emails",
    unique=True,
    retries=DEFAULT_RETRIES,
    retry_delay=DEFAULT_RETRY_DELAY,
)
def send_emails(*messages: dict[str, Any]) -> dict[str, Any]:
    """Deliver queued messages through ``TOOSIMPLEQ_EMAIL_BACKEND``.

    If every message fails, this raises, so the worker retries the whole execution. If only some fail,
    those are queued again as a new execution (so the ones already sent are not sent twice) and the
    result says so.
    """
    emails = [message_from_data(data) for data in messages]
    sent = 0
    failures: list[tuple[dict[str, Any], EmailMessage, BaseException]] = []
    with delivery_backend() as backend:  # opening fails (server down) before anything is sent
        for data, message in zip(messages, emails):
            try:
                count = backend.send_messages([message])
                if not count:
                    raise EmailDeliveryError(
                        f"{type(backend).__module__}.{type(backend).__qualname__} reported 0 emails sent"
                    )
            except Exception as exc:  # noqa: BLE001 - recorded and re-raised below
                logger.warning("Email %r to %s was not delivered: %r", message.subject, message.recipients(), exc)
                failures.append((data, message, exc))
            else:
                sent += 1

    if not failures:
        return {"sent": sent}
    if sent == 0:
        if len(failures) == 1:
            raise failures[0][2]
        summary = "\n".join(f"- {m.subject!r} to {m.recipients()}: {exc!r}" for _data, m, exc in failures)
        raise EmailDeliveryError(f"None of the {len(failures)} emails was delivered:\n{summary}") from failures[0][2]
    _retries, retry_delay = retry_settings()
    due = timezone.now() + datetime.timedelta(seconds=retry_delay)
    follow_up = queue_message_data([data for data, _m, _exc in failures], due=due)
    logger.warning("%s of %s emails failed; queued again as execution #%s", len(failures), len(emails), follow_up.pk)
    return {
        "sent": sent,
        "failed": len(failures),
        "queued_again_as": follow_up.pk,
        "errors": [f"{m.subject!r} to {m.recipients()}: {exc!r}" for _data, m, exc in failures],
    }


def queue_emails(messages: Iterable[EmailMessage]) -> TaskExec:
    """Queue one execution that delivers all ``messages``; raises if one cannot be stored."""
    return queue_message_data([message_to_data(message) for message in messages])


def queue_message_data(data: list[dict[str, Any]], due: datetime.datetime | None = None) -> TaskExec:
    retries, retry_delay = retry_settings()
    queue = getattr(settings, "TOOSIMPLEQ_EMAIL_QUEUE", "default")
    problem = validation.text_problem(queue)
    if problem:
        raise ImproperlyConfigured(f"TOOSIMPLEQ_EMAIL_QUEUE (a queue name) {problem}")
    encoded = send_emails.check_call(tuple(data), {})
    execution = send_emails.new_exec(data, {}, due, encoded=encoded, queue=queue, retries=retries, retry_delay=retry_delay)
    engine = get_engine()
    # A savepoint, so that a failure leaves the caller's transaction usable (fail_silently=True).
    with transaction.atomic(using=engine.db):
        return engine.insert(execution)


def retry_settings() -> tuple[int, float]:
    retries = getattr(settings, "TOOSIMPLEQ_EMAIL_RETRIES", DEFAULT_RETRIES)
    retry_delay = getattr(settings, "TOOSIMPLEQ_EMAIL_RETRY_DELAY", DEFAULT_RETRY_DELAY)
    problem = validation.retries_problem(retries)
    if problem:
        raise ImproperlyConfigured(f"TOOSIMPLEQ_EMAIL_RETRIES {problem}")
    problem = validation.retry_delay_problem(retry_delay, retries)
    if problem:
        raise ImproperlyConfigured(f"TOOSIMPLEQ_EMAIL_RETRY_DELAY {problem}")
    return retries, float(retry_delay)


def delivery_backend() -> Any:
    """A new instance of the backend that really sends (``TOOSIMPLEQ_EMAIL_BACKEND``)."""
    name = getattr(settings, "TOOSIMPLEQ_EMAIL_BACKEND", DEFAULT_BACKEND)
    mailers = getattr(mail, "mailers", None)  # Django >= 6.1: a name from settings.MAILERS works too
    if mailers is not None and "." not in name and name in mailers:
        backend = mailers[name]
    else:
        backend = import_string(name)()
    if getattr(backend, "queues_emails", False):
        raise ImproperlyConfigured(
            "TOOSIMPLEQ_EMAIL_BACKEND must be the backend that really sends (e.g. "
            f"{DEFAULT_BACKEND!r}), not the queue backend itself"
        )
    return backend
