"""Shared fixtures: real databases, worker subprocesses, polling helpers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import pytest
from django.core.management import call_command
from django.db import connection
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

ROOT = Path(__file__).resolve().parent.parent

# Property-based tests (tests/test_properties.py): a modest number of examples by default so the suite
# stays fast; `make test ARGS="--hypothesis-profile=long tests/test_properties.py"` (or the environment
# variable TOOSIMPLEQ_HYPOTHESIS_PROFILE=long) runs many more. No deadline: database round trips and
# worker runs vary in speed.
_hypothesis = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
hypothesis_settings.register_profile("toosimpleq", max_examples=60, **_hypothesis)
hypothesis_settings.register_profile("long", max_examples=1500, **_hypothesis)
hypothesis_settings.load_profile(os.environ.get("TOOSIMPLEQ_HYPOTHESIS_PROFILE", "toosimpleq"))


def pytest_runtest_setup(item):
    if item.get_closest_marker("postgresql_only") and os.environ.get("TOOSIMPLEQ_TEST_DB", "sqlite") != "postgresql":
        pytest.skip("PostgreSQL only")


@pytest.fixture(autouse=True)
def _close_wait_listeners():
    """wait()'s shared LISTEN connection outlives the wait by ``waiting.IDLE_CLOSE`` seconds: close it
    after each test, so no test inherits another's and the test database can be dropped at the end."""
    yield
    from django_toosimple_q import waiting

    waiting.close_listeners()


def wait_for(condition: Callable[[], object], timeout: float = 30.0, interval: float = 0.05, message: str = ""):
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            # ``message`` may be a worker Proc (show what it logged) or a callable describing the state.
            if isinstance(message, Proc):
                detail = message.output[-3000:]
            elif callable(message):
                detail = message()
            else:
                detail = message
            pytest.fail(f"timed out after {timeout}s waiting for {detail or condition}")
        time.sleep(interval)


class Proc:
    """A worker subprocess whose output is collected by a thread, so tests can wait for a log line."""

    def __init__(self, popen: subprocess.Popen):
        self.popen = popen
        self.pid = popen.pid
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.popen.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    @property
    def returncode(self):
        return self.popen.returncode

    def poll(self):
        return self.popen.poll()

    def send_signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def wait_output(self, text: str, timeout: float = 30.0) -> None:
        wait_for(lambda: text in self.output, timeout=timeout, message=f"{text!r} in the worker's output")

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout=timeout)

    def communicate(self, timeout: float | None = None) -> tuple[str, None]:
        self.popen.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return self.output, None


