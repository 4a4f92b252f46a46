"""Flow control values: rate strings, the limits of queues and tasks, ``TOOSIMPLEQ_QUEUES``.

Plain data, checked where it enters (the settings, ``@register_task``): the engine enforces the
limits inside the claim (see ``engine.flow`` and docs/architecture.md, "Flow control").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from .errors import ConfigurationError

#: Units of a rate's period, in seconds.
UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}
#: Periods longer than this are refused: start times are kept for one period (see ``engine.flow``).
MAX_PERIOD = 86400.0
#: More starts than this per period would keep too many start times (one row each) for one scope.
MAX_RATE_COUNT = 100_000
#: A concurrency limit above this is a mistake (the worker threads of a whole fleet).
MAX_CONCURRENCY = 1_000_000

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*([a-z]+)\s*$")


@dataclass(frozen=True)
class Rate:
    """At most ``count`` starts in any window of ``period`` seconds."""

    count: int
    period: float
    text: str

    def __str__(self) -> str:
        return self.text


def parse_rate(value: Any) -> Rate:
    """A ``Rate`` from ``"N/period"``: ``"14/s"``, ``"100/10min"``, ``"5/h"``, ``"1000/1.5s"``; raises
    ``ValueError`` saying what is wrong."""
    if isinstance(value, Rate):
        return value
    if not isinstance(value, str):
        raise ValueError(f"a rate limit is a string such as '14/s' or '100/10min', not {value!r}")
    match = _RATE.match(value.lower())
    if not match:
        raise ValueError(
            f"rate limit {value!r} is not of the form 'N/period' (N starts per period): e.g. '14/s', "
            f"'100/10min', '5/h'; units: {', '.join(sorted(set(UNITS)))}, optionally plural"
        )
    count_text, multiple_text, unit = match.groups()
    if unit.endswith("s") and unit[:-1] in UNITS:
        unit = unit[:-1]
    if unit not in UNITS:
        raise ValueError(f"rate limit {value!r}: unknown unit {unit!r}; use one of {', '.join(sorted(set(UNITS)))}")
    count = int(count_text)
    multiple = float(multiple_text) if multiple_text else 1.0
    period = multiple * UNITS[unit]
    if not 1 <= count <= MAX_RATE_COUNT:
        raise ValueError(f"rate limit {value!r}: the number of starts must be between 1 and {MAX_RATE_COUNT}")
    if not 0.001 <= period <= MAX_PERIOD:
        raise ValueError(f"rate limit {value!r}: the period must be between 1 ms and 1 day")
    return Rate(count, period, value.strip())


def concurrency_problem(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CONCURRENCY:
        return f"must be a whole number from 1 to {MAX_CONCURRENCY} (executions running at once), or None, not {value!r}"
    return None


def rate_problem(value: Any) -> str | None:
    if value is None:
        return None
    try:
        parse_rate(value)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class Limit:
    """How much of a queue, a task or each key of a task may run: at most ``concurrency`` at once and
    ``rate`` starts per period (None: no such limit)."""

    concurrency: int | None = None
    rate: Rate | None = None

    def __bool__(self) -> bool:
        return self.concurrency is not None or self.rate is not None

    def as_dict(self) -> dict[str, Any]:
        return {"concurrency": self.concurrency, "rate_limit": self.rate.text if self.rate else None}


@dataclass
class FlowLimits:
    """Every limit a worker enforces in its claims: per queue, per task (all its executions) and per
    key of a task (``keyed``: each distinct ``concurrency_key`` value on its own)."""

    queues: dict[str, Limit] = field(default_factory=dict)
    tasks: dict[str, Limit] = field(default_factory=dict)
    keyed: dict[str, Limit] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.queues or self.tasks or self.keyed)

    @property
    def limited_tasks(self) -> list[str]:
        return sorted(set(self.tasks) | set(self.keyed))


#: The keys of a queue's entry in ``TOOSIMPLEQ_QUEUES``.
QUEUE_KEYS = ("concurrency", "rate_limit")


def queue_limit(name: str, options: Any, where: str = "TOOSIMPLEQ_QUEUES") -> Limit:
    """The ``Limit`` of queue ``name`` from its settings entry; raises ``ConfigurationError`` naming it."""
    if not isinstance(name, str) or not name or len(name) > 255:
        raise ConfigurationError(f"{where}: queue names are non-empty strings of at most 255 characters, not {name!r}")
    if not isinstance(options, dict):
        raise ConfigurationError(
            f"{where}[{name!r}] must be a dict such as {{'concurrency': 1, 'rate_limit': '14/s'}}, not {options!r}"
        )
    unknown = sorted(set(options) - set(QUEUE_KEYS))
    if unknown:
        raise ConfigurationError(f"{where}[{name!r}] has unknown keys {unknown}; the keys are {', '.join(QUEUE_KEYS)}")
    problem = concurrency_problem(options.get("concurrency"))
    if problem:
        raise ConfigurationError(f"{where}[{name!r}]['concurrency'] {problem}")
    problem = rate_problem(options.get("rate_limit"))
    if problem:
        raise ConfigurationError(f"{where}[{name!r}]['rate_limit']: {problem}")
    rate = options.get("rate_limit")
    return Limit(options.get("concurrency"), parse_rate(rate) if rate is not None else None)


def queue_limits() -> dict[str, Limit]:
    """``TOOSIMPLEQ_QUEUES``, then the ``queues`` option of each Django tasks backend of ours: the
    limits of each queue (only queues with a limit)."""
    limits: dict[str, Limit] = {}
    value = getattr(settings, "TOOSIMPLEQ_QUEUES", None) or {}
    if not isinstance(value, dict):
        raise ConfigurationError(
            f"TOOSIMPLEQ_QUEUES must be a dict of queue name -> {{'concurrency': ..., 'rate_limit': ...}}, not {value!r}"
        )
    for name, options in value.items():
        limit = queue_limit(name, options)
        if limit:
            limits[name] = limit
    for alias, backend in (getattr(settings, "TASKS", None) or {}).items():
        if not isinstance(backend, dict) or not str(backend.get("BACKEND", "")).startswith("django_toosimple_q."):
            continue
        queues = (backend.get("OPTIONS") or {}).get("queue_limits") or {}
        where = f"TASKS[{alias!r}]['OPTIONS']['queue_limits']"
        if not isinstance(queues, dict):
            raise ConfigurationError(f"{where} must be a dict of queue name -> {{'concurrency': ..., 'rate_limit': ...}}")
        for name, options in queues.items():
            limit = queue_limit(name, options, where)
            if limit and limits.get(name, limit) != limit:
                raise ConfigurationError(f"{where}[{name!r}] differs from TOOSIMPLEQ_QUEUES[{name!r}]: give it once")
            if limit:
                limits[name] = limit
    return limits
