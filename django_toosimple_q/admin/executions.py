"""Task executions in the admin: a fast list, a read-only detail page, "requeue" and "cancel"."""

from __future__ import annotations

from django.contrib import admin, messages
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from ..engine import get_engine
from ..models import StepLink, TaskExec, WorkerStatus, Workflow
from ..registry import tasks_registry
from ..serialization import Undecodable
from . import display
from .dashboard import dashboard_view, pause_view
from .listing import PREVIEW, CappedPaginator, ExecutionChangeList, QueueFilter, TaskNameFilter, WorkerFilter, WorkflowFilter

States = TaskExec.States


# -- the admin --------------------------------------------------------------------------------------


@admin.register(TaskExec)
class TaskExecAdmin(admin.ModelAdmin):
    # Few, compact columns, so that the list fits a 1366 px screen with the admin's navigation and
    # filter sidebars open: secondary facts share a cell (queue and priority under the task name,
    # the duration under the time, both retry links in one), in full on the detail page.
    list_display = (
        "id",
        "task_display",
        "call_preview",
        "state_display",
        "when_display",
        "worker_link",
        "chain_display",
    )
    list_display_links = ("id", "task_display")
    list_filter = ("state", TaskNameFilter, QueueFilter, WorkerFilter, WorkflowFilter)
    search_fields = ("task_name",)
    search_help_text = _("A task name (or part of it), or an execution id such as 42 or #42.")
    date_hierarchy = "created"
    # Newest first along the ``created`` index, which the date hierarchy filters on too: a date
    # range and this order are then read from one index (SQLite would otherwise sort the whole
    # range). Other orders would sort the whole history on each page view, hence no sortable columns
    # besides the id.
    ordering = ("-created", "-id")
    sortable_by = ("id",)
    list_select_related = ("worker",)
    show_full_result_count = False
    list_per_page = 50
    # The names of django-toosimple-q 1.x's actions, so that posts and code written for it still work.
    actions = ["action_requeue", "action_cancel"]
    fieldsets = (
        (None, {"fields": ("id", "task_name", "state_display", "queue", "priority", "worker_link")}),
        (_("Times"), {"fields": ("created", "due", "started", "finished", "duration_display")}),
        (_("Call"), {"fields": ("args_display", "kwargs_display")}),
        (_("Outcome"), {"fields": ("result_display", "error_display", "output_display")}),
        (_("Retries"), {"fields": ("attempt", "retries", "retry_delay_display", "replaces_links", "replaced_by_link")}),
        (_("Workflow"), {"fields": ("workflow_link", "upstream_links", "downstream_links")}),
    )
    readonly_fields = (
        "id",
        "task_name",
        "state_display",
        "queue",
        "priority",
        "worker_link",
        "created",
        "due",
        "started",
        "finished",
        "duration_display",
        "args_display",
        "kwargs_display",
        "result_display",
        "error_display",
        "output_display",
        "attempt",
        "retries",
        "retry_delay_display",
        "replaces_links",
        "replaced_by_link",
        "workflow_link",
        "upstream_links",
        "downstream_links",
    )
    if hasattr(admin, "ShowFacets"):  # Django >= 5.0: facet counts would scan the table per filter.
        show_facets = admin.ShowFacets.NEVER

    # -- permissions: read-only for everyone; actions each need their own permission --------------

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_requeue_permission(self, request):
        return request.user.has_perm(f"{self.opts.app_label}.requeue_taskexec")

    def has_cancel_permission(self, request):
        return request.user.has_perm(f"{self.opts.app_label}.cancel_taskexec")

    def get_changelist(self, request, **kwargs):
        return ExecutionChangeList

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        return CappedPaginator(queryset, per_page, orphans, allow_empty_first_page)

    def get_urls(self):
        dashboard = self.admin_site.admin_view(self.dashboard)
        pause = self.admin_site.admin_view(self.pause_queue)
        return [
            path("dashboard/", dashboard, name="toosimpleq_dashboard"),
            path("dashboard/pause/", pause, name="toosimpleq_pause_queue"),
            *super().get_urls(),
        ]

    def pause_queue(self, request):
        return pause_view(self, request)

    def dashboard(self, request):
        return dashboard_view(self, request)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        number = term.lstrip("#")
        if number.isdigit():
            return queryset.filter(pk=int(number)), False
        return super().get_search_results(request, queryset, search_term)

    # -- list columns ---------------------------------------------------------------------------

    @admin.display(description=_("task"))
    def task_display(self, obj):
        # Dotted names may break after a dot rather than overflow the column.
        name = format_html_join(mark_safe("<wbr>."), "{}", ((part,) for part in obj.task_name.split(".")))
        return format_html(
            '{}<br><span class="toosimpleq-muted">{}</span>',
            name,
            _("queue %(queue)s, priority %(priority)s") % {"queue": obj.queue, "priority": obj.priority},
        )

    @admin.display(description=_("when"))
    def when_display(self, obj):
        """The moment that matters for the state: finished (and how long it ran), started, or due."""
        if obj.finished is not None:
            label, value = _("finished"), obj.finished
        elif obj.started is not None:
            label, value = _("started"), obj.started
        else:
            label, value = _("due"), obj.due
        duration = display.duration_text(obj.duration) if obj.duration is not None else ""
        return format_html(
            '<span class="toosimpleq-muted">{}</span> {}{}{}',
            label,
            display.moment(value),
            mark_safe("<br>") if duration else "",
            format_html('<span class="toosimpleq-muted">{}</span>', _("ran %(duration)s") % {"duration": duration})
            if duration
            else "",
        )

    @admin.display(description=_("retries"))
    def chain_display(self, obj):
        parts = []
        if getattr(obj, "replaces_id", None) is not None:
            parts.append(format_html("{} {}", _("retry of"), display.change_link(TaskExec, obj.replaces_id, f"#{obj.replaces_id}")))
        if obj.replaced_by_id is not None:
            parts.append(
                format_html("{} {}", _("replaced by"), display.change_link(TaskExec, obj.replaced_by_id, f"#{obj.replaced_by_id}"))
            )
        if not parts:
            return display.EMPTY
        return format_html_join(mark_safe("<br>"), "{}", ((p,) for p in parts))

    @admin.display(description=_("call"))
    def call_preview(self, obj):
        args = display.stored_preview(getattr(obj, "args_preview", None), PREVIEW)
        kwargs = display.stored_preview(getattr(obj, "kwargs_preview", None), PREVIEW)
        shown = " ".join(part for part in (args, kwargs) if part not in ("", "[]", "{}"))
        if not shown:
            return display.EMPTY
        # At most a few lines of a narrow column; the detail page shows the call in full.
        return format_html('<code class="toosimpleq-call" title="{}">{}</code>', shown, shown)

    @admin.display(description=_("state"), ordering="state")
    def state_display(self, obj):
        return display.state_badge(obj.state, obj.get_state_display())




    @admin.display(description=_("duration"))
    def duration_display(self, obj):
        return display.duration_text(obj.duration)

    @admin.display(description=_("worker"))
    def worker_link(self, obj):
        if obj.worker_id is None:
            return display.EMPTY
        worker = obj.worker
        return format_html(
            '<span style="white-space:nowrap" title="{}:{}">{}</span>',
            worker.host,
            worker.pid,
            display.change_link(WorkerStatus, worker.pk, worker.label),
        )


    @admin.display(description=_("replaced by"))
    def replaced_by_link(self, obj):
        if obj.replaced_by_id is None:
            return display.EMPTY
        return display.change_link(TaskExec, obj.replaced_by_id, f"#{obj.replaced_by_id}")

    # -- detail fields ---------------------------------------------------------------------------

    @admin.display(description=_("positional arguments"))
    def args_display(self, obj):
        return display.pretty_value(obj.args)

    @admin.display(description=_("keyword arguments"))
    def kwargs_display(self, obj):
        return display.pretty_value(obj.kwargs)

    @admin.display(description=_("result"))
    def result_display(self, obj):
        if obj.result is None and obj.state != States.SUCCEEDED:
            return display.EMPTY
        return display.pretty_value(obj.result)

    @admin.display(description=_("retry delay"))
    def retry_delay_display(self, obj):
        """Only meaningful while a retry may still come: not once the call is over."""
        if obj.retries and obj.state in (*States.waiting(), States.PROCESSING):
            return _("%(seconds)s s, doubled after each failure") % {"seconds": f"{obj.retry_delay:g}"}
        return display.EMPTY

    @admin.display(description=_("error"))
    def error_display(self, obj):
        return display.pre(obj.error)

    @admin.display(description=_("output"))
    def output_display(self, obj):
        return display.pre(obj.output)

    @admin.display(description=_("replaces"))
    def replaces_links(self, obj):
        ids = list(TaskExec.objects.filter(replaced_by=obj.pk).order_by("id").values_list("id", flat=True)[:50])
        if not ids:
            return display.EMPTY
        return format_html_join(", ", "{}", ((display.change_link(TaskExec, i, f"#{i}"),) for i in ids))

    @admin.display(description=_("workflow"))
    def workflow_link(self, obj):
        if obj.workflow_id is None:
            return display.EMPTY
        return display.change_link(Workflow, obj.workflow_id, _("workflow #%(id)s (graph of its steps)") % {"id": obj.workflow_id})

    @admin.display(description=_("runs after"))
    def upstream_links(self, obj):
        return self._step_links(StepLink.objects.filter(downstream_id=obj.pk).values_list("upstream_id", flat=True))

    @admin.display(description=_("runs before"))
    def downstream_links(self, obj):
        return self._step_links(StepLink.objects.filter(upstream_id=obj.pk).values_list("downstream_id", flat=True))

    def _step_links(self, ids):
        ids = list(ids.order_by("pk")[:51])
        if not ids:
            return display.EMPTY
        shown = format_html_join(", ", "{}", ((display.change_link(TaskExec, i, f"#{i}"),) for i in ids[:50]))
        return format_html("{}{}", shown, "…" if len(ids) > 50 else "")

    # -- actions ---------------------------------------------------------------------------------

    @admin.action(description=_("Requeue: run the same call again"), permissions=["requeue"])
    def action_requeue(self, request, queryset):
        engine = get_engine()
        now = timezone.now()
        created, unreadable = [], []
        for execution in queryset.defer("result", "error", "output").order_by("id"):
            if isinstance(execution.args, Undecodable) or isinstance(execution.kwargs, Undecodable):
                unreadable.append(execution.pk)  # e.g. a 1.x pickle the upgrade could not convert
                continue
            # The task's current options when this process knows it, else the row's own.
            task = tasks_registry.get(execution.task_name)
            new = engine.requeue(
                execution,
                now,
                retries=task.retries if task is not None else execution.retries,
                retry_delay=task.retry_delay if task is not None else execution.retry_delay,
                unique=task.unique if task is not None else execution.is_unique,
            )
            self.log_change(request, execution, _("Requeued as #%(id)s.") % {"id": new.pk})
            created.append(new.pk)
        if created:
            self.message_user(
                request,
                ngettext(
                    "Requeued %(count)d execution: %(ids)s.",
                    "Requeued %(count)d executions: %(ids)s.",
                    len(created),
                )
                % {"count": len(created), "ids": ", ".join(f"#{pk}" for pk in created)},
                messages.SUCCESS,
            )
        if unreadable:
            self.message_user(
                request,
                _("Not requeued, their arguments cannot be read (queue the call again from your code): %(ids)s.")
                % {"ids": ", ".join(f"#{pk}" for pk in unreadable)},
                messages.WARNING,
            )

    @admin.action(description=_("Cancel: never run these waiting executions"), permissions=["cancel"])
    def action_cancel(self, request, queryset):
        ids = list(queryset.order_by("id").values_list("pk", flat=True))
        cancelled = get_engine().cancel(ids, timezone.now())
        skipped = len(ids) - len(cancelled)
        for execution in TaskExec.objects.filter(pk__in=cancelled).only("id", "task_name", "state"):
            self.log_change(request, execution, _("Cancelled."))
        if cancelled:
            self.message_user(
                request,
                ngettext("Cancelled %(count)d execution.", "Cancelled %(count)d executions.", len(cancelled))
                % {"count": len(cancelled)},
                messages.SUCCESS,
            )
        if skipped:
            self.message_user(
                request,
                ngettext(
                    "%(count)d execution was not waiting any more and was left as it is.",
                    "%(count)d executions were not waiting any more and were left as they are.",
                    skipped,
                )
                % {"count": skipped},
                messages.WARNING,
            )

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # Requeue/cancel buttons on the detail page post to the list's actions (same checks, same log).
        extra_context = dict(extra_context or {})
        execution = self.get_object(request, object_id)
        extra_context["toosimpleq_actions"] = {
            "url": reverse(f"{self.admin_site.name}:toosimpleq_taskexec_changelist"),
            "requeue": self.has_requeue_permission(request),
            "cancel": self.has_cancel_permission(request)
            and execution is not None
            and execution.state in States.not_started(),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def changelist_view(self, request, extra_context=None):
        extra_context = dict(extra_context or {})
        extra_context["dashboard_url"] = reverse(f"{self.admin_site.name}:toosimpleq_dashboard")
        return super().changelist_view(request, extra_context)
