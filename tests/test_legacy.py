"""The restricted unpickler that converts 1.x values (``django_toosimple_q.legacy``), without a database.

Properties: a pickle of any value our typed JSON can hold, in any protocol 1.x could have written,
converts to an equal value; a pickle naming anything else is refused with ``LegacyValueError`` and
without calling it; random bytes never raise anything else.
"""

from __future__ import annotations

import base64
import collections
import datetime
import decimal
import fractions
import os
import pickle
import sys
import types
import uuid
import zoneinfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from django_toosimple_q import legacy, legacy_tables, serialization

PROTOCOLS = range(0, pickle.HIGHEST_PROTOCOL + 1)


def b64pickle(value, protocol=2) -> str:
    return base64.b64encode(pickle.dumps(value, protocol=protocol)).decode("ascii")


def same(a, b) -> bool:
    """Equal as stored: typed JSON text compares NaN, -0.0 and key order the way the queue sees them."""
    return serialization.dumps(a) == serialization.dumps(b)


# -- values typed JSON can hold ---------------------------------------------------------------------

zones = st.one_of(
    st.just(datetime.timezone.utc),
    st.integers(-23 * 60, 23 * 60).map(lambda m: datetime.timezone(datetime.timedelta(minutes=m))),
    st.sampled_from(["Europe/Paris", "America/New_York", "Asia/Kolkata", "UTC"]).map(zoneinfo.ZoneInfo),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(),
    st.binary(),
    st.binary().map(bytearray),
    st.dates(),
    st.datetimes(timezones=st.none() | zones),
    st.times(timezones=st.none() | st.just(datetime.timezone.utc)),
    st.timedeltas(),
    st.decimals(allow_nan=False),
    st.uuids(),
)
hashables = st.one_of(st.integers(), st.text(), st.dates(), st.uuids(), st.binary())
storable = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.text(), inner, max_size=4),
        st.dictionaries(hashables, inner, max_size=3),
        st.sets(hashables, max_size=4),
        st.frozensets(hashables, max_size=4),
    ),
    max_leaves=12,
)


def pickled_as(value, protocol):
    """What a pickle of ``value`` holds, read back without restriction (trusted test data): protocols
    below 4 drop ``datetime.fold``, so 1.x itself passed its tasks that value, not ``value``."""
    return pickle.loads(pickle.dumps(value, protocol=protocol))


