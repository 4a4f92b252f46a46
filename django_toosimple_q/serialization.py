"""Arguments and results <-> text stored in the database.

Values are stored as JSON. Types JSON cannot express (tuple, datetime, date, time, timedelta,
Decimal, UUID, bytes, set, frozenset, dicts with non-string keys, non-finite floats, strings holding
lone surrogates) are written as a one-key object ``{"__tsq__": [type, payload]}`` so they come back as
the same Python values. Nothing is ever unpickled: a database row cannot make the worker run code.

What has no faithful stored form is refused with ``UnstorableValue`` (a TypeError) naming where it
is: the limits (``MAX_DEPTH``, ``MAX_INT_DIGITS``) keep every stored value readable by every process.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import hashlib
import json
import math
import re
import uuid
from typing import Any

from .errors import UnstorableValue
from .validation import show

__all__ = ["UnstorableValue", "Undecodable", "dumps", "loads", "to_jsonable", "from_jsonable", "call_fingerprint"]

TAG = "__tsq__"
#: Containers (list, tuple, dict, set, frozenset) nest at most this deep: encoding, decoding and
#: showing a value then stay far from Python's recursion limit.
MAX_DEPTH = 100
#: Ints are stored as JSON numbers; Python turns an int of more than 4300 digits into text only when
#: allowed to (``sys.set_int_max_str_digits``), so we stay below that in every process.
MAX_INT_DIGITS = 4000
_INT_LIMIT = 10**MAX_INT_DIGITS
# Lone surrogates (e.g. from file names decoded with "surrogateescape") cannot be encoded in UTF-8.
_SURROGATE_SPLIT = re.compile("([\ud800-\udfff])")


class _Refused(Exception):
    """Raised inside the encoder; each enclosing container adds its step to the path on the way out."""

    def __init__(self, value: Any, reason: str | None = None):
        self.value = value
        self.reason = reason
        self.steps: list[str] = []


class Undecodable:
    """Stands in for a stored value that cannot be read back (e.g. a row edited by hand)."""

    def __init__(self, raw: str, error: Exception):
        self.raw = raw
        self.error = error

    def __repr__(self) -> str:
        return f"<undecodable value: {self.error}>"


def _tagged(kind: str, payload: Any) -> dict[str, Any]:
    return {TAG: [kind, payload]}


def to_jsonable(value: Any, path: str = "value", *, wrapper: bool = False) -> Any:
    """Turn ``value`` into plain JSON data, tagging the types JSON cannot carry.

    Raises ``UnstorableValue`` (a TypeError) naming where, under ``path``, the value cannot be stored:
    an unsupported type, an int of more than ``MAX_INT_DIGITS`` digits, containers nested deeper than
    ``MAX_DEPTH`` or containing themselves, a dict key or set item that would not read back hashable.
    ``wrapper``: ``value`` is the list or dict *of* a call's arguments, not counted in the depth.
    """
    try:
        return _encode(value, -1 if wrapper else 0, set())
    except _Refused as refused:
        steps = refused.steps[::-1]
        if len(steps) > 12:  # e.g. too deep: the ends of the path say enough
            steps = [*steps[:5], f"...({len(steps) - 10} more)...", *steps[-5:]]
        raise UnstorableValue(refused.value, path + "".join(steps), refused.reason) from None


def _encode(value: Any, depth: int, parents: set[int]) -> Any:
    # bool and int first: they are the common case and bool is a subclass of int.
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if -_INT_LIMIT < value < _INT_LIMIT:
            return value
        raise _Refused(
            value,
            f"is an int of more than {MAX_INT_DIGITS} digits, which cannot be stored; pass it in another form, "
            "e.g. hex(n) or n.to_bytes(...)",
        )
    if isinstance(value, str):
        return _tagged("str", _pieces(value)) if _has_surrogate(value) else value
    if isinstance(value, float):
        return value if math.isfinite(value) else _tagged("float", repr(value))
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        return _encode_container(value, depth, parents)
    # datetime before date: datetime is a subclass of date.
    if isinstance(value, datetime.datetime):
        return _tagged("datetime", value.isoformat())
    if isinstance(value, datetime.date):
        return _tagged("date", value.isoformat())
    if isinstance(value, datetime.time):
        return _tagged("time", value.isoformat())
    if isinstance(value, datetime.timedelta):
        return _tagged("timedelta", [value.days, value.seconds, value.microseconds])
    if isinstance(value, decimal.Decimal):
        return _tagged("decimal", str(value))
    if isinstance(value, uuid.UUID):
        return _tagged("uuid", str(value))
    if isinstance(value, (bytes, bytearray)):
        return _tagged("bytes", base64.b64encode(bytes(value)).decode("ascii"))
    raise _Refused(value)


def _encode_container(value: Any, depth: int, parents: set[int]) -> Any:
    if depth >= MAX_DEPTH:
        raise _Refused(value, f"nests containers more than {MAX_DEPTH} levels deep, which cannot be stored")
    if id(value) in parents:
        raise _Refused(value, "is a container that contains itself (a reference cycle), which cannot be stored")
    parents.add(id(value))
    depth += 1
    if isinstance(value, list):
        encoded: Any = _encode_items(value, depth, parents)
    elif isinstance(value, tuple):
        encoded = _tagged("tuple", _encode_items(value, depth, parents))
    elif isinstance(value, dict):
        encoded = _encode_dict(value, depth, parents)
    else:
        items = [_encode_member(item, depth, parents, " item") for item in value]
        # Sorted text form so that equal sets store (and hash, for unique tasks) identically.
        items.sort(key=lambda item: json.dumps(item, sort_keys=True))
        encoded = _tagged("frozenset" if isinstance(value, frozenset) else "set", items)
    parents.remove(id(value))
    return encoded


def _encode_items(items: Any, depth: int, parents: set[int]) -> list[Any]:
    encoded = []
    for index, item in enumerate(items):
        try:
            encoded.append(_encode(item, depth, parents))
        except _Refused as refused:
            refused.steps.append(f"[{index}]")
            raise
    return encoded


def _encode_dict(value: dict[Any, Any], depth: int, parents: set[int]) -> dict[str, Any]:
    if TAG not in value and all(isinstance(k, str) and not _has_surrogate(k) for k in value):
        encoded = {}
        for key, item in value.items():
            try:
                encoded[key] = _encode(item, depth, parents)
            except _Refused as refused:
                refused.steps.append(f"[{show(key)}]")
                raise
        return encoded
    pairs = []
    for key, item in value.items():
        encoded_key = _encode_member(key, depth, parents, f" key {show(key)}")
        try:
            pairs.append([encoded_key, _encode(item, depth, parents)])
        except _Refused as refused:
            refused.steps.append(f"[{show(key)}]")
            raise
    return _tagged("dict", pairs)


def _encode_member(value: Any, depth: int, parents: set[int], step: str) -> Any:
    """A dict key or set item: it must read back as a hashable value."""
    try:
        encoded = _encode(value, depth, parents)
        if not _reads_back_hashable(encoded):
            raise _Refused(
                value, f"is a {type(value).__qualname__}, which would read back unhashable: it cannot be a dict key or set item"
            )
    except _Refused as refused:
        refused.steps.append(step)
        raise
    return encoded


def _reads_back_hashable(data: Any) -> bool:
    if isinstance(data, list):
        return False
    if not isinstance(data, dict):
        return True
    kind: str | None = None
    payload: Any = ()
    if len(data) == 1 and TAG in data:
        kind, payload = data[TAG]
    if kind == "tuple":
        return all(_reads_back_hashable(item) for item in payload)
    return kind not in (None, "dict", "set")


def _has_surrogate(text: str) -> bool:
    # isascii() is O(1); encoding is several times faster than a regular expression on long text.
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _pieces(text: str) -> list[str | int]:
    """A string with lone surrogates as its runs of text and the surrogates' code points: ``["a", 55296]``."""
    # Splitting on a captured surrogate alternates runs of text (even places, maybe empty) and surrogates.
    parts = _SURROGATE_SPLIT.split(text)
    return [ord(part) if index % 2 else part for index, part in enumerate(parts) if index % 2 or part]


