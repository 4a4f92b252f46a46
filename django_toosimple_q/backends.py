"""A backend for Django's tasks framework (``django.tasks``, Django >= 6.0)::

    TASKS = {
        "default": {
            "BACKEND": "django_toosimple_q.backends.QueueBackend",
            "QUEUES": ["default", "emails"],  # optional: the queue names tasks may use
            "OPTIONS": {"retries": 3, "retry_delay": 10, "timeout": 300},  # optional defaults
        }
    }

Django ``@task`` functions then run on ``manage.py worker`` like tasks registered with
``@register_task``. This module imports on every supported Django version; on Django < 6.0 the
backend refuses to be created and says why. The implementation is the ``django_tasks`` subpackage.
"""

from __future__ import annotations

from typing import Any

import django
from django.core.exceptions import ImproperlyConfigured

#: True when this Django has the tasks framework.
AVAILABLE = django.VERSION >= (6, 0)


if AVAILABLE:
    from .django_tasks import DjangoTaskAdapter, QueueBackend, QueuedTask, adapter_for
    from .errors import ExecutionCancelled, ExecutionInterrupted, ExecutionInvalid
else:

    class QueueBackend:  # type: ignore[no-redef]
        """Stands in on Django < 6.0, which has no tasks framework: creating it explains why it cannot work."""

        def __init__(self, alias: str = "default", params: Any = None) -> None:
            raise ImproperlyConfigured(
                f"django_toosimple_q.backends.QueueBackend (TASKS[{alias!r}]) needs Django's tasks framework, "
                f"which Django {django.get_version()} does not have (it came in Django 6.0). Upgrade Django, "
                "or queue tasks with django_toosimple_q's own @register_task and .queue()."
            )

    def adapter_for(obj: Any) -> None:  # type: ignore[misc]
        """No Django task can exist before Django 6.0."""
        return None


__all__ = ["AVAILABLE", "QueueBackend", "adapter_for"]
if AVAILABLE:
    __all__ += ["DjangoTaskAdapter", "QueuedTask", "ExecutionInterrupted", "ExecutionInvalid", "ExecutionCancelled"]
