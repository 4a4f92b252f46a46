"""Property-based tests (Hypothesis): whatever a user queues or a task returns is either refused where
it enters, with an error naming the task, or stored and read back equal from this database.

Generated values: every supported type, strings with any code point (NUL and lone surrogates too),
huge and tiny ints, floats and Decimals (nan, infinities, subnormals), datetimes and times in any IANA
zone or fixed offset, dates over the whole calendar, nested containers, plus values that must be
refused (ints beyond 4000 digits, nesting past the limit, reference cycles, unsupported objects).
Whether a value must be refused is decided here from the documented rules (``expected_problem``),
not by asking the code under test.

Example counts come from the Hypothesis profile (tests/conftest.py): modest by default,
``make test ARGS="--hypothesis-profile=long tests/test_properties.py"`` for a longer run.
"""

from __future__ import annotations

import datetime
import decimal
import pickle
import tempfile
import uuid
import zoneinfo

import pytest
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from django_toosimple_q.models import TaskExec
from tests.app import tasks as app_tasks

pytestmark = pytest.mark.django_db(transaction=True)
States = TaskExec.States
UTC = datetime.timezone.utc

# -- what the documented rules say (README, "What arguments and results can be") -------------------------

MAX_DEPTH = 100
INT_LIMIT = 10**4000
REASONS = ("int of more than 4000 digits", "contains itself", "levels deep", "cannot be stored")
SCALARS = (str, int, float, bytes, decimal.Decimal, uuid.UUID, datetime.date, datetime.time, datetime.timedelta)


def expected_problem(value, depth: int = 0, parents: tuple = ()) -> str | None:
    """Why ``value`` must be refused, or None if it must be stored."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return "an int beyond 4000 digits" if abs(value) >= INT_LIMIT else None
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        if id(value) in parents:
            return "a reference cycle"
        if depth >= MAX_DEPTH:
            return "nesting beyond the limit"
        children = [*value.keys(), *value.values()] if isinstance(value, dict) else list(value)
        for child in children:
            problem = expected_problem(child, depth + 1, (*parents, id(value)))
            if problem:
                return problem
        return None
    return None if isinstance(value, SCALARS) else "an unsupported type"


def same(a, b) -> bool:
    """``b`` reads back as ``a``: same types, same values (nan and -0.0 included), same offsets."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)
    if isinstance(a, (datetime.datetime, datetime.time)):
        return a.isoformat() == b.isoformat()
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return len(a) == len(b) and all(same(ka, kb) and same(va, vb) for (ka, va), (kb, vb) in zip(a.items(), b.items()))
    return a == b


# -- strategies ------------------------------------------------------------------------------------------

# Every code point, NUL and lone surrogates included.
any_text = st.text(st.characters(exclude_categories=()), max_size=20)
# Fixed offsets strictly inside +-24 h, to the microsecond.
_day = datetime.timedelta(hours=24)
fixed_offsets = st.timedeltas(min_value=-_day + datetime.timedelta(microseconds=1), max_value=_day - datetime.timedelta(microseconds=1)).map(
    datetime.timezone
)
any_zone = st.one_of(st.none(), fixed_offsets, st.timezones())
huge_ints = st.one_of(
    st.integers(min_value=10**3990, max_value=10**4010), st.integers(min_value=-(10**4010), max_value=-(10**3990))
)
# Values that can be dict keys and set items (no nan: it is not equal to itself; fixed offsets only:
# Python never finds a datetime of a daylight-saving fold equal to one of another zone).
hashable_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    any_text,
    st.binary(max_size=10),
    st.decimals(allow_nan=False),
    st.uuids(),
    st.dates(),
    st.datetimes(timezones=st.one_of(st.none(), fixed_offsets)),
    st.times(timezones=st.one_of(st.none(), fixed_offsets)),
    st.timedeltas(),
)
hashables = st.one_of(hashable_scalars, st.tuples(hashable_scalars, hashable_scalars), st.frozensets(hashable_scalars, max_size=3))


def nested_list(depth: int) -> list:
    return app_tasks._nested_list(depth)


def cycle_in(items: list) -> list:
    """A list holding ``items`` and itself."""
    items.append(items)
    return items


