from django.apps import AppConfig
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
