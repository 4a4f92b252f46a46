"""``DATABASE_ROUTERS = ["django_toosimple_q.routers.QueueRouter"]``: keep the queue's tables in the
database named by ``TOOSIMPLEQ_DATABASE`` (for migrations, the admin and your own queries)."""

from __future__ import annotations

from django.conf import settings

APP_LABEL = "toosimpleq"


class QueueRouter:
    def _alias(self) -> str | None:
        return getattr(settings, "TOOSIMPLEQ_DATABASE", None)

    def db_for_read(self, model, **hints):
        if model._meta.app_label == APP_LABEL:
            return self._alias()
        return None

    db_for_write = db_for_read

    def allow_relation(self, obj1, obj2, **hints):
        if APP_LABEL in (obj1._meta.app_label, obj2._meta.app_label):
            return obj1._meta.app_label == obj2._meta.app_label
        return None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        alias = self._alias()
        if alias is None:
            return None
        if app_label == APP_LABEL:
            return db == alias
        return None
