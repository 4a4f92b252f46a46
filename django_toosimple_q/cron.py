"""Cron expressions: parsing, next occurrences, time zones and daylight saving time.

A schedule fires at *wall-clock* times of its time zone, so a ``30 8 * * *`` schedule stays at 08:30
all year round. Daylight saving changes make some wall-clock times happen twice (clocks go back) and
others never (clocks go forward). The rule, so that each intended occurrence fires once and never twice:

* Schedules pinned to some hours (the hour field is not ``*``), e.g. ``30 2 * * *``:
  - a repeated time fires once, at its first occurrence (summer time);
  - a skipped time fires once, at the instant the clocks jump forward (several skipped times of the
    same jump merge into that one firing).
* Schedules that fire every hour (the hour field is ``*``), e.g. ``*/15 * * * *`` or
  ``* * * * * */15``, follow the clock on the wall as it really runs: during the repeated hour they
  fire in both passes (each is a distinct instant, 15 real minutes apart), and skipped times do not
  fire (there is no gap in real time to make up for).

Occurrences are returned as aware datetimes in UTC: Python compares two datetimes of the *same*
zone by their wall-clock reading, ignoring ``fold``, which would be wrong in a repeated hour. Use
``Cron.local()`` to show one in the schedule's zone.
"""

from __future__ import annotations

import datetime
import functools
import threading
import zoneinfo
from pathlib import Path
from typing import Iterator

import cron_descriptor
from cron_descriptor import ExpressionDescriptor, Options
from croniter import CroniterBadDateError, croniter
from django.utils import translation
from django.utils.translation import gettext_lazy as _

from .errors import InvalidCron

#: The expression of a schedule that never fires by itself (run it with ``run_schedule_now``).
MANUAL = "manual"

UTC = datetime.timezone.utc
# Longer than any daylight saving shift in the time zone database (2 hours at most).
_SHIFT_BOUND = datetime.timedelta(hours=3)




def get_zone(name: str | None) -> datetime.tzinfo:
    """The IANA time zone ``name``, or the project's ``TIME_ZONE`` when ``name`` is None."""
    if name is None:
        from django.conf import settings

        name = settings.TIME_ZONE or "UTC"
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InvalidCron(f"{name!r} is not a known IANA time zone name (e.g. 'Europe/Paris')") from None