# An offset of less than a second ("+00:00:00.000001"), which Python's fromisoformat reads as UTC.
_SUBSECOND_OFFSET = re.compile(r"([+-])00:00:00\.(\d{6})$")


def _with_offset(parse: Any) -> Any:
    def parse_isoformat(text: str) -> Any:
        value = parse(text)
        tiny = _SUBSECOND_OFFSET.search(text)
        if tiny is None:
            return value
        offset = datetime.timedelta(microseconds=int(tiny.group(2)))
        return value.replace(tzinfo=datetime.timezone(-offset if tiny.group(1) == "-" else offset))

    return parse_isoformat


_DECODERS = {
    "str": lambda pieces: "".join(p if isinstance(p, str) else chr(p) for p in pieces),
    "float": float,
    "datetime": _with_offset(datetime.datetime.fromisoformat),
    "date": datetime.date.fromisoformat,
    "time": _with_offset(datetime.time.fromisoformat),
    "timedelta": lambda p: datetime.timedelta(days=p[0], seconds=p[1], microseconds=p[2]),
    "decimal": decimal.Decimal,
    "uuid": uuid.UUID,
    "bytes": base64.b64decode,
}


def from_jsonable(data: Any) -> Any:
    """Inverse of :func:`to_jsonable`."""
    if isinstance(data, list):
        return [from_jsonable(v) for v in data]
    if not isinstance(data, dict):
        return data
    if len(data) == 1 and TAG in data:
        kind, payload = data[TAG]
        if kind == "tuple":
            return tuple(from_jsonable(v) for v in payload)
        if kind == "dict":
            return {from_jsonable(k): from_jsonable(v) for k, v in payload}
        if kind == "set":
            return {from_jsonable(v) for v in payload}
        if kind == "frozenset":
            return frozenset(from_jsonable(v) for v in payload)
        if kind not in _DECODERS:
            raise ValueError(f"unknown stored type {kind!r}")
        return _DECODERS[kind](payload)
    return {k: from_jsonable(v) for k, v in data.items()}


