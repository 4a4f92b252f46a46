"""The shortcuts of the enqueue path give the same answers as the general code they skip:
``serialization.dumps`` of plain arguments, and ``Task._binds`` instead of ``Signature.bind``."""

from __future__ import annotations

import datetime
import inspect
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_toosimple_q import serialization
from django_toosimple_q.errors import InvalidCall
from django_toosimple_q.registry import Task
from tests.test_properties import any_text, values


def general_dumps(value, wrapper: bool) -> str:
    """What ``dumps`` wrote before its shortcut: every value through ``to_jsonable``."""
    data = serialization.to_jsonable(value, wrapper=wrapper)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def outcome(function, *args, **kwargs):
    try:
        return ("ok", function(*args, **kwargs))
    except serialization.UnstorableValue as exc:
        return ("refused", str(exc))


keys = st.one_of(any_text, st.just(serialization.TAG), st.just("\ud800"))
arguments = st.one_of(st.lists(values, max_size=5), st.dictionaries(keys, values, max_size=5))


@given(arguments)
def test_dumps_of_arguments_is_the_general_encoding(value):
    fast = outcome(serialization.dumps, value, wrapper=True)
    general = outcome(general_dumps, value, True)
    assert fast[0] == general[0]
    if fast[0] == "ok":
        assert fast == general  # the same text: same stored form, same unique fingerprint


@pytest.mark.parametrize(
    "value",
    [[], {}, [1, "a", None, True, 1.5], {"k": "v"}, ["\ud800"], [float("nan")], {serialization.TAG: 1}, [10**4001]],
)
def test_dumps_examples_at_the_edges_of_the_shortcut(value):
    assert outcome(serialization.dumps, value, wrapper=True) == outcome(general_dumps, value, True)


@st.composite
def signatures_and_calls(draw):
    """A function of plain or special parameters, and a call that may or may not fit it."""
    names = draw(st.lists(st.sampled_from("abcdef"), unique=True, max_size=5))
    with_defaults = draw(st.integers(min_value=0, max_value=len(names)))
    kinds = draw(
        st.sampled_from(
            [inspect.Parameter.POSITIONAL_OR_KEYWORD] * 4
            + [inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_ONLY]
        )
    )
    parameters = []
    for index, name in enumerate(names):
        default = 0 if index >= len(names) - with_defaults else inspect.Parameter.empty
        parameters.append(inspect.Parameter(name, kinds, default=default))
    if draw(st.booleans()):
        parameters.append(inspect.Parameter("rest", inspect.Parameter.VAR_KEYWORD))
    signature = inspect.Signature(parameters)

    def func(*args, **kwargs):
        return None

    func.__signature__ = signature
    positional = draw(st.integers(min_value=0, max_value=6))
    keywords = draw(st.lists(st.sampled_from("abcdefg"), unique=True, max_size=4))
    return func, tuple(range(positional)), {key: 1 for key in keywords}


@given(signatures_and_calls())
def test_binds_agrees_with_signature_bind(case):
    func, args, kwargs = case
    task = Task(func=func, name="fast_path_probe")
    try:
        inspect.signature(func).bind(*args, **kwargs)
        accepted = True
    except TypeError:
        accepted = False
    if task._binds(args, kwargs):
        assert accepted  # the shortcut never accepts what bind refuses
    if accepted:
        task.check_call(args, kwargs)
    else:
        with pytest.raises(InvalidCall, match="fast_path_probe"):
            task.check_call(args, kwargs)


def test_binds_takes_the_shortcut_for_plain_functions():
    def plain(a, b, c=1):
        return None

    task = Task(func=plain, name="plain_probe")
    assert task._binds((1, 2), {}) and task._binds((1,), {"b": 2}) and task._binds((), {"a": 1, "b": 2, "c": 3})
    assert not task._binds((1,), {}) and not task._binds((1, 2, 3, 4), {}) and not task._binds((1,), {"a": 2})


@pytest.mark.django_db(transaction=True)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            st.lists(st.one_of(st.integers(), any_text, st.none()), max_size=3),
            st.integers(min_value=-5, max_value=5),
            st.sampled_from(["default", "other", "ünïcode"]),
            st.integers(min_value=0, max_value=3),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_a_batch_with_rows_that_differ_column_by_column_reads_back_equal(rows):
    """One INSERT per batch sends a column as one value when it is the same on every row, else as a
    list: whichever columns differ, every row reads back as built."""
    from django.utils import timezone

    from django_toosimple_q.engine import get_engine
    from django_toosimple_q.models import TaskExec

    task = Task(func=lambda *args: None, name="batch_probe")
    now = timezone.now().replace(microsecond=0)
    built = [
        task.new_exec(args, {}, now + datetime.timedelta(seconds=offset), queue=queue, priority=priority)
        for args, priority, queue, offset in rows
    ]
    saved = get_engine().insert_many(built)
    for execution, (args, priority, queue, offset) in zip(saved, rows):
        stored = TaskExec.objects.get(pk=execution.pk)
        assert (stored.args, stored.priority, stored.queue) == (args, priority, queue)
        assert stored.due == now + datetime.timedelta(seconds=offset)
    TaskExec.objects.filter(task_name="batch_probe").delete()
