"""Task executions in the admin: a fast list, a read-only detail page, "requeue" and "cancel"."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db import router, transaction
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from ..models import TaskExec, WorkerStatus
from ..registry import insert_execution, tasks_registry
from ..serialization import Undecodable
from . import display
from .dashboard import dashboard_view
from .listing import PREVIEW, CappedPaginator, ExecutionChangeList, QueueFilter, TaskNameFilter, WorkerFilter

States = TaskExec.States


# -- the admin --------------------------------------------------------------------------------------


@admin.register(TaskExec)
class TaskExecAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "task_name",
        "call_preview",
        "state_display",
        "queue",
        "priority",
        "due_display",
        "started_display",
        "finished_display",
        "duration_display",
        "worker_link",
        "replaces_link",
        "replaced_by_link",
    )
    list_display_links = ("id", "task_name")
    list_filter = ("state", TaskNameFilter, QueueFilter, WorkerFilter)
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
        (_("Retries"), {"fields": ("retries", "retry_delay", "replaces_links", "replaced_by_link")}),
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
        "retries",
        "retry_delay",
        "replaces_links",
        "replaced_by_link",
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
        return [path("dashboard/", dashboard, name="toosimpleq_dashboard"), *super().get_urls()]

    def dashboard(self, request):
        return dashboard_view(self, request)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        number = term.lstrip("#")
        if number.isdigit():
            return queryset.filter(pk=int(number)), False
        return super().get_search_results(request, queryset, search_term)

    # -- list columns ---------------------------------------------------------------------------

    @admin.display(description=_("call"))
    def call_preview(self, obj):
        args = display.stored_preview(getattr(obj, "args_preview", None), PREVIEW)
        kwargs = display.stored_preview(getattr(obj, "kwargs_preview", None), PREVIEW)
        shown = " ".join(part for part in (args, kwargs) if part not in ("", "[]", "{}"))
        if not shown:
            return display.EMPTY
        return format_html("<code>{}</code>", shown)

    @admin.display(description=_("state"), ordering="state")
    def state_display(self, obj):
        return display.state_badge(obj.state, obj.get_state_display())

    @admin.display(description=_("due"))
    def due_display(self, obj):
        return display.moment(obj.due)

    @admin.display(description=_("started"))
    def started_display(self, obj):
        return display.moment(obj.started)

    @admin.display(description=_("finished"))
    def finished_display(self, obj):
        return display.moment(obj.finished)

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

    @admin.display(description=_("retry of"))
    def replaces_link(self, obj):
        replaces_id = getattr(obj, "replaces_id", None)
        if replaces_id is None:
            return display.EMPTY
        return display.change_link(TaskExec, replaces_id, f"#{replaces_id}")

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

    # -- actions ---------------------------------------------------------------------------------

    @admin.action(description=_("Requeue: run the same call again"), permissions=["requeue"])
    def action_requeue(self, request, queryset):
        db = router.db_for_write(TaskExec)
        now = timezone.now()
        created, unreadable = [], []
        for execution in queryset.defer("result", "error", "output").order_by("id"):
            if isinstance(execution.args, Undecodable) or isinstance(execution.kwargs, Undecodable):
                unreadable.append(execution.pk)  # e.g. a 1.x pickle the upgrade could not convert
                continue
            task = tasks_registry.get(execution.task_name)
            retries = task.retries if task is not None else execution.retries
            retry_delay = task.retry_delay if task is not None else execution.retry_delay
            with transaction.atomic(using=db):
                new = insert_execution(execution.make_replacement(now, retries, retry_delay), db)
                if new.pk != execution.pk:
                    # Link a finished execution to its rerun, unless a retry already replaced it.
                    TaskExec.objects.using(db).filter(
                        pk=execution.pk, state__in=States.finished(), replaced_by__isnull=True
                    ).update(replaced_by=new)
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
        db = router.db_for_write(TaskExec)
        cancelled, skipped = [], 0
        for pk in queryset.order_by("id").values_list("pk", flat=True):
            # One conditional UPDATE per row: it cannot cancel a row a worker has just claimed,
            # and tells exactly which rows were cancelled.
            done = (
                TaskExec.objects.using(db)
                .filter(pk=pk, state__in=States.waiting())
                .update(state=States.CANCELLED, finished=timezone.now(), unique_key=None)
            )
            if done:
                cancelled.append(pk)
            else:
                skipped += 1
        for execution in TaskExec.objects.using(db).filter(pk__in=cancelled).only("id", "task_name", "state"):
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
            and execution.state in States.waiting(),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def changelist_view(self, request, extra_context=None):
        extra_context = dict(extra_context or {})
        extra_context["dashboard_url"] = reverse(f"{self.admin_site.name}:toosimpleq_dashboard")
        return super().changelist_view(request, extra_context)
