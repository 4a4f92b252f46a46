"""The claim returns executions exactly as stored (every field, datetimes to the microsecond, on every
database), an idle worker's claim is one statement in autocommit, and on PostgreSQL the claim
function (migration 0028) follows indexes whatever the tables' size when its plans were made."""

from __future__ import annotations

import contextlib
import datetime
import re
from typing import Iterator

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_toosimple_q.engine import Selection, get_engine
from django_toosimple_q.engine.outcome import Outcome
from django_toosimple_q.models import TaskExec, WorkerStatus

States = TaskExec.States
UTC = datetime.timezone.utc


def a_worker() -> WorkerStatus:
    now = timezone.now()
    return WorkerStatus.objects.create(label="w", host="h", pid=1, started=now, last_seen=now, timeout=60)


@contextlib.contextmanager
def explained(*settings: str) -> Iterator[list[str]]:
    """Collect the plans of the statements run inside (PostgreSQL's ``auto_explain``, sent to this
    connection as notices); skips the test on a server without the contrib modules."""
    notices: list[str] = []

    def notice(diagnostic) -> None:
        notices.append(diagnostic.message_primary or "")

    with connection.cursor() as cursor:
        try:
            cursor.execute("LOAD 'auto_explain'")
        except Exception as exc:  # noqa: BLE001 - a server without the contrib modules
            pytest.skip(f"auto_explain is not available: {exc}")
        for setting in ("log_min_duration = 0", "log_level = 'notice'", *settings):
            cursor.execute(f"SET auto_explain.{setting}")
        cursor.execute("SET client_min_messages = 'notice'")
        connection.connection.add_notice_handler(notice)
        try:
            yield notices
        finally:
            connection.connection.remove_notice_handler(notice)
            cursor.execute("SET client_min_messages = DEFAULT")
            cursor.execute("SET auto_explain.log_min_duration = -1")


def stored(pk: int) -> dict:
    row = TaskExec.objects.get(pk=pk)
    return {f.attname: getattr(row, f.attname) for f in TaskExec._meta.concrete_fields}


text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=10)
# Arguments as JSON holds them (arguments of every other type: tests/test_properties.py).
values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)

# Datetimes the database holds (microsecond precision), from far past to far future.
datetimes = st.datetimes(
    min_value=datetime.datetime(1, 1, 2), max_value=datetime.datetime(9999, 12, 30), timezones=st.just(UTC)
)


@pytest.mark.django_db(transaction=True)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    due=datetimes,
    created=datetimes,
    args=st.lists(values, max_size=3),
    kwargs=st.dictionaries(text, values, max_size=3),
    priority=st.integers(min_value=-(2**31), max_value=2**31 - 1),
    queue=st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), min_size=1, max_size=20),
)
def test_a_claimed_execution_is_the_stored_row(due, created, args, kwargs, priority, queue):
    TaskExec.objects.all().delete()
    owner = a_worker()
    execution = TaskExec(
        task_name="echo", args=args, kwargs=kwargs, queue=queue, priority=priority, due=due, created=created,
        state=States.QUEUED,
    )  # fmt: skip
    execution.save()
    now = timezone.now()
    claimed = get_engine().claim(owner, Selection(["echo"], [], []), 5, now)
    assert [e.pk for e in claimed] == [execution.pk]
    expected = stored(execution.pk)
    got = {f.attname: getattr(claimed[0], f.attname) for f in TaskExec._meta.concrete_fields}
    assert got == expected
    assert got["started"] == now and got["state"] == States.PROCESSING and got["worker_id"] == owner.pk


names = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=20)


@pytest.mark.django_db(transaction=True)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(task_name=names, queue=names)
def test_the_claim_selects_by_any_task_and_queue_name(task_name, queue):
    """On PostgreSQL the names reach the claim function as array literals made by ``text_array``."""
    TaskExec.objects.all().delete()
    owner = a_worker()
    other = f"other:{queue}"  # distinct under any collation (MariaDB compares without case and trailing spaces)
    mine, theirs = (
        TaskExec.objects.create(task_name=task_name, args=[], kwargs={}, queue=name, due=timezone.now(), state=States.QUEUED)
        for name in (queue, other)
    )
    engine = get_engine()
    assert [e.pk for e in engine.claim(owner, Selection([task_name], [], [queue]), 5, timezone.now())] == [theirs.pk]
    assert [e.pk for e in engine.claim(owner, Selection(["unknown", task_name], [queue], []), 5, timezone.now())] == [mine.pk]


@pytest.mark.postgresql_only
@pytest.mark.django_db
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(text, max_size=6))
def test_the_array_literal_of_the_claim_reads_back_as_the_list(values):
    from django_toosimple_q.engine.postgresql import text_array

    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::text[]", [text_array(tuple(values))])
        assert cursor.fetchone()[0] == values


@pytest.mark.django_db(transaction=True)
def test_an_idle_claim_is_one_statement_without_a_transaction():
    owner = a_worker()
    engine = get_engine()
    TaskExec(task_name="echo", args=[], kwargs={}, due=timezone.now(), state=States.QUEUED).save()
    with CaptureQueriesContext(connection) as queries:
        recorded, claimed = engine.record_and_claim(owner, [], Selection(["echo"], [], []), 5, timezone.now())
    assert recorded == [] and len(claimed) == 1
    statements = [q["sql"] for q in queries.captured_queries]
    if connection.vendor == "mysql":  # lock, then update: a transaction of two statements
        assert len([s for s in statements if not s.upper().startswith(("SAVEPOINT", "RELEASE"))]) >= 2
    else:
        assert len(statements) == 1, statements


