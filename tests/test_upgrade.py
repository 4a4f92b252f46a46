"""Upgrading a django-toosimple-q 1.x database in place (issue 14), on the suite's database vendor.

Each test loads the fixture written by 1.2.1 (``tests/fixtures/legacy-1.2.1``) into a database of its
own, the way a user has it (SQLite: a copy of the file; PostgreSQL: ``psql -f``; MariaDB:
``mariadb <``), and runs ``manage.py migrate`` as a subprocess with ``tests.legacy_settings`` (the
fixture's own ``tasks.py`` registered). The test process then reads that database under an alias
added at run time, and points ``TOOSIMPLEQ_DATABASE`` at it for the admin and ``queue()``. These
tests use no Django test case (their databases are neither the test database nor rolled back).
"""

from __future__ import annotations

import base64
import copy
import datetime
import json
import os
import pickle
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from django.db import connections

from django_toosimple_q import legacy
from django_toosimple_q.cron import Cron
from django_toosimple_q.models import ScheduleExec, TaskExec, WorkerStatus
from django_toosimple_q.registry import Task, tasks_registry

from .conftest import WorkerProcesses

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "legacy-1.2.1"
VENDOR = os.environ.get("TOOSIMPLEQ_TEST_DB", "sqlite")
SUFFIX = os.environ.get("TOOSIMPLEQ_TEST_DB_SUFFIX", "")
ROWS = json.loads((FIXTURE / {"sqlite": "rows-sqlite.json", "postgresql": "rows-postgres.json", "mysql": "rows-mysql.json"}[VENDOR]).read_text())
UTC = datetime.timezone.utc
TABLES = ("toosimpleq_taskexec", "toosimpleq_scheduleexec", "toosimpleq_workerstatus")
LAST_1X = "0001_squashed_0016_legacy_1x"
MANAGE = WorkerProcesses()


class LegacyDatabase:
    """A database of its own, loaded from the fixture (or empty), on the suite's server."""

    def __init__(self, label: str):
        self.alias = f"legacy_{label}"
        base = f"test_toosimpleq{SUFFIX}_{label}"
        self.name = os.path.join(tempfile.gettempdir(), base + ".sqlite3") if VENDOR == "sqlite" else base
        self.out: Path | None = None  # where the fixture's tasks write ($LEGACY_OUT)

    # -- the server side, through the command-line clients a user has -------------------------------

    def _client(self, database: str | None = None) -> list[str]:
        server = connections["default"].settings_dict
        if VENDOR == "postgresql":
            return ["psql", "-h", server["HOST"], "-p", str(server["PORT"]), "-U", server["USER"], "-q",
                    "-v", "ON_ERROR_STOP=1", "-d", database or "postgres"]
        command = ["mariadb", "-h", server["HOST"], "-P", str(server["PORT"]), "-u", server["USER"]]
        if server.get("PASSWORD"):
            command.append(f"-p{server['PASSWORD']}")
        return command + ([database] if database else [])

    def _sql(self, statement: str, database: str | None = None) -> None:
        flag = "-c" if VENDOR == "postgresql" else "-e"
        subprocess.run([*self._client(database), flag, statement], check=True, capture_output=True, text=True)

    def create(self, fixture: bool = True) -> LegacyDatabase:
        self.drop()
        self.out = Path(tempfile.mkdtemp(prefix=f"toosimpleq-legacy-{self.alias}-"))
        if VENDOR == "sqlite":
            if fixture:
                shutil.copyfile(FIXTURE / "legacy.sqlite3", self.name)
        elif VENDOR == "postgresql":
            self._sql(f'CREATE DATABASE "{self.name}"')
            if fixture:
                subprocess.run([*self._client(self.name), "-f", str(FIXTURE / "legacy-postgresql.sql")],
                               check=True, capture_output=True, text=True)
        else:
            # The fixture's tables say utf8mb4_general_ci: a new database gets the same default.
            self._sql(f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
            if fixture:
                with open(FIXTURE / "legacy-mariadb.sql", "rb") as dump:
                    subprocess.run(self._client(self.name), stdin=dump, check=True, capture_output=True)
        return self

    def drop(self) -> None:
        self.disconnect()
        if self.out is not None:
            shutil.rmtree(self.out, ignore_errors=True)
        if VENDOR == "sqlite":
            if os.path.exists(self.name):
                os.remove(self.name)
        elif VENDOR == "postgresql":
            self._sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        else:
            self._sql(f"DROP DATABASE IF EXISTS `{self.name}`")

    # -- Django's side -------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        return {
            "DJANGO_SETTINGS_MODULE": "tests.legacy_settings",
            "TOOSIMPLEQ_LEGACY_DB_NAME": self.name,
            "LEGACY_OUT": str(self.out),
        }

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        done = MANAGE.manage(*args, env_extra=self.env(), timeout=300)
        if check:
            assert done.returncode == 0, done.stdout + done.stderr
        return done

    def migrate(self, *args: str) -> str:
        return self.manage("migrate", *args, "--no-input").stdout

    def connect(self) -> str:
        """Make the database reachable from this process as ``self.alias``."""
        if self.alias not in connections.settings:
            settings_dict = copy.deepcopy(connections["default"].settings_dict)
            settings_dict["NAME"] = settings_dict["TEST"]["NAME"] = self.name
            connections.settings[self.alias] = settings_dict
        return self.alias

    def disconnect(self) -> None:
        if self.alias in connections.settings:
            connections[self.alias].close()
            del connections.settings[self.alias]

    def raw(self, sql: str, params=()) -> list[tuple]:
        with connections[self.connect()].cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description else []

    def written(self, task: str) -> list:
        """What the fixture's task ``task`` recorded, one item per call."""
        path = self.out / task
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def unblocked(django_db_setup, django_db_blocker):
    """Database access without a test case; the default alias is the (migrated) test database, where
    the admin reads content types."""
    with django_db_blocker.unblock():
        yield


