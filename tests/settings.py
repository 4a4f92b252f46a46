"""Settings for the test suite. ``TOOSIMPLEQ_TEST_DB`` picks the database: sqlite (default),
postgresql or mysql. ``TOOSIMPLEQ_TEST_DB_SUFFIX`` keeps concurrent runs apart on a shared server."""

import os
import tempfile

DB = os.environ.get("TOOSIMPLEQ_TEST_DB", "sqlite")
SUFFIX = os.environ.get("TOOSIMPLEQ_TEST_DB_SUFFIX", "")
# Worker subprocesses started by the tests connect to the test database by this name.
TEST_NAME = os.environ.get("TOOSIMPLEQ_TEST_DB_NAME") or f"test_toosimpleq{SUFFIX}"

if DB == "sqlite":
    name = os.environ.get("TOOSIMPLEQ_TEST_DB_NAME") or os.path.join(
        tempfile.gettempdir(), f"toosimpleq-test{SUFFIX}.sqlite3"
    )
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": name,
            # A file, not memory: worker subprocesses must see the same database.
            "TEST": {"NAME": name},
            "OPTIONS": {"timeout": 30},
        }
    }
elif DB == "postgresql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
            "USER": os.environ.get("PGUSER", "postgres"),
            "NAME": TEST_NAME if os.environ.get("TOOSIMPLEQ_TEST_DB_NAME") else "postgres",
            "TEST": {"NAME": TEST_NAME},
        }
    }
elif DB == "mysql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.mysql",
            "HOST": os.environ.get("MYSQL_HOST", "127.0.0.1"),
            "PORT": os.environ.get("MYSQL_PORT", "3306"),
            "USER": os.environ.get("MYSQL_USER", "root"),
            "PASSWORD": os.environ.get("MYSQL_PASSWORD", ""),
            "NAME": TEST_NAME if os.environ.get("TOOSIMPLEQ_TEST_DB_NAME") else "test",
            "TEST": {"NAME": TEST_NAME, "CHARSET": "utf8mb4", "COLLATION": "utf8mb4_bin"},
            "OPTIONS": {"charset": "utf8mb4"},
        }
    }
else:
    raise RuntimeError(f"TOOSIMPLEQ_TEST_DB must be sqlite, postgresql or mysql, not {DB!r}")

# A second database, for the tests of TOOSIMPLEQ_DATABASE (a queue kept apart from the rest).
_queue_test_name = str(DATABASES["default"]["TEST"]["NAME"]).replace(".sqlite3", "") + "_queue"
DATABASES["queue"] = {
    **DATABASES["default"],
    "TEST": {**DATABASES["default"]["TEST"], "NAME": _queue_test_name},
}
if DB == "sqlite":
    DATABASES["queue"]["NAME"] = _queue_test_name

if DB == "postgresql":
    # tests/test_poolers.py: the test process reaches PgBouncer through this alias (its port is set once
    # PgBouncer runs); worker subprocesses go through it with PGPORT and these variables.
    DATABASES["pooled"] = {**DATABASES["default"], "TEST": {"MIRROR": "default"}}
    if os.environ.get("TOOSIMPLEQ_TEST_POOL_MODE") == "transaction":
        DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True  # as Django's docs say for transaction pooling
    if os.environ.get("TOOSIMPLEQ_TEST_SERVER_SIDE_BINDING"):
        DATABASES["default"]["OPTIONS"] = {"server_side_binding": True}
    listen = os.environ.get("TOOSIMPLEQ_TEST_LISTEN_PORT")  # "none": TOOSIMPLEQ_LISTEN_DATABASE = None
    if listen == "none":
        TOOSIMPLEQ_LISTEN_DATABASE = None
    elif listen:
        DATABASES["listen"] = {**DATABASES["default"], "PORT": listen, "TEST": {"MIRROR": "default"}}
        TOOSIMPLEQ_LISTEN_DATABASE = "listen"

SECRET_KEY = "tests-only"
DEBUG = False
# The metrics view served by a real server process (tests/test_metrics.py).
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
TOOSIMPLEQ_METRICS_TOKEN = "tests-metrics-token"
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    # Serves the admin's CSS/JS to the browser tests (pytest-django's live_server uses it).
    "django.contrib.staticfiles",
    "django_toosimple_q",
    "django_toosimple_q.contrib.mail",
    "tests.app",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tests.urls"
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
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "static/"
TOOSIMPLEQ_UNKNOWN_TASK_GRACE = 0
if os.environ.get("TOOSIMPLEQ_TEST_FLOW"):  # the workers of tests/test_flow_control.py
    TOOSIMPLEQ_QUEUES = {
        "flow_one": {"concurrency": 2},
        "flow_rate": {"rate_limit": "20/s"},
        "flow_kill": {"concurrency": 1},
    }
    if os.environ.get("TOOSIMPLEQ_TEST_BAD_QUEUES"):
        TOOSIMPLEQ_QUEUES["flow_one"] = {"concurrency": -1}
TOOSIMPLEQ_MAX_CRASHES = int(os.environ.get("TOOSIMPLEQ_TEST_MAX_CRASHES", "3"))

# contrib.mail as 1.x users have it: only EMAIL_BACKEND set, the contrib app not installed.
if os.environ.get("TOOSIMPLEQ_TEST_MAIL_WITHOUT_APP"):
    INSTALLED_APPS.remove("django_toosimple_q.contrib.mail")
    EMAIL_BACKEND = "django_toosimple_q.contrib.mail.backends.QueueBackend"

# contrib.mail: a worker subprocess delivers to the SMTP server its test started on loopback.
# Only set when asked, as Django >= 6.1 warns about the EMAIL_* settings.
if os.environ.get("TOOSIMPLEQ_TEST_EMAIL_PORT"):
    EMAIL_HOST = "127.0.0.1"
    EMAIL_PORT = int(os.environ["TOOSIMPLEQ_TEST_EMAIL_PORT"])
    EMAIL_TIMEOUT = 10

# Django's tasks framework (Django >= 6.0) on our queue; "retrying" shows OPTIONS as defaults.
import django  # noqa: E402

if django.VERSION >= (6, 0):
    TASKS = {
        "default": {
            "BACKEND": "django_toosimple_q.backends.QueueBackend",
            "QUEUES": ["default", "special"],
        },
        "retrying": {
            "BACKEND": "django_toosimple_q.backends.QueueBackend",
            "QUEUES": [],
            "OPTIONS": {"retries": 2, "retry_delay": 0},
        },
        "limited": {
            "BACKEND": "django_toosimple_q.backends.QueueBackend",
            "OPTIONS": {"timeout": 1},
        },
        "immediate": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"},
    }
