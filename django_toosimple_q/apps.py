from django.apps import AppConfig
from django.conf import settings
from django.db.backends.signals import connection_created
from django.utils.module_loading import autodiscover_modules
from django.utils.translation import gettext_lazy as _


class ToosimpleqConfig(AppConfig):
    name = "django_toosimple_q"
    # The label users of the original expect: admin URLs /admin/toosimpleq/..., permission codenames.
    label = "toosimpleq"
    verbose_name = _("Too simple queue")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Import every installed app's tasks.py so that its tasks and schedules are registered.
        autodiscover_modules("tasks")
        from . import checks  # noqa: F401 - registers the system checks

        if getattr(settings, "TOOSIMPLEQ_SQLITE_WAL", False):
            connection_created.connect(use_sqlite_wal, dispatch_uid="toosimpleq_sqlite_wal")


def use_sqlite_wal(sender, connection, **kwargs) -> None:
    """``TOOSIMPLEQ_SQLITE_WAL = True``: SQLite databases in write-ahead-log mode with
    ``synchronous=NORMAL``, so that readers never block the writer and a commit costs no fsync."""
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
