"""Reading the values django-toosimple-q 1.x stored, once, during the upgrade migrations.

1.x stored arguments and results as base64-encoded pickles. Unpickling runs whatever callable the
data names, so these values are decoded here by a restricted unpickler that only admits the types
our typed JSON (``serialization``) can hold, and then stored as typed JSON; nothing else in the
library ever unpickles. A value it refuses is kept as it was (prefixed with ``pickle:``, so it reads
as undecodable, never as JSON) and its execution gets a note saying why (see ``legacy_tables``).

Admitted: ``datetime`` (datetime, date, time, timedelta, timezone), ``zoneinfo.ZoneInfo`` and pytz
zones (turned into a fixed offset or a ``ZoneInfo``, without importing pytz), ``decimal.Decimal``,
``uuid.UUID``, ``set``, ``frozenset``, ``bytes``, ``bytearray``, ``collections.OrderedDict`` (read as
a dict) and Django's ``SafeString`` (read as a str), plus what the pickle protocol itself needs to
rebuild them. Refused: every other class or function (``os.system``, model instances, ``complex``...),
without calling it.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import decimal
import io
import pickle
import uuid
import zoneinfo
from typing import Any

from . import serialization
from .errors import LegacyValueError

#: Marks a stored value that the upgrade could not convert: the original base64 pickle follows.
KEPT_PREFIX = "pickle:"




# -- the restricted unpickler ---------------------------------------------------------------------


def _refuse(what: str) -> LegacyValueError:
    return LegacyValueError(f"it holds {what}, which typed JSON cannot store")


def _latin1(text: Any, encoding: Any = "latin1") -> bytes:
    # Protocols 0-2 write bytes as _codecs.encode(text, "latin1"); nothing else is accepted.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _refuse("a call of _codecs.encode other than the one pickle writes for bytes")
    return text.encode("latin-1")


def _bytes_of(args: tuple) -> bytes:
    """The arguments pickle gives ``bytes``/``bytearray``: (), (bytes,) or (str, "latin-1")."""
    if not args:
        return b""
    if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
        return bytes(args[0])
    if len(args) == 2:
        return _latin1(*args)
    # bytes(10**12) would allocate a terabyte: only the forms pickle writes are accepted.
    raise _refuse("a call of bytes()/bytearray() other than the ones pickle writes")


def _bytes(*args: Any) -> bytes:
    return _bytes_of(args)


def _bytearray(*args: Any) -> bytearray:
    return bytearray(_bytes_of(args))


class _SafeObject:
    """Stands for ``object`` as the base argument of ``copyreg._reconstructor``; never instantiated."""

    def __init__(self, *args: Any, **kwargs: Any):
        raise _refuse("a call of object()")


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    # copyreg._reconstructor: how protocols 0 and 1 rebuild a UUID (then BUILD calls __setstate__).
    if cls is uuid.UUID and base is _SafeObject and state is None:
        return uuid.UUID.__new__(uuid.UUID)
    raise _refuse(f"an object rebuilt by copyreg._reconstructor({cls!r}, {base!r})")


def _zone(key: Any, from_cache: Any = True) -> zoneinfo.ZoneInfo:
    # ZoneInfo._unpickle; ZoneInfo itself refuses keys that are paths (absolute, "..").
    if not isinstance(key, str):
        raise _refuse("a time zone whose name is not a string")
    try:
        return zoneinfo.ZoneInfo(key)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise _refuse(f"the unknown time zone {key!r}") from None


def _getattr(obj: Any, name: Any) -> Any:
    # Pickle reaches ZoneInfo._unpickle through getattr(ZoneInfo, "_unpickle"); nothing else.
    if obj is zoneinfo.ZoneInfo and name == "_unpickle":
        return _zone
    raise _refuse(f"getattr({obj!r}, {name!r})")


def _pytz_utc() -> datetime.tzinfo:
    return datetime.timezone.utc


def _pytz_zone(zone: Any, utcoffset: Any = None, dstoffset: Any = None, tzname: Any = None) -> datetime.tzinfo:
    """pytz's unpickler (Django < 4 with pytz): a localized pytz zone carries its exact offset, which
    keeps the instant; a bare one becomes the ZoneInfo of the same name. pytz is never imported."""
    if utcoffset is None:
        return datetime.timezone.utc if zone == "UTC" else _zone(zone)
    if not isinstance(utcoffset, int) or not -86400 < utcoffset < 86400:
        raise _refuse(f"a pytz offset of {utcoffset!r}")
    return datetime.timezone(datetime.timedelta(seconds=utcoffset))


_ADMITTED: dict[tuple[str, str], Any] = {
    ("datetime", "datetime"): datetime.datetime,
    ("datetime", "date"): datetime.date,
    ("datetime", "time"): datetime.time,
    ("datetime", "timedelta"): datetime.timedelta,
    ("datetime", "timezone"): datetime.timezone,
    ("decimal", "Decimal"): decimal.Decimal,
    ("uuid", "UUID"): uuid.UUID,
    ("zoneinfo", "ZoneInfo"): zoneinfo.ZoneInfo,
    ("zoneinfo", "ZoneInfo._unpickle"): _zone,
    ("zoneinfo._zoneinfo", "ZoneInfo"): zoneinfo.ZoneInfo,
    ("pytz", "_UTC"): _pytz_utc,
    ("pytz", "_p"): _pytz_zone,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytes"): _bytes,
    ("builtins", "bytearray"): _bytearray,
    ("builtins", "object"): _SafeObject,
    ("builtins", "getattr"): _getattr,
    ("_codecs", "encode"): _latin1,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("collections", "OrderedDict"): dict,
    ("django.utils.safestring", "SafeString"): str,
    ("django.utils.safestring", "SafeText"): str,
}
# Names written by Python 3 in protocols 0-2 for Python 2 compatibility.
_MODULE_ALIASES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only the values listed in ``_ADMITTED``; any other global is refused unresolved."""

    def find_class(self, module: str, name: str) -> Any:
        module = _MODULE_ALIASES.get(module, module)
        try:
            return _ADMITTED[(module, name)]
        except KeyError:
            raise _refuse(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _refuse("a persistent reference")


def unpickle(raw: str) -> Any:
    """The value of one 1.x column (base64 pickle text); ``LegacyValueError`` saying why not."""
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise LegacyValueError("it is not base64 text as 1.x wrote") from None
    try:
        return RestrictedUnpickler(io.BytesIO(data)).load()
    except LegacyValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - corrupt or hostile data: refuse, whatever it raises
        raise LegacyValueError(f"it is not a readable pickle ({type(exc).__name__}: {exc})") from None


def to_typed_json(value: Any, what: str) -> str:
    """``value`` as typed JSON text, checked to read back; ``LegacyValueError`` if it cannot."""
    try:
        text = serialization.dumps(value, what)
        serialization.loads(text)
    except serialization.UnstorableValue as exc:
        raise LegacyValueError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - e.g. a UUID whose state was forged
        raise LegacyValueError(f"it cannot be stored ({type(exc).__name__}: {exc})") from None
    return text


def convert(raw: str | None, what: str) -> str | None:
    """One 1.x column -> typed JSON text (None stays None); ``LegacyValueError`` if it cannot.

    ``what`` is ``args``, ``kwargs`` or ``result``: positional arguments become a list, keyword
    arguments must be a dict with str keys, and a result of None is stored as SQL NULL, as ours are.
    """
    if raw is None:
        return None
    value = unpickle(raw)
    if what == "args":
        if not isinstance(value, (tuple, list)):
            raise _refuse(f"a {type(value).__name__} where positional arguments (a tuple) were expected")
        value = list(value)
    elif what == "kwargs":
        if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
            raise _refuse(f"a {type(value).__name__} where keyword arguments (a dict) were expected")
    elif value is None:
        return None
    return to_typed_json(value, what)


def repickle(text: str | None, what: str) -> str | None:
    """The other way, for migrating back to 1.x: typed JSON text -> base64 pickle (protocol 2, as
    1.x wrote; positional arguments as a tuple). A value the upgrade had kept (``pickle:...``) is
    given back exactly as it was."""
    if text is None:
        return None
    if text.startswith(KEPT_PREFIX):
        return text[len(KEPT_PREFIX) :]
    value = serialization.loads(text)
    if what == "args":
        value = tuple(value)
    return base64.b64encode(pickle.dumps(value, protocol=2)).decode("ascii")