class Cron:
    """A parsed cron expression evaluated in one time zone."""

    def __init__(self, expression: str, zone: datetime.tzinfo):
        self.expression = expression
        self.zone = zone
        self.manual = expression == MANUAL
        if self.manual:
            return
        if not isinstance(expression, str):
            raise InvalidCron(f"the cron expression must be a string, not {expression!r}")
        fields = expression.split()
        is_alias = len(fields) == 1 and fields[0].startswith("@")
        if not is_alias and len(fields) not in (5, 6):
            raise InvalidCron(
                f"{expression!r} has {len(fields)} fields; use 5 (minute hour day month weekday), "
                f"6 (the same plus seconds last), an alias such as '@hourly', or 'manual'"
            )
        self._lock = threading.Lock()  # the croniter object is stateful; the admin may share this one
        try:
            self._iter = croniter(expression, datetime.datetime(2000, 1, 1))
        except Exception as exc:  # croniter raises several unrelated types for bad input
            raise InvalidCron(f"{expression!r} is not a valid cron expression: {exc}") from None
        hours = self._iter.expanded[1]
        self.every_hour = hours == ["*"] or len(hours) == 24
        if self._next_wall(datetime.datetime(2000, 1, 1)) is None:
            raise InvalidCron(f"{expression!r} never occurs")

    # -- public ------------------------------------------------------------------------------------

    def local(self, instant: datetime.datetime) -> datetime.datetime:
        """``instant`` in the schedule's time zone (for display and for the task's datetime argument)."""
        return instant.astimezone(self.zone)

    def next_after(self, moment: datetime.datetime) -> datetime.datetime | None:
        """The first occurrence strictly after the aware ``moment`` (in UTC); None if there is none."""
        if self.manual:
            return None
        moment = moment.astimezone(UTC)
        wall = moment.astimezone(self.zone).replace(tzinfo=None)
        best = self._first_from_wall(wall, moment)
        if self.every_hour:
            # Clocks going back within the next hours: the second pass repeats wall-clock times that
            # lie *before* ``wall``, so search it separately.
            fall_back = self._transition_within(moment, moment + _SHIFT_BOUND, going_back=True)
            if fall_back is not None:
                repeated = self._first_repeated(fall_back, moment)
                if repeated is not None and (best is None or repeated < best):
                    best = repeated
        return best

    def occurrences(self, after: datetime.datetime, until: datetime.datetime) -> Iterator[datetime.datetime]:
        """Occurrences in ``(after, until]``, oldest first."""
        current: datetime.datetime | None = after.astimezone(UTC)
        until = until.astimezone(UTC)
        while current is not None and (current := self.next_after(current)) is not None and current <= until:
            yield current

    def latest(
        self, after: datetime.datetime, until: datetime.datetime, keep: int
    ) -> tuple[list[datetime.datetime], bool]:
        """The last ``keep`` occurrences in ``(after, until]`` (oldest first), and whether older ones
        were left out. Cheap even after months of downtime: it only walks back as far as needed."""
        after, until = after.astimezone(UTC), until.astimezone(UTC)
        step = datetime.timedelta(minutes=1)
        while True:
            start = max(after, until - step)
            found = list(self.occurrences(start, until))
            if len(found) >= keep or start == after:
                break
            step *= 4
        left_out = len(found) > keep
        if not left_out and start > after:
            first = self.next_after(after)
            left_out = first is not None and first <= start
        return found[-keep:], left_out

    # -- wall clock <-> instants -------------------------------------------------------------------

    def _next_wall(self, wall: datetime.datetime) -> datetime.datetime | None:
        with self._lock:
            self._iter.set_current(wall, force=True)
            try:
                return self._iter.get_next(datetime.datetime)
            except CroniterBadDateError:
                return None

    def _first_from_wall(self, wall: datetime.datetime, moment: datetime.datetime) -> datetime.datetime | None:
        """The first instant after ``moment`` among wall-clock matches after ``wall``."""
        candidate: datetime.datetime | None = wall
        while candidate is not None and (candidate := self._next_wall(candidate)) is not None:
            for instant in self._instants(candidate):
                if instant > moment:
                    return instant
        return None

    def _instants(self, wall: datetime.datetime) -> list[datetime.datetime]:
        """The instants at which the wall-clock time ``wall`` fires (see the module docstring)."""
        first = wall.replace(tzinfo=self.zone, fold=0)
        if _round_trip(first) != wall:  # skipped by clocks going forward
            if self.every_hour:
                return []
            around = _normal(first)
            shift = self._transition_within(around - _SHIFT_BOUND, around + _SHIFT_BOUND, going_back=False)
            return [shift] if shift is not None else []
        second = wall.replace(tzinfo=self.zone, fold=1)
        if self.every_hour and second.utcoffset() != first.utcoffset():  # repeated by clocks going back
            return [_normal(first), _normal(second)]
        return [_normal(first)]

    def _first_repeated(self, fall_back: datetime.datetime, moment: datetime.datetime) -> datetime.datetime | None:
        """The first second-pass occurrence after ``moment`` in the hour repeated from ``fall_back``."""
        old_offset = _offset(fall_back - datetime.timedelta(seconds=1), self.zone)
        new_offset = _offset(fall_back, self.zone)
        start_wall = (fall_back + new_offset).replace(tzinfo=None)
        end_wall = start_wall + (old_offset - new_offset)
        candidate: datetime.datetime | None = start_wall - datetime.timedelta(microseconds=1)
        while candidate is not None and (candidate := self._next_wall(candidate)) is not None and candidate < end_wall:
            instant = _normal(candidate.replace(tzinfo=self.zone, fold=1))
            if instant > moment:
                return instant
        return None

    def _transition_within(
        self, start: datetime.datetime, end: datetime.datetime, *, going_back: bool
    ) -> datetime.datetime | None:
        """The instant in ``(start, end]`` where the UTC offset goes down (or up), to the second."""
        before, after = _offset(start, self.zone), _offset(end, self.zone)
        # Two changes within a few hours do not happen in the time zone database.
        if before == after or (after < before) != going_back:
            return None
        low, high = int(start.timestamp()), int(end.timestamp()) + 1
        while high - low > 1:  # invariant: offset(low) == before, offset(high) != before
            middle = (low + high) // 2
            if _offset_at(middle, self.zone) == before:
                low = middle
            else:
                high = middle
        return datetime.datetime.fromtimestamp(high, tz=UTC)


