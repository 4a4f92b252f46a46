from django.apps import AppConfig


class TestAppConfig(AppConfig):
    name = "tests.app"
    label = "testapp"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from .spans import install_from_environment

        install_from_environment()  # OpenTelemetry in worker subprocesses, when a test asks for it
