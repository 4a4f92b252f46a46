"""Schedules: when a registered task is queued by itself, and running one on demand.

``@schedule_task`` (in ``decorators``) builds a ``Schedule`` and stores it in
``registry.schedules_registry``; the worker's scheduler (``worker/scheduler.py``) turns its due
occurrences into executions.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence, overload

from django.conf import settings
from django.utils import timezone

from .cron import MANUAL, Cron, get_zone
from .engine import get_engine
from .errors import InvalidCron
from .registry import ConfigurationError, Task, invalid_schedules, schedules_registry, tasks_registry
from .validation import show, text_problem

if TYPE_CHECKING:
    from .models import TaskExec

logger = logging.getLogger("django_toosimple_q.schedules")

#: How far back ``Schedule.latest_until`` looks (a 29 February occurs at least every 8 years).
LATEST_LOOKBACK = datetime.timedelta(days=3653)


@dataclass(eq=False)
class Schedule:
    """A registered schedule: which task to queue, with which arguments, at which occurrences."""

    name: str
    task: Task
    cron: str
    args: Sequence[Any] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    run_on_creation: bool = False
    catch_up: bool = False
    datetime_kwarg: str | None = None
    queue_name: str = "default"
    timezone: str | None = None
    _crons: dict[str, Cron] = field(default_factory=dict, init=False, repr=False)

    @property
    def task_name(self) -> str:
        return self.task.name

    @property
    def manual(self) -> bool:
        return self.cron == MANUAL

    @property
    def zone(self) -> datetime.tzinfo:
        """The time zone the cron expression is read in: ``timezone=`` or the project's ``TIME_ZONE``."""
        return get_zone(self.timezone)

    @property
    def parsed_cron(self) -> Cron:
        zone = self.zone
        key = str(zone)  # TIME_ZONE may change between tests (override_settings)
        if key not in self._crons:
            self._crons[key] = Cron(self.cron, zone)
        return self._crons[key]

    def next_after(self, moment: datetime.datetime) -> datetime.datetime | None:
        """The first occurrence strictly after ``moment`` (UTC), or None for a manual schedule."""
        return self.parsed_cron.next_after(moment)

    def first_last_due(self, now: datetime.datetime) -> datetime.datetime | None:
        """The ``last_due`` of this schedule's row when a worker first sees it: ``now`` (its timeline
        starts: the next occurrence is the first to run), or None with ``run_on_creation``, meaning "never
        ran" so that one execution is queued at once."""
        return None if self.run_on_creation else now

    def next_due(
        self, last_due: datetime.datetime | None, now: datetime.datetime, *, seen: bool = True
    ) -> datetime.datetime | None:
        """When a worker queues this schedule next: the one rule the scheduler and the admin share.

        ``last_due`` is the row's (aware); ``seen=False``: no worker has seen the schedule yet (no row),
        as if its row were created now. Returns ``now`` for a first run waiting to happen, None when the
        schedule never fires by itself (``cron="manual"``)."""
        if not seen:
            last_due = self.first_last_due(now)
        if last_due is None:
            return now
        if self.manual:
            return None
        return self.next_after(last_due)

    def latest_until(self, moment: datetime.datetime) -> datetime.datetime | None:
        """The latest occurrence at or before ``moment``: the one a ``run_on_creation`` run stands
        for. None for a manual schedule (or one that did not occur in the ten years before)."""
        if self.manual:
            return None
        found, _left_out = self.parsed_cron.latest(moment - LATEST_LOOKBACK, moment, 1)
        return found[-1] if found else None

    def new_exec(self, occurrence: datetime.datetime | None, due: datetime.datetime | None = None) -> TaskExec:
        """An unsaved execution for ``occurrence`` (None: run outside of the cron timeline)."""
        # Resolve by name: a module imported again registers a new Task object under the same name.
        task = tasks_registry.get(self.task_name, self.task)
        kwargs = dict(self.kwargs)
        if self.datetime_kwarg:
            kwargs[self.datetime_kwarg] = self.parsed_cron.local(occurrence) if occurrence is not None else None
        return task.new_exec(self.args, kwargs, to_db(due if due is not None else occurrence))

    def run_now(self) -> TaskExec:
        """Queue one execution now; see ``run_schedule_now``."""
        return run_schedule_now(self.name)

    def __repr__(self) -> str:
        return f"<Schedule {self.name} {self.cron!r} -> {self.task_name}>"


@overload
def to_aware(value: datetime.datetime) -> datetime.datetime: ...
@overload
def to_aware(value: None) -> None: ...
def to_aware(value: datetime.datetime | None) -> datetime.datetime | None:
    """A datetime read from the database or ``timezone.now()``, made aware (USE_TZ=False gives naive)."""
    if value is None or timezone.is_aware(value):
        return value
    return timezone.make_aware(value)


@overload
def to_db(value: datetime.datetime) -> datetime.datetime: ...
@overload
def to_db(value: None) -> None: ...
def to_db(value: datetime.datetime | None) -> datetime.datetime | None:
    """An aware datetime as Django expects it for the database: naive local time if USE_TZ=False."""
    if value is None or settings.USE_TZ or timezone.is_naive(value):
        return value
    return timezone.make_naive(value)


def validate(schedule: Schedule) -> None:
    """Raise ``ConfigurationError`` naming the schedule and what to change if it cannot work."""
    validate_declaration(schedule)
    validate_values(schedule)


def _where(schedule: Schedule) -> str:
    return f"Schedule {show(schedule.name, 80)} (cron {show(schedule.cron)})"


