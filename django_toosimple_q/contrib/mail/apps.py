from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ToosimpleqMailConfig(AppConfig):
    name = "django_toosimple_q.contrib.mail"
    # Distinct from the core's "toosimpleq" and from Django's own apps.
    label = "toosimpleq_mail"
    verbose_name = _("Too simple queue: email")

    def ready(self) -> None:
        # Register the delivery task even if this app is listed before the core app.
        from . import tasks  # noqa: F401