class WorkerProcesses:
    """Starts ``manage.py worker`` subprocesses on the test database and cleans them up."""

    def __init__(self):
        self.procs: list[subprocess.Popen] = []

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
        env["TOOSIMPLEQ_TEST_DB_NAME"] = str(connection.settings_dict["NAME"])
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "django", "worker", *args]

    def start(self, *args: str, env_extra: dict[str, str] | None = None, new_session: bool = False) -> Proc:
        """Start a worker; ``new_session``: in a process group of its own, as systemd starts a service,
        so that ``os.killpg(proc.pid, ...)`` signals the worker and every process it started."""
        popen = subprocess.Popen(
            self.command(*args),
            env={**self.env(), **(env_extra or {})},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=new_session,
        )
        proc = Proc(popen)
        self.procs.append(proc)
        return proc

    def run(self, *args: str, timeout: float = 120, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return self.manage("worker", *args, timeout=timeout, env_extra=env_extra)

    def manage(
        self, *args: str, env_extra: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        """``python -m django ARGS`` (any command, e.g. ``migrate``) run to its end, output captured."""
        return subprocess.run(
            [sys.executable, "-m", "django", *args],
            env={**self.env(), **(env_extra or {})},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            try:  # and whatever it started in its own process group
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.communicate(timeout=10)
            except Exception:  # noqa: BLE001
                pass


def env_with_app(tmp_path, app: str, tasks_source: str) -> dict[str, str]:
    """The environment of a Django process on the test database whose INSTALLED_APPS also hold
    ``app``, a package made in ``tmp_path`` with ``tasks_source`` as its tasks.py."""
    package = tmp_path / app
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tasks.py").write_text(tasks_source)
    (tmp_path / f"{app}_settings.py").write_text(
        f"from tests.settings import *  # noqa\nINSTALLED_APPS = [*INSTALLED_APPS, {app!r}]\n"
    )
    env = WorkerProcesses().env()
    env["DJANGO_SETTINGS_MODULE"] = f"{app}_settings"
    env["PYTHONPATH"] = str(tmp_path) + os.pathsep + env["PYTHONPATH"]
    return env


def schedule_problem(declare: Callable[[], object], name: str) -> str:
    """What is wrong with the schedule ``name`` that ``declare()`` declares: refused at once
    (``ConfigurationError``: not a schedule of a task, a clash, a bad name) or, for its values,
    reported by the system check ``toosimpleq.E001``. Either way it is not registered."""
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    from django_toosimple_q.registry import ConfigurationError, schedules_registry

    try:
        declare()
    except ConfigurationError as exc:
        problem = str(exc)
    else:
        with pytest.raises(SystemCheckError) as error:
            call_command("check")
        problem = str(error.value)
        assert "toosimpleq.E001" in problem
    assert name not in schedules_registry
    return problem


@pytest.fixture
def clean_registry():
    """Tasks and schedules a test declares are forgotten afterwards; the test app's stay."""
    from django_toosimple_q.registry import invalid_schedules, schedules_registry, tasks_registry

    tasks, schedules, invalid = dict(tasks_registry), dict(schedules_registry), dict(invalid_schedules)
    yield
    tasks_registry.clear()
    tasks_registry.update(tasks)
    schedules_registry.clear()
    schedules_registry.update(schedules)
    invalid_schedules.clear()
    invalid_schedules.update(invalid)


@pytest.fixture
def login(client, django_user_model):
    """Log in a staff user holding exactly the given toosimpleq permission codenames."""
    from django.contrib.auth.models import Permission

    def login_with(*codenames: str):
        taken = django_user_model.objects.filter(username__startswith="staff").count()
        name = "staff" if not taken else f"staff{taken}"
        user = django_user_model.objects.create_user(name, password="pw", is_staff=True)
        perms = Permission.objects.filter(content_type__app_label="toosimpleq", codename__in=codenames)
        assert perms.count() == len(codenames), "unknown permission codename"
        user.user_permissions.add(*perms)
        client.force_login(user)
        return client

    return login_with


@pytest.fixture
def workers(transactional_db):
    procs = WorkerProcesses()
    yield procs
    procs.stop_all()


def run_worker_here(*args: str) -> None:
    """Run the worker in this process, as the spec's ``call_command("worker", ...)`` does; by default
    until nothing is left to do."""
    call_command("worker", *(args or ("--until_done",)), verbosity=0)


@pytest.fixture
def run_worker(transactional_db):
    """``run_worker_here`` for tests that need no other database fixture."""
    return run_worker_here


def can_restart_postgresql() -> bool:
    """Restarting the server is opt-in (CI opts in): it cuts every other session on it."""
    return (
        os.environ.get("TOOSIMPLEQ_TEST_RESTART_POSTGRESQL") == "1"
        and bool(shutil.which("pg_ctlcluster"))
        and os.geteuid() == 0
        and os.path.isdir("/etc/postgresql")
    )


needs_pg_control = pytest.mark.skipif(
    not can_restart_postgresql(),
    reason="restarts the PostgreSQL server: only with TOOSIMPLEQ_TEST_RESTART_POSTGRESQL=1 (CI sets it), as root",
)


def restart_postgresql() -> None:
    """Restart the PostgreSQL server (tests marked ``needs_pg_control`` only)."""
    version = sorted(os.listdir("/etc/postgresql"))[0]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True)


def reconnect() -> None:
    """Wait until this process's connection to the database works again (after a restart)."""

    def attempt() -> bool:
        try:
            connection.close()
            connection.ensure_connection()
            return True
        except Exception:  # noqa: BLE001 - the server is still starting
            return False

    wait_for(attempt, timeout=60, message="the database to accept connections again")


@pytest.fixture
def vendor() -> str:
    return connection.vendor


class PgBouncer:
    """A real PgBouncer in front of the test PostgreSQL, on a free loopback port, trust authentication.

    PgBouncer refuses to run as root: as root it runs as the ``postgres`` user, from files it can read.
    """

    def __init__(self, mode: str, pool_size: int = 40):
        from django.db import connection as conn

        self.mode = mode
        settings = conn.settings_dict
        self.dir = Path(tempfile.mkdtemp(prefix=f"toosimpleq-pgbouncer-{mode}-"))
        self.dir.chmod(0o755)
        users = self.dir / "users.txt"
        users.write_text(f'"{settings["USER"]}" ""\n')
        self.port = free_port()
        ini = self.dir / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host={settings['HOST'] or '127.0.0.1'} port={settings['PORT'] or 5432}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {users}\npool_mode = {mode}\n"
            # Session mode holds a server connection per client: room for every worker thread and listener.
            f"default_pool_size = {pool_size}\nmax_client_conn = 400\n"
        )
        for path in (users, ini):
            path.chmod(0o644)
        as_postgres = {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}
        self.log = open(self.dir / "pgbouncer.log", "w")
        self.popen = subprocess.Popen(
            [pgbouncer_path(), str(ini)], stdout=self.log, stderr=subprocess.STDOUT, **as_postgres
        )
        self.settings = {**settings, "PORT": str(self.port)}
        wait_for(self.accepts, timeout=20, message=f"PgBouncer ({mode}) to accept connections; {self.dir}")

    def accepts(self) -> bool:
        if self.popen.poll() is not None:
            pytest.fail(f"PgBouncer exited: {(self.dir / 'pgbouncer.log').read_text()[-2000:]}")
        import psycopg

        try:
            psycopg.connect(
                host="127.0.0.1", port=self.port, user=self.settings["USER"], dbname=self.settings["NAME"], connect_timeout=2
            ).close()
            return True
        except psycopg.OperationalError:
            return False

    def worker_env(self) -> dict[str, str]:
        """Environment for worker subprocesses whose database connections go through this PgBouncer."""
        return {"PGPORT": str(self.port), "TOOSIMPLEQ_TEST_POOL_MODE": self.mode}

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()  # SIGTERM: immediate shutdown
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def pgbouncer_path() -> str | None:
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def pgbouncers(django_db_setup, django_db_blocker):
    """``pgbouncers(mode, pool_size=40)``: a PgBouncer for ``"transaction"`` or ``"session"`` pooling
    with that many server connections, started once.

    Skips when PgBouncer is not installed, unless ``TOOSIMPLEQ_REQUIRE_PGBOUNCER=1`` (CI).
    """
    if pgbouncer_path() is None:
        reason = "pgbouncer is not installed (Debian: apt-get install pgbouncer; `make test` installs it as root)"
        if os.environ.get("TOOSIMPLEQ_REQUIRE_PGBOUNCER") == "1":
            pytest.fail(reason + ", and TOOSIMPLEQ_REQUIRE_PGBOUNCER=1")
        pytest.skip(reason)
    started: dict[tuple[str, int], PgBouncer] = {}

    def start(mode: str, pool_size: int = 40) -> PgBouncer:
        if (mode, pool_size) not in started:
            with django_db_blocker.unblock():
                started[mode, pool_size] = PgBouncer(mode, pool_size)
        return started[mode, pool_size]

    yield start
    for bouncer in started.values():
        bouncer.stop()