scalars = st.one_of(
    hashable_scalars,
    st.floats(),  # nan and infinities
    st.decimals(),  # NaN, sNaN, infinities
    st.datetimes(timezones=any_zone),
    st.times(timezones=any_zone),
    huge_ints,
    st.integers(min_value=95, max_value=105).map(nested_list),
    st.lists(st.integers(), max_size=2).map(cycle_in),
    st.builds(object),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(any_text, inner, max_size=4),
        st.dictionaries(hashables, inner, max_size=3),
        st.sets(hashables, max_size=4),
        st.frozensets(hashables, max_size=4),
    ),
    max_leaves=12,
)


# -- arguments -------------------------------------------------------------------------------------------


@given(value=values, as_keyword=st.booleans())
def test_an_argument_is_refused_naming_the_task_or_read_back_equal(value, as_keyword):
    problem = expected_problem(value)
    event(f"refused: {problem}" if problem else "stored")  # shown by --hypothesis-show-statistics
    try:
        execution = app_tasks.identity.queue(value=value) if as_keyword else app_tasks.identity.queue(value)
    except (TypeError, ValueError) as exc:
        assert problem, f"refused although storable: {exc}"
        message = str(exc)
        assert message.startswith("Task 'identity' cannot be queued: ") and "argument" in message, message
        assert any(reason in message for reason in REASONS), message
        return
    assert problem is None, f"accepted although it is {problem}"
    stored = TaskExec.objects.get(pk=execution.pk)
    assert same(value, stored.kwargs["value"] if as_keyword else stored.args[0])


# -- due -------------------------------------------------------------------------------------------------

ZONES = ["UTC", "America/New_York", "Pacific/Kiritimati", "Pacific/Pago_Pago", "Asia/Kolkata"]


def near_the_ends(due: datetime.datetime) -> bool:
    """Within two days of the first or last datetime Python holds (offsets are under a day, plus a day
    of margin): the only place a due may be refused."""
    wall = due.replace(tzinfo=None)
    return wall - datetime.datetime.min < datetime.timedelta(days=2) or datetime.datetime.max - wall < datetime.timedelta(days=2)


@given(
    due=st.one_of(
        st.datetimes(timezones=any_zone),
        # Concentrate on both ends of the calendar too.
        st.datetimes(max_value=datetime.datetime(1, 1, 4), timezones=any_zone),
        st.datetimes(min_value=datetime.datetime(9999, 12, 28), timezones=any_zone),
    ),
    zone=st.sampled_from(ZONES),
)
def test_a_due_is_refused_naming_the_task_or_read_back_equal_in_every_zone(due, zone):
    with override_settings(TIME_ZONE=zone):
        try:
            execution = app_tasks.identity.queue(1, due=due)
        except ValueError as exc:
            event("refused")
            assert near_the_ends(due), f"refused although far from the ends: {exc}"
            assert str(exc).startswith("Task 'identity': due ") and "out of range" in str(exc)
            return
        stored = TaskExec.objects.get(pk=execution.pk).due
    event("stored")
    aware = due if due.utcoffset() is not None else due.replace(tzinfo=zoneinfo.ZoneInfo(zone))
    assert stored == aware.astimezone(UTC)
    for other in ZONES:
        timezone.localtime(stored, zoneinfo.ZoneInfo(other))  # readable everywhere


# -- results, through a real worker ----------------------------------------------------------------------

WORKER_EXAMPLES = max(3, settings.default.max_examples // 20)


@settings(max_examples=WORKER_EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(results=st.lists(values, min_size=1, max_size=12))
def test_a_result_is_stored_equal_or_failed_without_retry(results, workers):
    """One worker run per example returns each generated value from a task (with retries=2)."""
    with tempfile.NamedTemporaryFile(suffix=".pickle") as file:
        pickle.dump(results, file)
        file.flush()
        executions = [app_tasks.return_pickled.queue(file.name, index) for index in range(len(results))]
        finished = workers.run("--until_done")
    assert finished.returncode == 0, finished.stderr[-3000:]
    for value, execution in zip(results, executions):
        stored = TaskExec.objects.get(pk=execution.pk)
        problem = expected_problem(value)
        if problem:
            assert stored.state == States.FAILED and stored.replaced_by is None, (problem, stored.state, stored.error)
            assert "cannot be stored" in stored.error and "Not retried" in stored.error, stored.error
            assert stored.error.startswith("The task ran, but the result"), stored.error
        else:
            assert stored.state == States.SUCCEEDED, stored.error
            assert same(value, stored.result)