@pytest.fixture(scope="module")
def upgraded(django_db_setup, django_db_blocker):
    """The fixture upgraded once, read (never written) by the tests that take it."""
    with django_db_blocker.unblock():
        database = LegacyDatabase("upgraded").create()
        database.output = database.migrate()
        database.connect()
        yield database
        database.drop()


@pytest.fixture(scope="module")
def with_bad_values(django_db_setup, django_db_blocker):
    """The fixture plus rows 1.x could hold and we cannot convert, upgraded once: a hostile pickle
    (``os.system``) in a queued call, a ``complex`` result, and a twin of the waiting unique call."""
    marker = Path(tempfile.mkdtemp(prefix="toosimpleq-legacy-marker-")) / "pwned"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    now = datetime.datetime.now(UTC)
    columns = "id, task_name, args, kwargs, created, state, result, stdout, stderr, due, retries, retry_delay, result_preview"
    rows = [
        (101, "legacy_add", b64pickle((Exploit(),)), b64pickle({}), now, "QUEUED", None, "", "", now, 0, 0, None),
        (102, "legacy_add", b64pickle((1, 2)), b64pickle({}), now, "SUCCEEDED", b64pickle(complex(1, 2)), "", "", now, 0, 0,
         "(1+2j)"),
        (103, "legacy_unique", b64pickle((7,)), b64pickle({}), now, "QUEUED", None, "", "", now, 0, 0, None),
    ]
    with django_db_blocker.unblock():
        database = LegacyDatabase("badvalues").create()
        for row in rows:
            database.raw(f"INSERT INTO toosimpleq_taskexec ({columns}) VALUES ({', '.join(['%s'] * len(row))})", row)
        database.disconnect()
        database.output = database.migrate()
        database.marker = marker
        database.connect()
        yield database
        database.drop()
    shutil.rmtree(marker.parent, ignore_errors=True)


@pytest.fixture
def legacy_db(unblocked, request):
    """A fresh copy of the fixture, not migrated yet, for a test that changes it."""
    database = LegacyDatabase(request.node.name[5:25])
    database.create()
    database.connect()
    yield database
    database.drop()


@pytest.fixture
def legacy_tasks(clean_registry):
    """The fixture's tasks registered in this process too (for ``queue()`` from the test)."""
    from tests.legacy_app.tasks import fixture_tasks

    for value in vars(fixture_tasks).values():
        if isinstance(value, Task):
            tasks_registry[value.name] = value
    return fixture_tasks


