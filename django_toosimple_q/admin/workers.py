"""Worker statuses in the admin: derived state, what each worker runs now, how it ended."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from ..models import TaskExec, WorkerStatus
from . import display


class OnlineFilter(admin.SimpleListFilter):
    title = _("online")
    parameter_name = "online"

    def lookups(self, request, model_admin):
        return [("yes", _("Online")), ("no", _("Offline"))]

    def queryset(self, request, queryset):
        if self.value() not in ("yes", "no"):
            return queryset
        online = WorkerStatus.online(timezone.now()).values("pk")
        if self.value() == "yes":
            return queryset.filter(pk__in=online)
        return queryset.exclude(pk__in=online)


def running_executions(worker_ids: list[int]) -> dict[int, list[TaskExec]]:
    """PROCESSING executions of these workers, by worker id.

    Selected by state alone (a handful of rows, found by the ``state`` index) and matched to the
    workers here: a ``worker_id IN (...)`` condition can lead the planner to read every execution
    those workers ever ran.
    """
    wanted = set(worker_ids)
    found: dict[int, list[TaskExec]] = {}
    # No ORDER BY: SQLite would then walk the primary key instead of the state index.
    rows = TaskExec.objects.filter(state=TaskExec.States.PROCESSING).only("id", "task_name", "worker_id").order_by()
    for execution in sorted(rows, key=lambda e: e.pk):
        if execution.worker_id in wanted:
            found.setdefault(execution.worker_id, []).append(execution)
    return found


class WorkerChangeList(ChangeList):
    def get_results(self, request):
        super().get_results(request)
        self.result_list: list[Any] = list(self.result_list)
        running = running_executions([w.pk for w in self.result_list])
        for worker in self.result_list:
            worker.running = running.get(worker.pk, [])


@admin.register(WorkerStatus)
class WorkerStatusAdmin(admin.ModelAdmin):
    # Compact, to fit a 1366 px screen with both sidebars: host and pid under the label, the exit
    # code with the state, and one "last heartbeat" or "stopped" time.
    list_display = (
        "label_display",
        "state_display",
        "queues_display",
        "pickup_display",
        "current_executions",
        "started_display",
        "last_seen_display",
    )
    list_display_links = ("label_display",)
    list_filter = (OnlineFilter, "host")
    search_fields = ("label", "host", "=pid")
    ordering = ("-started", "-id")
    fields = (
        "label",
        "state_display",
        "host",
        "pid",
        "queues_display",
        "excluded_queues_display",
        "tasks_display",
        "pickup_display",
        "timeout",
        "current_executions",
        "started",
        "last_seen",
        "stopped",
        "exit_code",
        "exit_signal",
        "exit_log_display",
    )
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).defer("exit_log", "tasks")

    def get_changelist(self, request, **kwargs):
        return WorkerChangeList

    @admin.display(description=_("worker"), ordering="label")
    def label_display(self, obj):
        return format_html(
            '<span style="white-space:nowrap">{}</span><br><span class="toosimpleq-muted">{}</span>',
            obj.label,
            f"{obj.host}:{obj.pid}" if obj.pid is not None else obj.host,
        )

    @admin.display(description=_("started"), ordering="started")
    def started_display(self, obj):
        return display.moment(obj.started)

    @admin.display(description=_("last seen"), ordering="last_seen")
    def last_seen_display(self, obj):
        if obj.stopped is not None:
            return format_html('<span class="toosimpleq-muted">{}</span> {}', _("stopped"), display.moment(obj.stopped))
        return display.moment(obj.last_seen)

    @admin.display(description=_("state"))
    def state_display(self, obj):
        badge = display.state_badge(obj.state, WorkerStatus.States(obj.state).label)
        if obj.exit_code is None:
            return badge
        return format_html(
            '{}<br><span class="toosimpleq-muted">{}</span>', badge, _("exit code %(code)s") % {"code": obj.exit_code}
        )

    @admin.display(description=_("queues"))
    def queues_display(self, obj):
        if obj.queues:
            return ", ".join(obj.queues)
        if obj.excluded_queues:
            return _("all but %(queues)s") % {"queues": ", ".join(obj.excluded_queues)}
        return _("all")

    @admin.display(description=_("pick-up"), ordering="receives_notifications")
    def pickup_display(self, obj):
        """Notified of new work at once, or polling every tick (no notification proven to arrive)."""
        if obj.stopped is not None:
            return display.EMPTY
        if obj.receives_notifications:
            return format_html('<span title="{}">{}</span>', _("new work starts at once"), _("notifications"))
        return format_html('<span title="{}">{}</span>', _("looks for new work every tick"), _("polling"))

    @admin.display(description=_("excluded queues"))
    def excluded_queues_display(self, obj):
        return ", ".join(obj.excluded_queues or []) or display.EMPTY

    @admin.display(description=_("registered tasks"))
    def tasks_display(self, obj):
        return display.pre("\n".join(obj.tasks or []))

    @admin.display(description=_("exit log"))
    def exit_log_display(self, obj):
        return display.pre(obj.exit_log)

    @admin.display(description=_("running now"))
    def current_executions(self, obj):
        running = getattr(obj, "running", None)
        if running is None:  # the detail page: not fetched with the list
            running = running_executions([obj.pk]).get(obj.pk, [])
        if not running:
            return display.EMPTY
        return format_html_join(
            ", ", "{}", ((display.change_link(TaskExec, e.pk, f"{e.task_name} #{e.pk}"),) for e in running)
        )