@settings(max_examples=150, deadline=None)
@given(value=storable, protocol=st.sampled_from(PROTOCOLS))
@example(  # the second 02:00 of a night when clocks go back: protocol 2 keeps the first
    value=datetime.datetime(2000, 10, 29, 2, 0, fold=1, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")), protocol=2
)
def test_supported_values_convert_to_equal_values(value, protocol):
    raw = b64pickle(value, protocol)
    held = pickled_as(value, protocol)
    assert same(legacy.unpickle(raw), held)
    # Stored exactly as queue() would store the value itself (None: no result, SQL NULL).
    assert legacy.convert(raw, "result") == (None if held is None else serialization.dumps(held))


@settings(max_examples=60, deadline=None)
@given(args=st.lists(storable, max_size=3).map(tuple), kwargs=st.dictionaries(st.text(min_size=1), storable, max_size=3))
def test_calls_convert_to_what_queue_would_store(args, kwargs):
    # 1.x pickled args as a tuple and kwargs as a dict (protocol 2); ours stores a list and a dict.
    assert legacy.convert(b64pickle(args), "args") == serialization.dumps(list(pickled_as(args, 2)))
    assert legacy.convert(b64pickle(kwargs), "kwargs") == serialization.dumps(pickled_as(kwargs, 2))


def test_the_fixture_pickles():
    """Exact values written by 1.2.1 (from tests/fixtures/legacy-1.2.1), protocol 2 with _codecs.encode."""
    kwargs = (
        "gAJ9cQBYBAAAAHdoZW5xAWNkYXRldGltZQpkYXRldGltZQpxAmNfY29kZWNzCmVuY29kZQpxA1gLAAAAB8OoBQYHCAkAAABxBFgGAAAAbGF0aW4xcQ"
        "WGcQZScQdjZGF0ZXRpbWUKdGltZXpvbmUKcQhjZGF0ZXRpbWUKdGltZWRlbHRhCnEJSwBLAEsAh3EKUnELhXEMUnENhnEOUnEPcy4="
    )
    when = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)
    assert legacy.unpickle(kwargs) == {"when": when}
    assert legacy.unpickle("gAJLAksDhnEALg==") == (2, 3)
    assert legacy.convert("gAJLAksDhnEALg==", "args") == "[2,3]"
    assert legacy.convert("gAJOLg==", "result") is None  # a task that returned None: SQL NULL, as ours


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_other_admitted_types(protocol):
    paris = datetime.datetime(2024, 7, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    value = {
        "ordered": collections.OrderedDict([("b", 1), ("a", 2)]),
        "paris": paris,
        "empty": b"",
        "array": bytearray(b"\x00\xff"),
        "set": {1, 2},
        "frozen": frozenset({"x"}),
        "uuid": uuid.UUID(int=5),
        "decimal": decimal.Decimal("1.10"),
    }
    back = legacy.unpickle(b64pickle(value, protocol))
    assert back == value and back["paris"].utcoffset() == datetime.timedelta(hours=2)


def test_django_safe_strings_are_read_as_str():
    from django.utils.safestring import mark_safe

    for protocol in PROTOCOLS[2:]:  # Python cannot pickle them in protocols 0 and 1
        back = legacy.unpickle(b64pickle([mark_safe("<b>x</b>")], protocol))
        assert back == ["<b>x</b>"] and type(back[0]) is str


def test_pytz_zones_without_pytz(monkeypatch):
    """Django < 4 made aware datetimes with pytz: pickles name pytz._UTC and pytz._p. A stand-in module
    writes the same pickles here; reading them never imports pytz (it is not even installed)."""
    fake = types.ModuleType("pytz")

    class Zone(datetime.tzinfo):
        def __init__(self, args):
            self.args = args

        def utcoffset(self, dt):
            return datetime.timedelta(seconds=self.args[1]) if len(self.args) > 1 else datetime.timedelta(0)

        def dst(self, dt):
            return datetime.timedelta(0)

        def __reduce__(self):
            return (fake._p, self.args) if self.args else (fake._UTC, ())

    def _UTC():
        raise AssertionError("not called when reading")

    def _p(*args):
        raise AssertionError("not called when reading")

    _UTC.__module__ = _p.__module__ = "pytz"
    _UTC.__qualname__, _p.__qualname__ = "_UTC", "_p"
    fake._UTC, fake._p = _UTC, _p
    monkeypatch.setitem(sys.modules, "pytz", fake)
    utc = datetime.datetime(2021, 3, 4, 5, 6, 7, tzinfo=Zone(()))
    paris = datetime.datetime(2021, 7, 4, 5, 6, 7, tzinfo=Zone(("Europe/Paris", 7200, 3600, "CEST")))
    static = datetime.datetime(2021, 7, 4, 5, 6, 7, tzinfo=Zone(("EST",)))
    raws = [b64pickle(v, protocol) for v in (utc, paris, static) for protocol in PROTOCOLS]
    monkeypatch.delitem(sys.modules, "pytz")
    decoded = [legacy.unpickle(raw) for raw in raws]
    assert "pytz" not in sys.modules
    for index, back in enumerate(decoded):
        expected = (utc, paris, static)[index // len(PROTOCOLS)]
        if index // len(PROTOCOLS) == 2:
            assert back.tzinfo == zoneinfo.ZoneInfo("EST")
        else:
            assert back == expected and back.utcoffset() == expected.utcoffset()


# -- what is refused ----------------------------------------------------------------------------------

CALLED = []


def record_call(*args):
    """A function a hostile pickle names: it must never run."""
    CALLED.append(args)


class Payload:
    """Pickles as ``target(*args)``, the shape of every pickle exploit."""

    def __init__(self, target, *args):
        self.target, self.args = target, args

    def __reduce__(self):
        return self.target, self.args


class Model:
    """Stands for a model instance or any class of the user's."""

    def __init__(self):
        self.pk = 1


HOSTILE = [
    (Payload(os.system, "touch /tmp/toosimpleq-pwned"), "posix.system"),
    (Payload(eval, "1+1"), "builtins.eval"),
    (Payload(exec, "import os"), "builtins.exec"),
    (Payload(__import__, "os"), "builtins.__import__"),
    (Payload(record_call, "called"), "test_legacy.record_call"),
    (Payload(getattr, datetime.datetime, "now"), "getattr"),
    (Payload(bytes, 10**12), "bytes()"),
    (Payload(bytearray, 10**12), "bytes()"),
    (Model(), "Model"),
    (complex(1, 2), "builtins.complex"),
    (fractions.Fraction(1, 3), "fractions.Fraction"),
    (collections.Counter("ab"), "collections.Counter"),
    (Payload(types.SimpleNamespace), "types.SimpleNamespace"),
]


@settings(max_examples=80, deadline=None)
@given(
    case=st.sampled_from(HOSTILE),
    protocol=st.sampled_from(PROTOCOLS),
    wrap=st.sampled_from([lambda v: v, lambda v: (v,), lambda v: {"k": [1, v]}]),
)
def test_other_globals_are_refused_without_being_called(case, protocol, wrap):
    value, named = case
    raw = b64pickle(wrap(value), protocol)
    with pytest.raises(legacy.LegacyValueError) as refused:
        legacy.unpickle(raw)
    assert named.split(".")[-1] in str(refused.value)
    assert CALLED == [] and not os.path.exists("/tmp/toosimpleq-pwned")


def test_an_unstorable_admitted_object_is_refused():
    # ``object`` is admitted only as copyreg's base argument: a bare one cannot be stored.
    raw = base64.b64encode(b"\x80\x02c__builtin__\nobject\n)\x81.").decode()
    with pytest.raises(legacy.LegacyValueError):
        legacy.convert(raw, "result")
    # A UUID whose state was forged fails when stored, not later.
    forged = base64.b64encode(b"\x80\x02cuuid\nUUID\n)\x81}X\x03\x00\x00\x00intX\x01\x00\x00\x00xsb.").decode()
    with pytest.raises(legacy.LegacyValueError):
        legacy.convert(forged, "result")


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), prefix=st.sampled_from([b"", b"\x80\x02", b"\x80\x04", b"c__builtin__\n"]))
def test_random_bytes_never_raise_anything_else(data, prefix):
    raw = base64.b64encode(prefix + data).decode()
    try:
        legacy.convert(raw, "result")
    except legacy.LegacyValueError:
        pass
    assert CALLED == []


