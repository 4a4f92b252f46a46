"""A queued email backend: messages are stored as task executions and delivered by the worker.

Settings: ``EMAIL_BACKEND = "django_toosimple_q.contrib.mail.backends.QueueBackend"`` to queue,
``TOOSIMPLEQ_EMAIL_BACKEND`` for the backend that really delivers (SMTP by default), and
``TOOSIMPLEQ_EMAIL_RETRIES`` / ``TOOSIMPLEQ_EMAIL_RETRY_DELAY`` for retries of failed deliveries.
"""