def b64pickle(value) -> str:
    """A value as 1.x stored it: a base64 pickle, protocol 2."""
    return base64.b64encode(pickle.dumps(value, protocol=2)).decode()


def executions(alias: str) -> dict[int, TaskExec]:
    return {e.pk: e for e in TaskExec.objects.using(alias).order_by("id")}


def due_of(key: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(ROWS[key]["due"])


# -- the upgrade itself -------------------------------------------------------------------------------


def test_migrate_reports_what_it_converted(upgraded):
    assert "Applying toosimpleq.0018_upgrade_data" in upgraded.output
    assert "8 execution(s) read, 8 converted to typed JSON, 0 waiting one(s) made INVALID" in upgraded.output
    assert "1 waiting execution(s) of unique tasks given their unique key" in upgraded.output
    assert "1 worker record(s) kept" in upgraded.output
    # Only what 1.x lacked was applied: 0001 counts as applied through the 16 names it replaces.
    assert "Applying toosimpleq.0001" not in upgraded.output
    assert "Applying toosimpleq.0017_upgrade_schema... OK" in upgraded.output


def test_no_model_change_is_left_unmigrated(upgraded):
    done = upgraded.manage("makemigrations", "--check", "--dry-run", "toosimpleq", check=False)
    assert done.returncode == 0 and "No changes detected" in done.stdout, done.stdout + done.stderr


def test_every_row_is_what_it_must_be(upgraded, unblocked):
    """One check per entry of rows-*.json (a new entry in the fixture fails until it is checked)."""
    alias = upgraded.alias
    rows = executions(alias)
    States = TaskExec.States

    def succeeded_add(e):  # history kept; result 5 readable
        assert (e.state, e.args, e.kwargs, e.result) == (States.SUCCEEDED, [2, 3], {}, 5)
        assert e.worker_id == 1 and e.started and e.finished

    def succeeded_greet(e):
        assert e.state == States.SUCCEEDED and e.args == ["Ada"] and e.kwargs == {"when": datetime.date(2024, 1, 2)}
        assert e.result == {"greeting": "hello Ada", "when": datetime.date(2024, 1, 2)}
        assert e.priority == 5  # from the registered task: 1.x rows had no priority column

    def failed_fail(e):  # FAILED kept with its error text; replaced_by link kept
        assert e.state == States.FAILED and e.replaced_by_id == ROWS["failed_fail"]["replaced_by"]
        assert e.error.endswith('raise RuntimeError("legacy failure")\nRuntimeError: legacy failure\n')
        assert e.retry_delay == 315360000.0

    def sleeping_retry(e):  # still SLEEPING at the same due with retries 1
        assert (e.state, e.due, e.retries) == (States.SLEEPING, due_of("sleeping_retry"), 1)
        assert e.retry_delay == 630720000.0 and e.attempt == 2  # the retry of #3
        assert list(e.replaces.using(alias).values_list("id", flat=True)) == [ROWS["failed_fail"]["id"]]

    def queued_add(e):
        assert (e.state, e.args, e.kwargs, e.queue, e.priority) == (States.QUEUED, [10, 20], {}, "default", 0)

    def queued_greet(e):
        assert e.state == States.QUEUED and e.args == ["Bob"]
        assert e.kwargs == {"when": datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)} and e.priority == 5

    def queued_unique(e):
        assert e.state == States.QUEUED and e.args == [7]
        from django_toosimple_q.serialization import call_fingerprint

        assert e.unique_key == call_fingerprint("legacy_unique", (7,), {})

    def sleeping_far(e):  # still SLEEPING at the same due; args (1, 1) decodable
        assert (e.state, e.due, e.args, e.kwargs) == (States.SLEEPING, due_of("sleeping_far"), [1, 1], {})

    def schedule_nightly(_):
        row = ScheduleExec.objects.using(alias).get(pk=ROWS["schedule_nightly"]["id"])
        assert (row.name, row.state, row.last_due) == ("legacy_nightly", "ACTIVE", due_of_schedule())

    def workers(_):  # kept, shown as stopped
        statuses = list(WorkerStatus.objects.using(alias).order_by("id"))
        assert [w.pk for w in statuses] == ROWS["workers"]["ids"]
        worker = statuses[0]
        assert worker.state == WorkerStatus.States.STOPPED and worker.label == "legacy-worker"
        assert worker.timeout == 300.0 and worker.queues == [] and worker.excluded_queues == []
        assert worker.exit_code == 0 and worker.exit_log == "" and worker.last_seen < worker.stopped

    def _counts(counts):
        assert len(rows) == counts["taskexec"]
        assert ScheduleExec.objects.using(alias).count() == counts["scheduleexec"]
        assert WorkerStatus.objects.using(alias).count() == counts["workerstatus"]

    checks = {
        "succeeded_add": succeeded_add,
        "succeeded_greet": succeeded_greet,
        "failed_fail": failed_fail,
        "sleeping_retry": sleeping_retry,
        "queued_add": queued_add,
        "queued_greet": queued_greet,
        "queued_unique": queued_unique,
        "sleeping_far": sleeping_far,
        "schedule_nightly": schedule_nightly,
        "workers": workers,
        "_counts": _counts,
    }
    assert set(checks) == set(ROWS), "every row of the fixture has its check"
    for name, spec in ROWS.items():
        checks[name](spec if name == "_counts" else rows.get(spec.get("id")))
    for execution in rows.values():
        assert execution.output == "" and execution.attempt in (1, 2)
        assert execution.unique_key is None or execution.state in States.waiting()