def _round_trip(aware: datetime.datetime) -> datetime.datetime:
    return aware.astimezone(UTC).astimezone(aware.tzinfo).replace(tzinfo=None)


def _normal(aware: datetime.datetime) -> datetime.datetime:
    """The same instant in UTC, where comparisons and arithmetic are exact."""
    return aware.astimezone(UTC)


def _offset(moment: datetime.datetime, zone: datetime.tzinfo) -> datetime.timedelta:
    """The UTC offset of ``zone`` at the instant ``moment``."""
    offset = moment.astimezone(zone).utcoffset()
    assert offset is not None  # a tzinfo object always gives aware datetimes an offset
    return offset


def _offset_at(timestamp: int, zone: datetime.tzinfo) -> datetime.timedelta:
    return _offset(datetime.datetime.fromtimestamp(timestamp, tz=UTC), zone)


# -- in words ---------------------------------------------------------------------------------------

#: croniter's aliases, spelled out for cron-descriptor, which only reads fields.
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def _descriptor_locales() -> dict[str, str]:
    """cron-descriptor's locale codes (``fr_FR``) by Django language code (``fr``, ``fr-ca``...)."""
    found: dict[str, str] = {}
    for mo in sorted((Path(cron_descriptor.__file__).parent / "locale").glob("*.mo")):
        code = mo.stem  # e.g. pt_PT
        found.setdefault(code.lower().replace("_", "-"), code)
        found.setdefault(code.split("_")[0].lower(), code)
    return found


@functools.lru_cache(maxsize=1)
def descriptor_locales() -> dict[str, str]:
    try:
        return _descriptor_locales()
    except Exception:  # noqa: BLE001 - a packaging oddity only costs the translation
        return {}


def descriptor_locale(language: str | None) -> str:
    language = (language or "en").lower()
    locales = descriptor_locales()
    return locales.get(language) or locales.get(language.split("-")[0]) or "en_US"


@functools.lru_cache(maxsize=512)
def _describe(expression: str, locale: str) -> str | None:
    try:
        Cron(expression, datetime.timezone.utc)  # cron-descriptor would describe "99 * * * *" too
    except InvalidCron:
        return None
    fields = ALIASES.get(expression.strip().lower(), expression).split()
    if len(fields) == 6:
        # Our sixth field is the seconds, *last* (croniter's order); cron-descriptor reads six
        # fields as seconds *first*.
        fields = [fields[5], *fields[:5]]
    if len(fields) != 5 and len(fields) != 6:
        return None
    options = Options()
    options.locale_code = locale
    options.use_24hour_time_format = True
    options.verbose = False
    try:
        return ExpressionDescriptor(" ".join(fields), options).get_description()
    except Exception:  # noqa: BLE001 - cron-descriptor raises several types; the expression stays shown
        return None


def describe_cron(expression: str) -> str:
    """A sentence for ``expression`` in the active language (cron-descriptor), or a plain fallback when
    none can be made. Seconds are our sixth field, last."""
    if expression == MANUAL:
        return str(_("Never by itself: only when run on demand"))
    described = _describe(expression, descriptor_locale(translation.get_language()))
    if described is None:
        return str(_("No description available for this expression"))
    return described
