"""Workflows in the admin: a list, and a page per workflow drawing its steps and links as a
server-rendered SVG (no JavaScript), with "cancel workflow" and "requeue failed steps"."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from django.contrib import admin, messages
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from ..engine import get_engine
from ..models import StepLink, TaskExec, Workflow
from . import display

States = TaskExec.States

#: Steps of one column drawn one by one; past this, a column is drawn as one box per task with counts.
COLUMN_LIMIT = 24
BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 180, 44, 60, 14, 10


def graph(workflow_id: int) -> tuple[SafeString, Counter[str], list[int]]:
    """The SVG of a workflow's current steps (each call's latest execution), the count per state, and
    the ids of its steps that ended without succeeding (and were not replaced)."""
    steps = {
        row["pk"]: row
        for row in TaskExec.objects.filter(workflow_id=workflow_id, replaced_by__isnull=True)
        .order_by("pk")
        .values("pk", "task_name", "state", "attempt")
    }
    links = list(
        StepLink.objects.filter(downstream_id__in=list(steps)).values_list("upstream_id", "downstream_id")
    )
    upstream: dict[int, list[int]] = defaultdict(list)
    for up, down in links:
        upstream[down].append(up)
    # Column: the longest path from a first step (ids grow along the workflow, so one pass in id order).
    column: dict[int, int] = {}
    for pk in steps:
        column[pk] = max((column.get(up, -1) + 1 for up in upstream[pk]), default=0)
    # Boxes: one per step, or for a crowded column one per task with counts per state.
    boxes: dict[Any, dict[str, Any]] = {}
    box_of: dict[int, Any] = {}
    per_column: dict[int, list[int]] = defaultdict(list)
    for pk, c in column.items():
        per_column[c].append(pk)
    for c, pks in per_column.items():
        crowded = len(pks) > COLUMN_LIMIT
        for pk in pks:
            key: Any = (c, steps[pk]["task_name"]) if crowded else pk
            box = boxes.setdefault(key, {"column": c, "task": steps[pk]["task_name"], "states": Counter(), "pks": []})
            box["states"][steps[pk]["state"]] += 1
            box["pks"].append(pk)
            box_of[pk] = key
    rows: Counter[int] = Counter()
    for box in boxes.values():
        box["row"] = rows[box["column"]]
        rows[box["column"]] += 1
    width = MARGIN * 2 + (max(column.values(), default=0) + 1) * (BOX_W + GAP_X) - GAP_X
    height = MARGIN * 2 + max(rows.values(), default=1) * (BOX_H + GAP_Y) - GAP_Y

    def at(box: dict[str, Any]) -> tuple[int, int]:
        return MARGIN + box["column"] * (BOX_W + GAP_X), MARGIN + box["row"] * (BOX_H + GAP_Y)

    edges = {(box_of[up], box_of[down]) for up, down in links if up in box_of and down in box_of}
    parts = []
    for source, target in sorted(edges, key=str):
        (x1, y1), (x2, y2) = at(boxes[source]), at(boxes[target])
        parts.append(
            format_html(
                '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#999" marker-end="url(#toosimpleq-arrow)"/>',
                x1 + BOX_W, y1 + BOX_H // 2, x2, y2 + BOX_H // 2,
            )
        )
    for key, box in boxes.items():
        x, y = at(box)
        state, _count = box["states"].most_common(1)[0]
        colour, symbol = display.STATE_STYLES.get(state, ("#333333", "?"))
        if len(box["pks"]) == 1:
            pk = box["pks"][0]
            url = reverse("admin:toosimpleq_taskexec_change", args=[pk])
            label = format_html("{} {} #{}", symbol, box["task"][:22], pk)
            detail = str(States(steps[pk]["state"]).label)
        else:
            url = reverse("admin:toosimpleq_taskexec_changelist") + f"?workflow={workflow_id}"
            label = format_html("{} × {}", len(box["pks"]), box["task"][:20])
            detail = ", ".join(f"{n} {s.lower()}" for s, n in box["states"].most_common())
        parts.append(
            format_html(
                '<a href="{}" class="toosimpleq-step toosimpleq-state-{}"><title>{}</title>'
                '<rect x="{}" y="{}" width="{}" height="{}" rx="6" fill="#fff" stroke="{}" stroke-width="2"/>'
                '<text x="{}" y="{}" font-size="12" fill="{}">{}</text>'
                '<text x="{}" y="{}" font-size="11" fill="#555">{}</text></a>',
                url, state.lower(), detail, x, y, BOX_W, BOX_H, colour,
                x + 8, y + 18, colour, label, x + 8, y + 35, detail[:30],
            )
        )
    svg = format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="toosimpleq-workflow" width="{}" height="{}" '
        'viewBox="0 0 {} {}" role="img"><defs><marker id="toosimpleq-arrow" viewBox="0 0 10 10" refX="10" '
        'refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#999"/></marker></defs>{}</svg>',
        width, height, width, height, format_html_join("", "{}", ((p,) for p in parts)),
    )
    counts = Counter(row["state"] for row in steps.values())
    # What "requeue failed steps" reruns: steps that ran (or could not) and failed for good, not the
    # cancelled or blocked ones (those run again when what blocked them is requeued).
    failed = [pk for pk, row in steps.items() if row["state"] in (States.FAILED, States.INVALID, States.INTERRUPTED)]
    return svg, counts, failed


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "created", "progress")
    ordering = ("-id",)
    search_fields = ("name",)
    actions = ["action_cancel_workflow"]
    change_form_template = "admin/toosimpleq/workflow/change_form.html"
    readonly_fields = ("name", "created")
    fields = ("name", "created")

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    def has_cancel_workflow_permission(self, request: Any) -> bool:
        return bool(request.user.has_perm(f"{self.opts.app_label}.cancel_workflow"))

    @admin.display(description=_("steps"))
    def progress(self, obj: Workflow) -> SafeString:
        counts = Counter(
            TaskExec.objects.filter(workflow_id=obj.pk, replaced_by__isnull=True).values_list("state", flat=True)
        )
        return format_html_join(
            " ", "{}", ((format_html("{} {}", n, display.state_badge(s, States(s).label)),) for s, n in counts.most_common())
        )

    @admin.action(description=_("Cancel: never run the steps that have not started"), permissions=["cancel_workflow"])
    def action_cancel_workflow(self, request: Any, queryset: Any) -> None:
        engine = get_engine()
        total = 0
        for workflow in queryset.order_by("pk"):
            cancelled = engine.cancel_workflow(workflow.pk, timezone.now())
            self.log_change(request, workflow, _("Cancelled %(count)d steps.") % {"count": len(cancelled)})
            total += len(cancelled)
        self.message_user(
            request,
            ngettext("Cancelled %(count)d step.", "Cancelled %(count)d steps.", total) % {"count": total},
            messages.SUCCESS,
        )

    def change_view(self, request: Any, object_id: str, form_url: str = "", extra_context: Any = None) -> Any:
        extra_context = dict(extra_context or {})
        workflow = self.get_object(request, object_id)
        if workflow is not None:
            svg, counts, failed = graph(workflow.pk)
            extra_context["toosimpleq_graph"] = svg
            extra_context["toosimpleq_counts"] = [
                display.state_badge(s, f"{n} {States(s).label}") for s, n in counts.most_common()
            ]
            extra_context["toosimpleq_actions"] = {
                "cancel_url": reverse(f"{self.admin_site.name}:toosimpleq_workflow_changelist"),
                "cancel": self.has_cancel_workflow_permission(request)
                and any(s in States.not_started() for s in counts),
                "requeue_url": reverse(f"{self.admin_site.name}:toosimpleq_taskexec_changelist"),
                "requeue": bool(failed) and request.user.has_perm(f"{self.opts.app_label}.requeue_taskexec"),
                "failed": failed,
            }
        return super().change_view(request, object_id, form_url, extra_context)
