"""django-toosimple-q: a task queue and cron-like scheduler that needs nothing but Django and its database."""

__version__ = "2.0.0.dev0"