def due_of_schedule() -> datetime.datetime:
    return datetime.datetime.fromisoformat(ROWS["schedule_nightly"]["last_due"])


@pytest.mark.django_db(databases="__all__")  # the legacy databases are registered before the test starts
def test_admin_pages_of_legacy_rows(upgraded, with_bad_values, admin_client, settings):
    settings.TOOSIMPLEQ_DATABASE = upgraded.alias
    change = "/admin/toosimpleq/taskexec/{}/change/"
    pages = {change.format(pk): [] for pk in range(1, 9)}
    pages.update({
        "/admin/toosimpleq/taskexec/": ["legacy_greet", "legacy_unique"],
        change.format(2): ["hello Ada", "datetime.date(2024, 1, 2)"],
        change.format(3): ["RuntimeError: legacy failure"],
        change.format(6): ["datetime.datetime(2024, 5, 6, 7, 8, 9"],
        "/admin/toosimpleq/taskexec/dashboard/": [],
        "/admin/toosimpleq/workerstatus/": ["legacy-worker"],
        "/admin/toosimpleq/workerstatus/1/change/": ["legacy-worker"],
        "/admin/toosimpleq/scheduleexec/": ["legacy_nightly"],
        "/admin/toosimpleq/scheduleexec/1/change/": ["legacy_nightly"],
    })
    for url, texts in pages.items():
        response = admin_client.get(url)
        assert response.status_code == 200, url
        for text in texts:
            assert text in response.content.decode(), (url, text)
    # Values that could not be converted: shown as stored, with the note saying why.
    settings.TOOSIMPLEQ_DATABASE = with_bad_values.alias
    for pk in (101, 102):
        response = admin_client.get(change.format(pk))
        assert response.status_code == 200 and "could not be converted" in response.content.decode()
    # Such a call cannot be requeued from the admin (its arguments cannot be read): it says so.
    count = TaskExec.objects.count()
    response = admin_client.post(
        "/admin/toosimpleq/taskexec/", {"action": "action_requeue", "_selected_action": [101], "index": 0}, follow=True
    )
    assert "Not requeued, their arguments cannot be read" in response.content.decode() and "#101" in response.content.decode()
    assert TaskExec.objects.count() == count


# -- running after the upgrade ------------------------------------------------------------------------