def validate_declaration(schedule: Schedule) -> None:
    """What makes a schedule impossible to register at all: its name, and a task that is not one."""
    where = _where(schedule)
    problem = text_problem(schedule.name)
    if problem:
        raise ConfigurationError(f"{where}: the name {problem}; give it another name with @schedule_task(name=...)")
    if not isinstance(schedule.task, Task):
        raise ConfigurationError(
            f"{where}: {schedule.task!r} is not a registered task; put @schedule_task above @register_task()"
        )
    if tasks_registry.get(schedule.task_name) is None:
        raise ConfigurationError(f"{where}: its task {schedule.task_name!r} is not registered")


def validate_values(schedule: Schedule) -> None:
    """What a schedule is declared with: queue, cron expression, time zone and arguments."""
    where = _where(schedule)
    problem = text_problem(schedule.queue_name)
    if problem:
        raise ConfigurationError(f"{where}: queue {problem}")
    if schedule.datetime_kwarg is not None and (not isinstance(schedule.datetime_kwarg, str) or not schedule.datetime_kwarg):
        raise ConfigurationError(f"{where}: datetime_kwarg must be a keyword argument name, not {show(schedule.datetime_kwarg)}")
    if schedule.timezone is not None and not isinstance(schedule.timezone, str):
        raise ConfigurationError(
            f"{where}: timezone must be the name of an IANA time zone (e.g. 'Europe/Paris') or None, "
            f"not {show(schedule.timezone)}"
        )
    try:
        # The validity of an expression does not depend on the zone; the zone name is checked too.
        Cron(schedule.cron, get_zone(schedule.timezone) if schedule.timezone is not None else datetime.timezone.utc)
    except InvalidCron as exc:
        raise ConfigurationError(f"{where}: {exc}") from None
    if not isinstance(schedule.args, (list, tuple)):
        raise ConfigurationError(f"{where}: args must be a list or tuple of positional arguments, not {show(schedule.args)}")
    if not isinstance(schedule.kwargs, dict):
        raise ConfigurationError(f"{where}: kwargs must be a dict of keyword arguments or None, not {show(schedule.kwargs)}")
    kwargs = dict(schedule.kwargs)
    if schedule.datetime_kwarg:
        kwargs[schedule.datetime_kwarg] = None
    try:
        schedule.task.check_call(tuple(schedule.args), kwargs)
    except TypeError as exc:
        raise ConfigurationError(f"{where}: {exc}") from None


def register_schedule(schedule: Schedule) -> Schedule:
    """Validate ``schedule`` and add it to ``schedules_registry`` (refusing a clash of names).

    A schedule that is not a schedule of a registered task, or clashes with another, is refused at
    once (``ConfigurationError``). One whose values cannot work (an invalid cron expression or time
    zone, arguments its task does not accept) is not registered either, but kept in
    ``invalid_schedules``: the system check ``toosimpleq.E001`` reports it, so that ``manage.py check``,
    ``runserver``, ``migrate`` and ``worker`` say what to change instead of a traceback at import.
    """
    validate_declaration(schedule)
    existing = schedules_registry.get(schedule.name)
    if existing is not None:
        # The same module imported again (a new Task object under the same task name) replaces its
        # schedules, like tasks; anything else sharing the name is a mistake.
        if existing.task is schedule.task or existing.task_name != schedule.task_name:
            raise ConfigurationError(
                f"Schedule {schedule.name!r} (cron {schedule.cron!r}) clashes with schedule {existing.name!r} "
                f"(cron {existing.cron!r}) of task {existing.task_name!r}: give each schedule a distinct "
                f"name with @schedule_task(name=...)"
            )
        logger.info("Schedule %r registered again: the new definition replaces the earlier one", schedule.name)
    try:
        validate_values(schedule)
    except ConfigurationError as exc:
        schedules_registry.pop(schedule.name, None)
        invalid_schedules[schedule.name] = str(exc)
        logger.error("%s; it is not registered (system check toosimpleq.E001)", exc)
        return schedule
    invalid_schedules.pop(schedule.name, None)
    schedules_registry[schedule.name] = schedule
    return schedule


def run_schedule_now(schedule: str | Task) -> TaskExec:
    """Queue one execution of a schedule right now and return it.

    ``schedule`` is the schedule's name (by default its task's name, the dotted path such as
    ``"myapp.tasks.nightly_report"``), or the task itself when it has exactly one schedule.

    The cron timeline is left as it is (the next occurrences fire as planned); the execution is
    recorded as the schedule's ``last_task``, and its ``datetime_kwarg`` (if any) is None, as for any
    run outside of the schedule. Works for every schedule, including ``cron="manual"`` ones.
    """
    found = _find_schedule(schedule)
    engine = get_engine()
    now = timezone.now()
    return engine.record_schedule_run(found.name, found.new_exec(None, due=now), first_last_due=now)


def _find_schedule(wanted: str | Task) -> Schedule:
    known = ", ".join(sorted(schedules_registry)) or "none"
    if isinstance(wanted, Task):
        mine = [s for s in schedules_registry.values() if s.task_name == wanted.name]
        if len(mine) == 1:
            return mine[0]
        if not mine:
            raise LookupError(f"Task {wanted.name!r} has no schedule (schedules: {known})")
        names = ", ".join(sorted(s.name for s in mine))
        raise LookupError(f"Task {wanted.name!r} has several schedules ({names}): give the name of one")
    schedule = schedules_registry.get(wanted)
    if schedule is not None:
        return schedule
    if wanted in invalid_schedules:
        raise ConfigurationError(invalid_schedules[wanted])
    ending = [name for name in schedules_registry if name.endswith(f".{wanted}")]
    hint = f"; did you mean {' or '.join(repr(n) for n in sorted(ending))}?" if ending else "."
    raise LookupError(
        f"No schedule named {wanted!r} is registered{hint} A schedule is named after its task's dotted path "
        f"unless @schedule_task(name=...) says otherwise (schedules: {known})"
    )
