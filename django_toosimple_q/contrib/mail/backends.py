"""``EMAIL_BACKEND = "django_toosimple_q.contrib.mail.backends.QueueBackend"``: queue, then return."""

from __future__ import annotations

import logging
from typing import Any, Sequence

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend

logger = logging.getLogger("django_toosimple_q.contrib.mail")


class QueueBackend(BaseEmailBackend):
    """Stores each batch of messages as one execution of the delivery task and returns at once.

    The worker delivers them through ``TOOSIMPLEQ_EMAIL_BACKEND`` (SMTP by default), retrying
    failures. The returned count is the number of messages queued; messages without any recipient
    are skipped, as Django's SMTP backend does. With ``fail_silently=True`` a message that cannot be
    queued is logged and counted as not sent instead of raising.
    """

    #: Says "this backend queues, it does not deliver" (``TOOSIMPLEQ_EMAIL_BACKEND`` must deliver).
    queues_emails = True

    def __init__(self, fail_silently: bool = False, **kwargs: Any) -> None:
        # fail_silently is handled here rather than passed on: Django >= 6.1 deprecates it in the base class.
        super().__init__(**kwargs)
        self.fail_silently = fail_silently
        # The delivery task is loaded when emails are queued, and by the worker (see load_delivery_task),
        # so only the queue itself must be installed; a system check recommends the contrib app too.
        if not apps.is_installed("django_toosimple_q"):
            raise ImproperlyConfigured(
                "QueueBackend needs 'django_toosimple_q' in INSTALLED_APPS (for the queue); add it, or change "
                "EMAIL_BACKEND"
            )

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        from .tasks import queue_emails

        messages = [message for message in email_messages or () if message.recipients()]
        if not messages:
            return 0
        try:
            queue_emails(messages)
        except Exception:
            if not self.fail_silently:
                raise
            logger.exception("Could not queue %s email(s); they will not be sent", len(messages))
            return 0
        return len(messages)