def test_waiting_calls_run_once_with_their_arguments(legacy_db, legacy_tasks, settings):
    # An execution a 1.x worker was running when it was stopped for the upgrade.
    now = datetime.datetime.now(UTC)
    running = (120, "legacy_add", b64pickle((3, 4)), b64pickle({}), now, now, "PROCESSING", "", "", now, 0, 0, 1)
    legacy_db.raw(
        "INSERT INTO toosimpleq_taskexec (id, task_name, args, kwargs, created, started, state, stdout, stderr, due, "
        "retries, retry_delay, worker_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        running,
    )
    legacy_db.disconnect()
    legacy_db.migrate()
    alias = legacy_db.connect()
    settings.TOOSIMPLEQ_DATABASE = alias
    # Queuing the unique call again merges into the legacy execution: no new row.
    before = TaskExec.objects.count()
    again = legacy_tasks.legacy_unique.queue(7)
    assert again.pk == ROWS["queued_unique"]["id"] and TaskExec.objects.count() == before
    # The sleeping retry runs once due (made due now, rather than in ten years).
    retry_id = ROWS["sleeping_retry"]["id"]
    TaskExec.objects.filter(pk=retry_id).update(due=datetime.datetime.now(UTC))

    done = legacy_db.manage("worker", "--until_done", "--reload", "never", "--tick", "0.2")
    assert "legacy_add" in done.stderr + done.stdout  # the worker lists the fixture's tasks

    assert sorted(legacy_db.written("legacy_add")) == [[3, 4], [10, 20]]
    assert legacy_db.written("legacy_greet") == [["Bob", "2024-05-06 07:08:09+00:00"]]
    assert legacy_db.written("legacy_unique") == [[7]]
    rows = executions(alias)
    assert rows[ROWS["queued_add"]["id"]].result == 30
    assert rows[ROWS["queued_greet"]["id"]].result == {
        "greeting": "hello Bob",
        "when": datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
    }
    unique = rows[ROWS["queued_unique"]["id"]]
    assert (unique.state, unique.result, unique.unique_key) == ("SUCCEEDED", 7, None)
    retry = rows[retry_id]
    assert retry.state == "FAILED" and "legacy failure" in retry.error
    last = rows[retry.replaced_by_id]
    assert (last.state, last.retries, last.retry_delay, last.attempt) == ("SLEEPING", 0, 2 * 630720000.0, 3)
    assert rows[ROWS["sleeping_far"]["id"]].state == "SLEEPING"
    # The execution the 1.x worker left PROCESSING is rescued: interrupted, then run again.
    assert rows[120].state == "INTERRUPTED" and rows[rows[120].replaced_by_id].result == 7
    # The schedule continues from its last due time: no duplicate, no catch-up.
    next_due = Cron("0 3 * * *", UTC).next_after(due_of_schedule())  # the fixture's cron, TIME_ZONE UTC
    nightly = [e for e in rows.values() if e.task_name == "legacy_nightly"]
    if next_due > datetime.datetime.now(UTC):
        assert nightly == [] and legacy_db.written("legacy_nightly") == []
        assert ScheduleExec.objects.get(name="legacy_nightly").last_due == due_of_schedule()
    else:  # run later than the day after the fixture was made: one run, for the latest occurrence
        assert len(nightly) == 1 and len(legacy_db.written("legacy_nightly")) == 1
    assert WorkerStatus.objects.get(pk=1).state == "STOPPED"


# -- schema ---------------------------------------------------------------------------------------------


def schema(alias: str) -> dict[str, tuple]:
    """Columns and constraints of our tables, as Django introspects them; constraint names only where
    we chose them (names Django derives from the table's name differ after 1.x renamed tables)."""
    connection = connections[alias]
    ours = {"toosimpleq_claim_idx", "toosimpleq_sleeping_idx", "toosimpleq_processing_idx",
            "toosimpleq_state_finished_idx", "toosimpleq_created_idx", "toosimpleq_worker_live_idx"}
    result = {}
    with connection.cursor() as cursor:
        for table in TABLES:
            columns = sorted(
                # display_size is the width of the values the probing query returned: data, not schema.
                json.dumps({**info._asdict(), "display_size": None}, sort_keys=True, default=str)
                for info in connection.introspection.get_table_description(cursor, table)
            )
            constraints = sorted(
                json.dumps({**details, "name": name if name in ours else None}, sort_keys=True, default=str)
                for name, details in connection.introspection.get_constraints(cursor, table).items()
            )
            result[table] = (columns, constraints)
    return result


def assert_same_schema(got: dict, expected: dict) -> None:
    """Shows what differs: the entries only in one schema or the other, per table."""
    for table in TABLES:
        for (found, wanted) in zip(got[table], expected[table]):
            assert (sorted(set(found) - set(wanted)), sorted(set(wanted) - set(found))) == ([], []), table
            assert found == wanted, table