@pytest.mark.postgresql_only
@pytest.mark.django_db(transaction=True)
def test_the_claim_function_keeps_to_indexes_whatever_the_size_of_the_tables():
    """Its plans are made once per connection, while the tables may be empty: they must still reach
    rows by index once the history holds thousands of rows (``enable_seqscan`` off inside)."""
    owner = a_worker()
    engine = get_engine()
    selection = Selection(["echo"], [], [])
    for _ in range(6):  # past PL/pgSQL's custom plans: the generic plan is made on empty tables
        assert engine.claim(owner, selection, 5, timezone.now()) == []
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO toosimpleq_taskexec (task_name, args, kwargs, queue, priority, due, created, state, "
            "output, attempt, retries, retry_delay, is_unique, crashes, upstream_left, receives) SELECT 'echo', '[]', "
            "'{}', 'default', 0, %s, %s, 'SUCCEEDED', '', 1, 0, 0, false, 0, 0, false FROM generate_series(1, 20000)",
            [now, now],
        )
    TaskExec(task_name="echo", args=[], kwargs={}, due=now, state=States.QUEUED).save()
    with explained("log_nested_statements = on") as notices:
        claimed = engine.claim(owner, selection, 5, timezone.now())
    assert len(claimed) == 1
    plans = "\n".join(notices)
    assert "toosimpleq_ready_claim_idx" in plans, plans
    assert "Seq Scan on toosimpleq_taskexec" not in plans, plans


@pytest.mark.postgresql_only
@pytest.mark.django_db(transaction=True)
def test_recording_a_batch_reads_the_outcomes_once_on_a_small_table():
    """A worker records a batch of outcomes in one UPDATE joined to them. On a table of a few thousand
    rows, conditions on the table alone (state, worker) made the planner scan the table first and read
    every outcome again for each of its rows: 15-20 ms for 128 outcomes instead of 1-3 ms."""
    owner = a_worker()
    engine = get_engine()
    now = timezone.now()
    with connection.cursor() as cursor:
        # As in a drain: 2,000 executions queued and the statistics read, then each claimed (a new row
        # version) and finished (another); the worker holds the last 257 (claimed ahead) as PROCESSING.
        cursor.execute(
            "INSERT INTO toosimpleq_taskexec (task_name, args, kwargs, queue, priority, due, created, state, "
            "output, attempt, retries, retry_delay, is_unique, crashes, upstream_left, receives) SELECT 'echo', "
            "'[\"/tmp/lines.txt\", ' || i || ']', '{}', 'default', 0, %s, %s, 'QUEUED', '', 1, 0, 0, false, 0, 0, "
            "false FROM generate_series(1, 2000) AS i",
            [now, now],
        )
        cursor.execute("ANALYZE toosimpleq_taskexec")
        cursor.execute("UPDATE toosimpleq_taskexec SET state = 'PROCESSING', worker_id = %s", [owner.pk])
        cursor.execute(
            "UPDATE toosimpleq_taskexec SET state = 'SUCCEEDED', started = %s, finished = %s WHERE id NOT IN "
            "(SELECT id FROM toosimpleq_taskexec ORDER BY id DESC LIMIT 257)",
            [now, now],
        )
    running = list(TaskExec.objects.filter(state=States.PROCESSING).order_by("id")[:128])
    outcomes = [(e, Outcome(state=States.SUCCEEDED, started=now, finished=now)) for e in running]
    with explained("log_analyze = on", "log_timing = off") as notices:
        done = engine.finish_many(owner, outcomes)
    assert done == {e.pk for e in running}
    plans = "\n".join(notices)
    scans = re.findall(r"Function Scan on \w+ .*loops=(\d+)", plans)
    assert scans and all(loops == "1" for loops in scans), plans
    assert TaskExec.objects.filter(state=States.SUCCEEDED).count() == 2000 - 257 + 128


@pytest.mark.django_db(transaction=True)
def test_a_batch_of_outcomes_larger_than_one_statement_takes_is_recorded_at_once():
    """A worker holds one execution per thread plus those claimed ahead, and records their outcomes
    together: with many threads, more rows than one compound SELECT joins on SQLite (500). Every
    outcome is recorded, each once."""
    owner = a_worker()
    engine = get_engine()
    now = timezone.now()
    count = 1_256  # e.g. a worker of 1,000 threads with 256 executions claimed ahead: three statements on SQLite
    TaskExec.objects.bulk_create(
        [
            TaskExec(task_name="echo", args=[i], kwargs={}, due=now, state=States.PROCESSING, worker=owner)
            for i in range(count)
        ]
    )
    running = list(TaskExec.objects.order_by("id"))
    outcomes = [(e, Outcome(state=States.SUCCEEDED, started=now, finished=now, result=e.args[0])) for e in running]
    with CaptureQueriesContext(connection) as queries:
        done = engine.finish_many(owner, outcomes)
    assert done == {e.pk for e in running}
    if connection.vendor != "mysql":  # MariaDB has no UPDATE ... RETURNING: a statement per outcome
        assert len(queries.captured_queries) < count / 50, len(queries.captured_queries)
    assert set(TaskExec.objects.values_list("state", flat=True)) == {States.SUCCEEDED}
    assert sorted(TaskExec.objects.values_list("result", flat=True)) == list(range(count))
