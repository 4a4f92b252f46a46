"""Smoke test of an *installed* django-toosimple-q (a built wheel in a fresh virtualenv).

Run with that virtualenv's Python, from outside the checkout: it writes a throwaway Django project
in a temporary folder, migrates it, queues a task, runs ``manage.py worker --until_done`` as a real
process, checks the execution SUCCEEDED, renders the admin pages through the test client (which
proves the templates are in the package) and runs ``makemigrations --check`` (which proves the
migrations are). Exits non-zero, saying what is wrong, on the first failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

SETTINGS = """
SECRET_KEY = "smoke"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
USE_TZ = True
ROOT_URLCONF = "smoke_urls"
INSTALLED_APPS = [
    "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
    "django.contrib.sessions", "django.contrib.messages", "django.contrib.staticfiles",
    "django_toosimple_q", "django_toosimple_q.contrib.mail", "smokeapp",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "smoke.sqlite3"}}
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
"""

URLS = """
from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
"""

TASKS = """
from django_toosimple_q.decorators import register_task, schedule_task

@register_task()
def add(a, b):
    return a + b

@schedule_task(cron="manual")
@register_task()
def on_demand():
    return "ran"
"""

CHECK = """
import django
django.setup()
from django.contrib.auth.models import User
from django.test import Client
from django_toosimple_q.models import TaskExec

execution = TaskExec.objects.get(task_name="smokeapp.tasks.add")
assert execution.state == TaskExec.States.SUCCEEDED, (execution.state, execution.error)
assert execution.result == 5, execution.result

User.objects.create_superuser("smoke", password="smoke")
client = Client()
client.force_login(User.objects.get(username="smoke"))
pages = [
    "/admin/", "/admin/toosimpleq/", "/admin/toosimpleq/taskexec/",
    f"/admin/toosimpleq/taskexec/{execution.pk}/change/", "/admin/toosimpleq/taskexec/dashboard/",
    "/admin/toosimpleq/workerstatus/", "/admin/toosimpleq/scheduleexec/",
]
for url in pages:
    response = client.get(url)
    assert response.status_code == 200, f"{url} answered {response.status_code}"
print(f"admin pages rendered: {len(pages)}")
"""


def run(*args: str, cwd: Path) -> str:
    shown = " ".join(arg if "\n" not in arg else "<script>" for arg in args)
    print("$", shown, flush=True)
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=ENV, timeout=300)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {' '.join(args)}\n{done.stdout}\n{done.stderr}")
    return done.stdout


def main() -> None:
    import django_toosimple_q

    checkout = Path(__file__).resolve().parent.parent
    installed = Path(django_toosimple_q.__file__).resolve()
    if checkout in installed.parents:
        sys.exit(f"django_toosimple_q is imported from the checkout ({installed}), not from the installed wheel")
    print(f"django_toosimple_q {django_toosimple_q.__version__} from {installed.parent}")

    with tempfile.TemporaryDirectory(prefix="toosimpleq-smoke-") as tmp:
        project = Path(tmp)
        (project / "smoke_settings.py").write_text(SETTINGS)
        (project / "smoke_urls.py").write_text(URLS)
        (project / "smokeapp").mkdir()
        (project / "smokeapp" / "__init__.py").write_text("")
        (project / "smokeapp" / "tasks.py").write_text(TASKS)
        manage = [sys.executable, "-m", "django"]
        run(*manage, "migrate", "--verbosity", "0", cwd=project)
        run(*manage, "makemigrations", "--check", "--dry-run", "toosimpleq", cwd=project)
        run(*manage, "check", "--fail-level", "WARNING", cwd=project)
        queue = "import django; django.setup(); from smokeapp.tasks import add; add.queue(2, 3)"
        run(sys.executable, "-c", queue, cwd=project)
        run(*manage, "worker", "--until_done", "--reload", "never", cwd=project)
        print(run(sys.executable, "-c", textwrap.dedent(CHECK), cwd=project).strip())
    print("smoke test of the installed package passed")


ENV = {**os.environ, "DJANGO_SETTINGS_MODULE": "smoke_settings", "PYTHONPATH": ""}
ENV.pop("PYTHONPATH")

if __name__ == "__main__":
    main()