def test_shapes_1x_wrote():
    with pytest.raises(legacy.LegacyValueError, match="positional arguments"):
        legacy.convert(b64pickle({"a": 1}), "args")
    with pytest.raises(legacy.LegacyValueError, match="keyword arguments"):
        legacy.convert(b64pickle({1: "a"}), "kwargs")
    with pytest.raises(legacy.LegacyValueError, match="base64"):
        legacy.convert("not base64!", "args")


# -- one row ------------------------------------------------------------------------------------------


def row(**fields) -> legacy_tables.LegacyExecution:
    base = dict(
        id=1, task_name="t", state="SUCCEEDED", args=b64pickle((1,)), kwargs=b64pickle({}), result=None,
        stdout="", stderr="", error=None, result_preview=None,
    )
    return legacy_tables.LegacyExecution(**{**base, **fields})


def test_a_waiting_execution_that_cannot_convert_becomes_invalid_saying_why():
    converted = legacy_tables.convert_execution(row(state="QUEUED", args=b64pickle((Model(),))))
    assert converted.state == "INVALID" and converted.invalid
    assert converted.args == legacy.KEPT_PREFIX + b64pickle((Model(),))
    assert "positional arguments could not be converted" in converted.error and "Model" in converted.error
    assert "was QUEUED and cannot run" in converted.error


def test_history_keeps_its_state_with_a_note_and_the_1x_preview():
    converted = legacy_tables.convert_execution(
        row(result=b64pickle(complex(1, 2)), result_preview="(1+2j)", error="Traceback...\n", stdout="out", stderr="err")
    )
    assert converted.state == "SUCCEEDED" and not converted.invalid
    assert converted.error.startswith("Traceback...\n" + legacy_tables.NOTE_PREFIX)
    assert "builtins.complex" in converted.error and "1.x showed it as: (1+2j)" in converted.error
    assert converted.output == "out\nerr"
    # Kept values read as undecodable (never as JSON) and go back to 1.x exactly as they were.
    assert isinstance(_field_value(converted.result), serialization.Undecodable)
    assert legacy.repickle(converted.result, "result") == b64pickle(complex(1, 2))


def _field_value(text):
    from django_toosimple_q.models import TypedJSONField

    return TypedJSONField().from_db_value(text, None, None)


@settings(max_examples=60, deadline=None)
@given(args=st.lists(storable, max_size=3).map(tuple), result=storable)
def test_repickle_gives_1x_the_same_values(args, result):
    row_args = legacy.convert(b64pickle(args), "args")
    assert same(legacy.unpickle(legacy.repickle(row_args, "args")), pickled_as(args, 2))
    stored = legacy.convert(b64pickle(result), "result")
    if stored is not None:
        assert same(legacy.unpickle(legacy.repickle(stored, "result")), pickled_as(result, 2))
