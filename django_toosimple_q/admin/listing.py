"""The executions list's machinery: fast date hierarchy, capped counts, page-only previews, filters.

Each piece exists because the generic admin behaviour reads the whole history on every page view;
``bench/admin_dashboard.py`` measures the difference on 1,000,000 rows.
"""

from __future__ import annotations

from typing import Any

import datetime

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db.models import F, Max, Min, OuterRef, QuerySet, Subquery, TextField
from django.db.models.functions import Substr
from django.db.models.sql import AND
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.translation import gettext_lazy as _

from ..models import TaskExec, WorkerStatus, Workflow
from ..registry import tasks_registry

#: Characters of the stored arguments shown in the list.
PREVIEW = 60
#: Columns never read for the list: they can be arbitrarily large.
HEAVY_FIELDS = ("args", "kwargs", "result", "error", "output")
#: How many recent executions (by id) the task-name and queue filters look at, besides the registry.
RECENT_ROWS = 10_000


class ListQuerySet(QuerySet):
    """The list's queryset: the date hierarchy's questions answered from the ``created`` index.

    The admin's date hierarchy asks for MIN and MAX of the date in one aggregate (which SQLite
    answers by reading every row) and for the distinct days, months or years of the listed rows
    (truncating every row's date: a full read, and a Python function per row on SQLite). Ordered
    single-row lookups give the same answers from the index.
    """

    def aggregate(self, *args, **kwargs):
        if not args and kwargs and all(_plain_min_or_max(e) for e in kwargs.values()):
            return {key: self._extreme(e) for key, e in kwargs.items()}
        return super().aggregate(*args, **kwargs)

    def _extreme(self, expression):
        field = expression.source_expressions[0].name
        key = (field, isinstance(expression, Min))
        cache = self.__dict__.setdefault("_extremes", {})
        if key not in cache:
            rows = self.order_by(field if key[1] else f"-{field}")
            if self.model._meta.get_field(field).null:
                rows = rows.filter(**{f"{field}__isnull": False})
            cache[key] = rows.values_list(field, flat=True).first()
        return cache[key]

    def datetimes(self, field_name, kind, order="ASC", tzinfo=None, is_dst=None):
        # A loose index scan: the first row of the next period, then the period after it, ... so
        # one ordered single-row lookup per period that has rows.
        tz = tzinfo or timezone.get_current_timezone()
        found: list[datetime.datetime] = []
        rows = self
        while True:
            first = rows._extreme(Min(field_name))
            if first is None:
                break
            if timezone.is_aware(first):
                first = timezone.localtime(first, tz)
            found.append(_truncate(first, kind))
            # The new lower bound first in the WHERE clause: SQLite bounds its index scan with the
            # first range condition it meets on the column (the list's own date filter comes later).
            after = self.model._default_manager.using(self.db).filter(
                **{f"{field_name}__gte": _next_period(found[-1], kind)}
            )
            rows = self._chain()
            rows.query = after.query.chain()
            try:
                rows.query.combine(self.query, AND)
            except (TypeError, ValueError, AssertionError):  # e.g. a DISTINCT query: plain filter
                rows = self.filter(**{f"{field_name}__gte": _next_period(found[-1], kind)})
        return found if order == "ASC" else found[::-1]


def _plain_min_or_max(expression) -> bool:
    sources = getattr(expression, "source_expressions", [])
    return (
        type(expression) in (Min, Max)
        and len(sources) == 1
        and isinstance(sources[0], F)
        and "__" not in sources[0].name
        and not getattr(expression, "filter", None)
    )


def _truncate(value: datetime.datetime, kind: str) -> datetime.datetime:
    naive = value.replace(tzinfo=None)
    if kind == "year":
        naive = naive.replace(month=1, day=1)
    elif kind == "month":
        naive = naive.replace(day=1)
    naive = naive.replace(hour=0, minute=0, second=0, microsecond=0)
    return timezone.make_aware(naive, value.tzinfo) if value.tzinfo else naive


