"""Settings for the benchmark (``bench/run.py``) and the worker processes it starts.

The environment picks the database: ``BENCH_DB`` is ``sqlite``, ``postgresql`` or ``mysql`` (MariaDB),
``BENCH_DB_NAME`` the SQLite file or the server database's name. ``BENCH_COUNT_SQL`` (a file path) makes every
process log each statement it sends (see ``benchapp.sqlcount``), to count statements per second.
"""

import os
import tempfile

DB = os.environ.get("BENCH_DB", "sqlite")

if DB == "sqlite":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("BENCH_DB_NAME") or os.path.join(tempfile.gettempdir(), "toosimpleq-bench.sqlite3"),
            # As in the test suite: wait for locks rather than fail at once.
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
            "PASSWORD": os.environ.get("PGPASSWORD", ""),
            "NAME": os.environ.get("BENCH_DB_NAME", "toosimpleq_bench"),
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
            "NAME": os.environ.get("BENCH_DB_NAME", "toosimpleq_bench"),
            "OPTIONS": {"charset": "utf8mb4"},
        }
    }
else:
    raise RuntimeError(f"BENCH_DB must be sqlite, postgresql or mysql, not {DB!r}")

SECRET_KEY = "bench-only"
DEBUG = False
TOOSIMPLEQ_SQLITE_WAL = True  # see the README: a commit then costs no fsync
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = [
    "django_toosimple_q",
    "bench.benchapp",
]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
if os.environ.get("BENCH_FLOW"):  # the flow-control measurement (and its workers): limited queues
    TOOSIMPLEQ_QUEUES = {"bench_limited": {"concurrency": 50}, "bench_rated": {"rate_limit": "1000/s"}}
