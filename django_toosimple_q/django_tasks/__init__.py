"""Django's tasks framework (``django.tasks``, Django >= 6.0) on our queue.

Import ``django_toosimple_q.backends`` (the public path, which also imports on older Django and then
explains why the backend cannot be used); this subpackage needs Django >= 6.0.

- ``backend``: ``QueueBackend`` and its ``QueuedTask``. Enqueuing creates a ``TaskExec`` like
  ``Task.queue()`` does: Django's priority (-100..100) is stored as is, since ours also runs higher
  first; ``run_after`` becomes ``due``; ``queue_name`` the queue.
- ``adapter``: each Django task function has an *adapter*, a regular ``Task`` in ``tasks_registry``
  named after the function's dotted path, registered when the ``@task`` object is created (so a worker
  that imports the apps' ``tasks.py`` knows it). The worker claims, retries, rescues and time-limits
  its executions like any other; the adapter adds the context and Django's signals.
- ``results``: a result id is the primary key of the call's first execution. Retries and replacements
  after an interruption are later executions linked by ``replaced_by``; ``get_result`` follows that
  chain, so an id keeps meaning "this call" and its status is the one of the latest execution.
"""

from .adapter import DjangoTaskAdapter, adapter_for
from .backend import QueueBackend, QueuedTask

__all__ = ["DjangoTaskAdapter", "QueueBackend", "QueuedTask", "adapter_for"]