def dumps(value: Any, path: str = "value", *, wrapper: bool = False) -> str:
    """The stored text of ``value``; raises ``UnstorableValue`` (and nothing else) if it has none.

    The text never holds NUL or lone surrogates (JSON escapes control characters, and strings with
    surrogates are tagged), so every database stores it as it is.
    """
    if wrapper and _all_plain(value):
        data = value  # nothing to tag: the common case of queue(), encoded as it is
    else:
        data = to_jsonable(value, path, wrapper=wrapper)
    try:
        return _ENCODER.encode(data)
    except (ValueError, RecursionError, OverflowError) as exc:  # e.g. a lower int digit limit in this process
        raise UnstorableValue(value, path, f"cannot be written as JSON ({exc})") from None


#: The encoder of stored text (made once: ``json.dumps`` with options builds one per call).
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _plain(value: Any) -> bool:
    """A value that ``to_jsonable`` returns unchanged: None, bool, an int within the limit, a finite
    float, a str without lone surrogates (exact types only: subclasses take the general path)."""
    kind = type(value)
    if kind is str:
        return value.isascii() or not _has_surrogate(value)
    if kind is int:
        return -_INT_LIMIT < value < _INT_LIMIT
    if kind is float:
        return math.isfinite(value)
    return value is None or kind is bool


def _all_plain(value: Any) -> bool:
    """A list, or a dict with str keys, of plain values only (the arguments of most calls)."""
    kind = type(value)
    if kind is list:
        return all(map(_plain, value))
    if kind is dict:
        return TAG not in value and all(type(k) is str and _plain(k) and _plain(v) for k, v in value.items())
    return False


def loads(text: str) -> Any:
    return from_jsonable(json.loads(text))


def call_fingerprint(task_name: str, args: Any, kwargs: Any) -> str:
    """A stable hash of one call (task, args, kwargs), used to enforce ``unique=True`` in the database."""
    canonical = json.dumps(
        [task_name, to_jsonable(list(args), wrapper=True), to_jsonable(dict(kwargs), wrapper=True)],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()