def test_same_schema_as_a_new_database(upgraded, unblocked):
    fresh = LegacyDatabase("fresh").create(fixture=False)
    try:
        fresh.migrate()
        expected = schema(fresh.connect())
        assert_same_schema(schema(upgraded.alias), expected)
    finally:
        fresh.drop()


# -- going back, and what cannot be converted ------------------------------------------------------------


def legacy_rows(database: LegacyDatabase) -> dict[int, tuple]:
    """The 1.x columns of every execution, with the pickles decoded (restricted unpickler)."""
    rows = database.raw(
        "SELECT id, task_name, state, args, kwargs, result, stdout, stderr, due, retries, retry_delay, "
        "replaced_by_id, error, worker_id FROM toosimpleq_taskexec ORDER BY id"
    )
    decode = lambda raw: None if raw is None else legacy.unpickle(raw)  # noqa: E731
    return {row[0]: (*row[1:3], decode(row[3]), decode(row[4]), decode(row[5]), *row[6:]) for row in rows}


def test_migrating_back_gives_1x_its_tables_and_values(legacy_db):
    before_rows, before_schema = legacy_rows(legacy_db), schema(legacy_db.connect())
    legacy_db.migrate()
    upgraded_rows = {e.pk: (e.args, e.kwargs, e.result) for e in TaskExec.objects.using(legacy_db.alias)}

    legacy_db.migrate("toosimpleq", LAST_1X)
    connections[legacy_db.alias].close()
    assert_same_schema(schema(legacy_db.alias), before_schema)
    assert legacy_rows(legacy_db) == before_rows
    workers = legacy_db.raw("SELECT label, included_queues, last_tick FROM toosimpleq_workerstatus")
    assert [w[0] for w in workers] == ["legacy-worker"]

    # ... and up again, to the same values.
    legacy_db.migrate()
    assert {e.pk: (e.args, e.kwargs, e.result) for e in TaskExec.objects.using(legacy_db.alias)} == upgraded_rows


def test_values_that_cannot_be_converted(with_bad_values, unblocked):
    output = with_bad_values.output
    assert "11 execution(s) read, 9 converted to typed JSON, 1 waiting one(s) made INVALID, 1 finished" in output
    assert "1 identical waiting twin(s) left without one" in output
    assert not with_bad_values.marker.exists()  # the exploit's os.system never ran
    rows = executions(with_bad_values.alias)
    exploit = rows[101]
    assert exploit.state == "INVALID" and exploit.finished is not None
    assert "posix.system, which typed JSON cannot store" in exploit.error and "was QUEUED" in exploit.error
    kept = rows[102]
    assert kept.state == "SUCCEEDED" and kept.args == [1, 2]
    assert "builtins.complex" in kept.error and "1.x showed it as: (1+2j)" in kept.error
    twin = rows[103]
    assert twin.state == "QUEUED" and twin.unique_key is None and rows[7].unique_key is not None


def test_too_long_names_stop_the_upgrade_with_what_to_do(legacy_db):
    legacy_db.raw("UPDATE toosimpleq_scheduleexec SET name = %s", ["n" * 300])
    connections[legacy_db.alias].close()
    done = legacy_db.manage("migrate", "--no-input", check=False)
    assert done.returncode != 0
    assert "names are limited to 255 characters" in done.stderr and "the schedule 'nnn" in done.stderr
    assert legacy_db.raw("SELECT COUNT(*) FROM toosimpleq_taskexec WHERE args LIKE %s", ["gA%"]) == [(8,)]  # untouched


def test_a_1x_database_before_1_2_1_is_refused_with_what_to_do(legacy_db):
    legacy_db.raw("DELETE FROM django_migrations WHERE app = 'toosimpleq' AND name >= %s", ["0015"])
    connections[legacy_db.alias].close()
    done = legacy_db.manage("migrate", "--no-input", check=False)
    assert done.returncode != 0
    assert "its last toosimpleq migration is '0014_alter_workerstatus_exit_code'" in done.stderr
    assert "Upgrade to 1.2.1 first" in done.stderr