def _next_period(value: datetime.datetime, kind: str) -> datetime.datetime:
    naive = value.replace(tzinfo=None)
    if kind == "year":
        naive = naive.replace(year=naive.year + 1)
    elif kind == "month":
        naive = naive.replace(year=naive.year + naive.month // 12, month=naive.month % 12 + 1)
    else:
        naive = naive + datetime.timedelta(days=1)
    return timezone.make_aware(naive, value.tzinfo) if value.tzinfo else naive


class CappedPaginator(Paginator):
    """Counts at most ``cap`` rows: an exact count of a long history reads all of it on every page view.

    Beyond the cap the list says "more than ..." and offers the first ``cap`` rows; filters, search
    and the date hierarchy narrow it down.
    """

    cap = 10_000

    @cached_property
    def count(self) -> int:
        counted = self.object_list.order_by()[: self.cap + 1].count()
        self.capped = counted > self.cap
        return min(counted, self.cap)

    capped = False


class ExecutionChangeList(ChangeList):
    """Reads no stored value for the list; previews and retry links come from one query per page."""

    def get_queryset(self, request, *args, **kwargs):  # Django >= 5.0 adds ``exclude_parameters``
        qs = super().get_queryset(request, *args, **kwargs)
        qs = qs.defer(*HEAVY_FIELDS, "worker__tasks", "worker__exit_log")
        return ListQuerySet(model=qs.model, query=qs.query, using=qs._db, hints=qs._hints)

    def get_results(self, request):
        super().get_results(request)
        self.result_list: list[Any] = list(self.result_list)
        # Annotating the list query itself would compute these for every row matched before the
        # LIMIT is applied (a sort does that); here they are computed for this page only.
        extras = (
            TaskExec.objects.using(self.queryset.db)
            .filter(pk__in=[e.pk for e in self.result_list])
            .annotate(
                # One character more than shown: tells whether the value was cut.
                args_preview=Substr("args", 1, PREVIEW + 1, output_field=TextField()),
                kwargs_preview=Substr("kwargs", 1, PREVIEW + 1, output_field=TextField()),
                replaces_id=Subquery(
                    TaskExec.objects.filter(replaced_by=OuterRef("pk")).order_by("id").values("id")[:1]
                ),
            )
            .values_list("pk", "args_preview", "kwargs_preview", "replaces_id")
        )
        by_pk = {pk: rest for pk, *rest in extras}
        for execution in self.result_list:
            execution.args_preview, execution.kwargs_preview, execution.replaces_id = by_pk.get(
                execution.pk, (None, None, None)
            )
        self.count_capped = getattr(self.paginator, "capped", False)


# -- filters ----------------------------------------------------------------------------------------


class _ValuesFilter(admin.SimpleListFilter):
    """Choices from the registry and the most recent executions: never a DISTINCT over the whole table."""

    field_name = ""

    def known_values(self) -> set[str]:
        raise NotImplementedError

    def lookups(self, request, model_admin):
        values = set(self.known_values())
        newest = TaskExec.objects.aggregate(newest=Max("id"))["newest"]
        if newest is not None:
            recent = TaskExec.objects.filter(id__gt=newest - RECENT_ROWS).order_by()
            values.update(recent.values_list(self.field_name, flat=True).distinct())
        if self.value():
            values.add(self.value())
        return [(v, v) for v in sorted(values)]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(**{self.field_name: self.value()})
        return queryset


class TaskNameFilter(_ValuesFilter):
    title = _("task name")
    parameter_name = "task_name"
    field_name = "task_name"

    def known_values(self):
        return set(tasks_registry)


class QueueFilter(_ValuesFilter):
    title = _("queue")
    parameter_name = "queue"
    field_name = "queue"

    def known_values(self):
        return {task.queue_name for task in tasks_registry.values()}


class WorkerFilter(admin.SimpleListFilter):
    """The most recent workers (one row per worker process run accumulates over time)."""

    title = _("worker")
    parameter_name = "worker"
    limit = 20

    def lookups(self, request, model_admin):
        workers = list(
            WorkerStatus.objects.order_by("-started", "-id").only("id", "label", "host", "pid")[: self.limit]
        )
        choices = [(str(w.pk), str(w)) for w in workers]
        if self.value() and self.value() not in {c[0] for c in choices}:
            choices.append((self.value(), _("worker #%(id)s") % {"id": self.value()}))
        return choices

    def queryset(self, request, queryset):
        if self.value():
            try:
                return queryset.filter(worker_id=int(self.value()))
            except ValueError:
                return queryset.none()
        return queryset


class WorkflowFilter(admin.SimpleListFilter):
    """The steps of one workflow (the most recent workflows are offered; the workflow page links here)."""

    title = _("workflow")
    parameter_name = "workflow"
    limit = 20

    def lookups(self, request, model_admin):
        workflows = list(Workflow.objects.order_by("-id").only("id", "name")[: self.limit])
        choices = [(str(w.pk), str(w)[:60]) for w in workflows]
        if self.value() and self.value() not in {c[0] for c in choices}:
            choices.append((self.value(), _("workflow #%(id)s") % {"id": self.value()}))
        return choices

    def queryset(self, request, queryset):
        if self.value():
            try:
                return queryset.filter(workflow_id=int(self.value()))
            except ValueError:
                return queryset.none()
        return queryset
