"""Schedules in the admin: every schedule of the registry and every ``ScheduleExec`` row, and "run now".

Design: a ``ScheduleExec`` row only exists once a worker has seen its schedule, and inserting one
decides where the schedule's cron timeline starts (``last_due``: "now", or None for
``run_on_creation``). Viewing the page must not decide that, so the list is not Django's generic
changelist over the rows: it is a view that merges the registry (the code, the source of truth) with
the rows, computing in memory what a worker would do for a schedule without a row. Nothing is written
unless someone runs a schedule, which goes through ``run_schedule_now`` like any other caller.

The list is posted to like an admin changelist (checkboxes named ``_selected_action`` holding schedule
*names*, an ``action`` select, a button per row), and the detail page of a row is the regular,
read-only change view.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import csrf_protect_m
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from ..conf import queue_database
from ..cron import describe_cron
from ..errors import InvalidCron
from ..models import ScheduleExec, TaskExec
from ..registry import schedules_registry
from ..schedules import Schedule, run_schedule_now, to_aware
from . import display

#: Characters of a schedule's call shown in the list.
CALL_PREVIEW = 80
#: The value of the ``action`` field that runs the selected schedules now (1.x's name for it).
RUN_NOW = "action_force_run"

# -- one line of the list ----------------------------------------------------------------------------------


@dataclass
class Line:
    """A schedule as the list shows it: its definition (None: removed from the code) and its row (None:
    no worker has seen it yet)."""

    name: str
    schedule: Schedule | None
    row: ScheduleExec | None

    @property
    def in_code(self) -> bool:
        return self.schedule is not None

    def next_due(self, now: datetime.datetime) -> tuple[datetime.datetime | None, str]:
        """The next time a worker queues this schedule, and a note when there is no such time or it is
        only an estimate."""
        schedule = self.schedule
        if schedule is None:
            return None, str(_("not in the code any more"))
        try:
            if self.row is None:
                due = schedule.next_due(None, now, seen=False)
                if due is not None and schedule.run_on_creation:
                    return None, str(_("as soon as a worker sees it"))
            else:
                due = schedule.next_due(to_aware(self.row.last_due), now)
                if due is not None and self.row.last_due is None:
                    return None, str(_("at the next pass of a worker"))
        except InvalidCron:
            return None, str(_("invalid cron expression"))
        if due is None:
            return None, str(_("only on demand"))
        return due, ""


def lines() -> list[Line]:
    """Every registered schedule (by name), then the rows whose schedule is not in the code."""
    rows = {
        row.name: row
        for row in ScheduleExec.objects.select_related("last_task").only(
            "id",
            "name",
            "last_due",
            "state",
            "last_task",
            "last_task__id",
            "last_task__task_name",
            "last_task__state",
            "last_task__due",
        )
    }
    registered = [Line(name, schedules_registry[name], rows.pop(name, None)) for name in sorted(schedules_registry)]
    removed = [Line(name, None, rows[name]) for name in sorted(rows)]
    return registered + removed


def call_text(schedule: Schedule) -> str:
    """``task(args, kwargs)`` cut to ``CALL_PREVIEW`` characters; escaped by whoever shows it."""
    parts = [repr(a) for a in schedule.args] + [f"{k}={v!r}" for k, v in schedule.kwargs.items()]
    if schedule.datetime_kwarg:
        parts.append(f"{schedule.datetime_kwarg}=<{_('occurrence')}>")
    text = f"{schedule.task_name}({', '.join(parts)})"
    return text if len(text) <= CALL_PREVIEW else text[: CALL_PREVIEW - 1] + "…"


# -- the admin -------------------------------------------------------------------------------------------


@admin.register(ScheduleExec)
class ScheduleExecAdmin(admin.ModelAdmin):
    """``force_run_scheduleexec`` allows "run now"; ``view_scheduleexec`` is enough to see everything.

    Rows cannot be added or edited here; a row whose schedule is gone from the code can be deleted
    (with ``delete_scheduleexec``) to forget its history.
    """

    change_list_template = "admin/toosimpleq/scheduleexec/schedules.html"
    # No generic admin actions (not even "delete selected"): the list is not the generic changelist,
    # and its only action, "run now", is handled by changelist_view.
    actions = None
    fields = (
        "name",
        "status_display",
        "cron_display",
        "description_display",
        "timezone_display",
        "queue_display",
        "call_display",
        "options_display",
        "next_due_display",
        "last_due_display",
        "last_task_display",
    )
    readonly_fields = fields

    # -- permissions -----------------------------------------------------------------------------

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        # Deleting the row of a schedule still in the code would restart its timeline: refused.
        if obj is not None and obj.name in schedules_registry:
            return False
        return super().has_delete_permission(request, obj)

    def has_force_run_permission(self, request) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.force_run_scheduleexec")

    # -- the list --------------------------------------------------------------------------------

    @csrf_protect_m
    def changelist_view(self, request, extra_context=None):
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            return self.run_now_view(request)
        if request.method not in ("GET", "HEAD"):
            return HttpResponseNotAllowed(["GET", "HEAD", "POST"])
        now = to_aware(timezone.now())  # naive with USE_TZ=False
        can_run = self.has_force_run_permission(request)
        listed = [self.line_context(line, now, can_run) for line in lines()]
        context = {
            **self.admin_site.each_context(request),
            "title": _("Schedules"),
            "subtitle": None,
            "opts": self.opts,
            "app_label": self.opts.app_label,
            "lines": listed,
            "can_run": can_run,
            "run_now_action": RUN_NOW,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "removed_count": sum(1 for line in listed if not line["in_code"]),
            "runnable_count": sum(1 for line in listed if line["can_run"]),
            "media": self.media,
            "preserved_filters": "",
            **(extra_context or {}),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.change_list_template, context)

    def line_context(self, line: Line, now: datetime.datetime, can_run: bool) -> dict[str, Any]:
        schedule, row = line.schedule, line.row
        next_due, next_note = line.next_due(now)
        return {
            "name": line.name,
            "in_code": line.in_code,
            "can_run": can_run and line.in_code,
            "name_display": display.change_link(ScheduleExec, row.pk, line.name) if row is not None else line.name,
            "status": self.status_badge(line),
            "cron": schedule.cron if schedule else None,
            "description": describe_cron(schedule.cron) if schedule else None,
            "zone": str(schedule.zone) if schedule and not schedule.manual else None,
            "queue": schedule.queue_name if schedule else None,
            "call": call_text(schedule) if schedule else None,
            "next_due": display.moment(next_due) if next_due is not None else None,
            "overdue": next_due is not None and next_due <= now,
            "next_note": next_note,
            "last_due": display.moment(to_aware(row.last_due)) if row is not None and row.last_due else None,
            "last_task": self.last_task_link(row),
        }

    def status_badge(self, line: Line):
        row = line.row
        if not line.in_code:
            return format_html(
                '<span class="toosimpleq-schedule-removed" style="color:#c62828;font-weight:bold;white-space:nowrap"'
                ' title="{}">⊘&nbsp;{}</span>',
                _("This schedule is in the database but not in the code any more."),
                _("Removed from code"),
            )
        if row is None:
            return format_html(
                '<span class="toosimpleq-schedule-new" style="color:#6c757d;white-space:nowrap" title="{}">◌&nbsp;{}</span>',
                _("No worker has handled this schedule yet."),
                _("Never ran"),
            )
        if row.state == ScheduleExec.States.INVALID:
            return format_html(
                '<span class="toosimpleq-schedule-invalid" style="color:#b35c00;font-weight:bold;white-space:nowrap"'
                ' title="{}">⚠&nbsp;{}</span>',
                _("No online worker has this schedule in its code."),
                _("No worker has it"),
            )
        return format_html(
            '<span class="toosimpleq-schedule-active" style="color:#1a7f37;font-weight:bold;white-space:nowrap">'
            "●&nbsp;{}</span>",
            _("Active"),
        )

    def last_task_link(self, row: ScheduleExec | None):
        if row is None or row.last_task_id is None:
            return None
        task = row.last_task
        if task is None:  # deleted meanwhile
            return None
        return format_html(
            '<span style="white-space:nowrap">{} {}</span>',
            display.change_link(TaskExec, task.pk, f"#{task.pk}"),
            display.state_badge(task.state, task.get_state_display()),
        )

    # -- "run now" -------------------------------------------------------------------------------

    def run_now_view(self, request):
        """POST from the list (checkboxes and the action select, or a row's button) or a detail page
        (whose form says where to come back to in ``next``)."""
        if not self.has_force_run_permission(request):
            raise PermissionDenied
        back_to = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(back_to, {request.get_host()}, request.is_secure()):
            back_to = request.get_full_path()
        back = HttpResponseRedirect(back_to)
        if "run" in request.POST:  # a row's own button
            names = [request.POST["run"]]
        elif request.POST.get("action") == RUN_NOW:
            names = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
            if not names:
                self.message_user(
                    request,
                    _("Items must be selected in order to perform actions on them. No items have been changed."),
                    messages.WARNING,
                )
                return back
        else:
            self.message_user(request, _("No action selected."), messages.WARNING)
            return back
        self.run_now(request, list(dict.fromkeys(names)))
        return back

    def run_now(self, request, names: list[str]) -> None:
        db = queue_database()  # where run_schedule_now writes
        queued: list[TaskExec] = []
        missing: list[str] = []
        for name in names:
            if name not in schedules_registry:
                missing.append(name)
                continue
            execution = run_schedule_now(name)
            row = ScheduleExec.objects.using(db).get(name=name)
            self.log_change(
                request,
                row,
                _("Run now: queued %(task)s #%(id)s.") % {"task": execution.task_name, "id": execution.pk},
            )
            queued.append(execution)
        if queued:
            self.message_user(
                request,
                format_html(
                    "{} {}",
                    ngettext(
                        "Queued %(count)d execution now:",
                        "Queued %(count)d executions now:",
                        len(queued),
                    )
                    % {"count": len(queued)},
                    format_html_join(
                        ", ",
                        "{}",
                        ((display.change_link(TaskExec, e.pk, f"{e.task_name} #{e.pk}"),) for e in queued),
                    ),
                ),
                messages.SUCCESS,
            )
        if missing:
            self.message_user(
                request,
                _("Not in the code, so not run: %(names)s.") % {"names": ", ".join(missing)},
                messages.WARNING,
            )

    # -- the detail page ---------------------------------------------------------------------------

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        row = self.get_object(request, object_id)
        extra_context["toosimpleq_run_now"] = (
            row is not None and row.name in schedules_registry and self.has_force_run_permission(request)
        ) and {
            "url": reverse(f"{self.admin_site.name}:toosimpleq_scheduleexec_changelist"),
            "action": RUN_NOW,
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def _line(self, obj: ScheduleExec) -> Line:
        return Line(obj.name, schedules_registry.get(obj.name), obj)

    @admin.display(description=_("status"))
    def status_display(self, obj):
        return self.status_badge(self._line(obj))

    @admin.display(description=_("cron expression"))
    def cron_display(self, obj):
        schedule = schedules_registry.get(obj.name)
        return format_html("<code>{}</code>", schedule.cron) if schedule else display.EMPTY

    @admin.display(description=_("description"))
    def description_display(self, obj):
        schedule = schedules_registry.get(obj.name)
        return describe_cron(schedule.cron) if schedule else display.EMPTY

    @admin.display(description=_("time zone"))
    def timezone_display(self, obj):
        schedule = schedules_registry.get(obj.name)
        return str(schedule.zone) if schedule else display.EMPTY

    @admin.display(description=_("queue"))
    def queue_display(self, obj):
        schedule = schedules_registry.get(obj.name)
        return schedule.queue_name if schedule else display.EMPTY

    @admin.display(description=_("call"))
    def call_display(self, obj):
        schedule = schedules_registry.get(obj.name)
        if schedule is None:
            return display.EMPTY
        return display.pre(
            "\n".join(
                [
                    f"{_('task')}: {schedule.task_name}",
                    f"{_('positional arguments')}: {schedule.args!r}",
                    f"{_('keyword arguments')}: {schedule.kwargs!r}",
                ]
            )
        )

    @admin.display(description=_("options"))
    def options_display(self, obj):
        schedule = schedules_registry.get(obj.name)
        if schedule is None:
            return display.EMPTY
        return display.pre(
            "\n".join(
                [
                    f"run_on_creation={schedule.run_on_creation!r}",
                    f"catch_up={schedule.catch_up!r}",
                    f"datetime_kwarg={schedule.datetime_kwarg!r}",
                ]
            )
        )

    @admin.display(description=_("next due"))
    def next_due_display(self, obj):
        due, note = self._line(obj).next_due(to_aware(timezone.now()))
        if due is None:
            return note or display.EMPTY
        return display.moment(due)

    @admin.display(description=_("last due"))
    def last_due_display(self, obj):
        return display.moment(to_aware(obj.last_due))

    @admin.display(description=_("last execution"))
    def last_task_display(self, obj):
        return self.last_task_link(obj) or display.EMPTY

