"""Arguments and results <-> text stored in the database.

Values are stored as JSON. Types JSON cannot express (tuple, datetime, date, time, timedelta,
Decimal, UUID, bytes, set, frozenset, dicts with non-string keys, non-finite floats) are written as a
one-key object ``{"__tsq__": [type, payload]}`` so they come back as the same Python values.
Nothing is ever unpickled: a database row cannot make the worker run code.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import hashlib
import json
import math
import uuid
from typing import Any

TAG = "__tsq__"


class UnstorableValue(TypeError):
    """Raised when a value has no faithful stored form."""

    def __init__(self, value: Any, path: str):
        self.value = value
        self.path = path
        super().__init__(
            f"{path} is a {type(value).__module__}.{type(value).__qualname__}, which cannot be stored; "
            "use JSON types, tuple, set, bytes, datetime, date, time, timedelta, Decimal or UUID "
            "(for a model instance, pass its primary key)"
        )


class Undecodable:
    """Stands in for a stored value that cannot be read back (e.g. a row edited by hand)."""

    def __init__(self, raw: str, error: Exception):
        self.raw = raw
        self.error = error

    def __repr__(self) -> str:
        return f"<undecodable value: {self.error}>"


def _tagged(kind: str, payload: Any) -> dict:
    return {TAG: [kind, payload]}


def to_jsonable(value: Any, path: str = "value") -> Any:
    """Turn ``value`` into plain JSON data, tagging the types JSON cannot carry."""
    # bool and int first: they are the common case and bool is a subclass of int.
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _tagged("float", repr(value))
    if isinstance(value, list):
        return [to_jsonable(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return _tagged("tuple", [to_jsonable(v, f"{path}[{i}]") for i, v in enumerate(value)])
    if isinstance(value, dict):
        if TAG not in value and all(isinstance(k, str) for k in value):
            return {k: to_jsonable(v, f"{path}[{k!r}]") for k, v in value.items()}
        return _tagged(
            "dict",
            [[to_jsonable(k, f"{path} key"), to_jsonable(v, f"{path}[{k!r}]")] for k, v in value.items()],
        )
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
    if isinstance(value, (set, frozenset)):
        items = [to_jsonable(v, f"{path} item") for v in value]
        # Sorted text form so that equal sets store (and hash, for unique tasks) identically.
        items.sort(key=lambda item: json.dumps(item, sort_keys=True))
        return _tagged("frozenset" if isinstance(value, frozenset) else "set", items)
    raise UnstorableValue(value, path)


_DECODERS = {
    "float": float,
    "datetime": datetime.datetime.fromisoformat,
    "date": datetime.date.fromisoformat,
    "time": datetime.time.fromisoformat,
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


def dumps(value: Any, path: str = "value") -> str:
    return json.dumps(to_jsonable(value, path), ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def loads(text: str) -> Any:
    return from_jsonable(json.loads(text))


def call_fingerprint(task_name: str, args: Any, kwargs: Any) -> str:
    """A stable hash of one call (task, args, kwargs), used to enforce ``unique=True`` in the database."""
    canonical = json.dumps(
        [task_name, to_jsonable(list(args)), to_jsonable(dict(kwargs))],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()
