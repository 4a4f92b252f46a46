"""A small project showing the features of django-toosimple-q, on SQLite."""

import os
from pathlib import Path

import django

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "demo-only-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_toosimple_q",
    "demoapp",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "demo.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        # TOOSIMPLEQ_DEMO_DB: another file (the tests run the demo on a database of their own).
        "NAME": os.environ.get("TOOSIMPLEQ_DEMO_DB") or BASE_DIR / "db.sqlite3",
        # The web server and the worker share this file: let writers wait for each other.
        "OPTIONS": {"timeout": 20},
    }
}
# The web server and the worker share one SQLite file: write-ahead logging lets them work side by side.
TOOSIMPLEQ_SQLITE_WAL = True
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if django.VERSION >= (6, 0):
    # Django's tasks framework stores its tasks in our queue (demoapp/django_tasks.py).
    TASKS = {"default": {"BACKEND": "django_toosimple_q.backends.QueueBackend", "OPTIONS": {"retries": 1}}}
