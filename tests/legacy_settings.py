"""The project of a user upgrading from 1.x: the fixture's tasks, on the database named by
``TOOSIMPLEQ_LEGACY_DB_NAME`` (same server and vendor as the suite, see ``tests.settings``)."""

import os

from tests.settings import *  # noqa: F403 - the suite's database vendor, time zone, templates...
from tests.settings import DATABASES

_name = os.environ["TOOSIMPLEQ_LEGACY_DB_NAME"]
DATABASES = {"default": {**DATABASES["default"], "NAME": _name, "TEST": {"NAME": _name}}}
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django_toosimple_q",
    "tests.legacy_app",
]
TASKS = {}
