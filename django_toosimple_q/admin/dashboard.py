"""The queue dashboard: an admin page with counts, queue depths, workers and a throughput chart.

Served at ``<admin>/toosimpleq/taskexec/dashboard/`` (URL name ``admin:toosimpleq_dashboard``) for
users who may view task executions. Everything is computed by ``monitoring`` with indexed queries
and drawn as inline SVG: no script, no network.
"""

from __future__ import annotations

import datetime
from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from .. import flow, monitoring
from ..conf import queue_database
from ..errors import ConfigurationError
from ..models import FlowScope, TaskExec, WorkerStatus
from . import display

HOURS_CHOICES = (1, 3, 6, 12, 24)
DEFAULT_HOURS = 3
#: Minutes per bar of the chart, and minutes between two time labels, for each window.
INTERVAL_MINUTES = {1: 1, 3: 5, 6: 10, 12: 15, 24: 30}
LABEL_MINUTES = {1: 10, 3: 30, 6: 60, 12: 120, 24: 180}
CHART_WIDTH, CHART_HEIGHT = 1000, 240
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 48, 8, 30, 26

def dashboard_view(model_admin, request):
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    try:
        hours = int(request.GET.get("hours", DEFAULT_HOURS))
    except ValueError:
        hours = DEFAULT_HOURS
    if hours not in HOURS_CHOICES:
        hours = DEFAULT_HOURS
    now = timezone.now()
    changelist = reverse(f"{model_admin.admin_site.name}:toosimpleq_taskexec_changelist")
    workers_url = reverse(f"{model_admin.admin_site.name}:toosimpleq_workerstatus_changelist")

    counts = monitoring.state_counts()
    states = [
        {
            "badge": display.state_badge(value, label),
            "count": counts.get(value, 0),
            "url": f"{changelist}?{urlencode({'state__exact': value})}",
        }
        for value, label in TaskExec.States.choices
    ]
    since = now - datetime.timedelta(hours=24)
    failed_since = {"state__exact": TaskExec.States.FAILED, "finished__gte": since.isoformat()}
    failures_url = f"{changelist}?{urlencode({**failed_since, 'replaced_by__isnull': 'True'})}"
    retried_url = f"{changelist}?{urlencode({**failed_since, 'replaced_by__isnull': 'False'})}"
    queues = [
        {
            "stats": q,
            "oldest_wait": display.duration_text(datetime.timedelta(seconds=q.oldest_wait))
            if q.ready
            else display.EMPTY,
            "url": f"{changelist}?{urlencode({'queue': q.queue})}",
        }
        for q in monitoring.queue_stats(now)
    ]
    workers = [
        {"worker": w, "url": reverse(f"{model_admin.admin_site.name}:toosimpleq_workerstatus_change", args=[w.pk])}
        for w in monitoring.online_workers(now)
    ]
    intervals = monitoring.outcomes_per_interval(hours, INTERVAL_MINUTES[hours], now)
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "app_label": model_admin.opts.app_label,
        "title": _("Queue dashboard"),
        "subtitle": None,
        "now": now,
        "states": states,
        "total": sum(counts.values()),
        "queues": queues,
        "failures_24h": monitoring.failures_since(since),
        "failures_url": failures_url,
        "retried_24h": monitoring.retried_failures_since(since),
        "retried_url": retried_url,
        "workers": workers,
        "workers_url": workers_url,
        "changelist_url": changelist,
        "hours": hours,
        "hours_choices": HOURS_CHOICES,
        "chart": outcomes_chart(intervals, INTERVAL_MINUTES[hours], LABEL_MINUTES[hours]),
        "interval_minutes": INTERVAL_MINUTES[hours],
        "succeeded_in_window": sum(i.succeeded for i in intervals),
        "failed_in_window": sum(i.failed for i in intervals),
        "worker_state": display.state_badge(WorkerStatus.States.ONLINE, WorkerStatus.States.ONLINE.label),
        "flow": flow.flow_status(now=now),
        "can_pause": can_pause(request),
        "pause_url": reverse(f"{model_admin.admin_site.name}:toosimpleq_pause_queue"),
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, "admin/toosimpleq/dashboard.html", context)


def can_pause(request) -> bool:
    return bool(request.user.has_perm("toosimpleq.pause_queue"))


def pause_view(model_admin, request):
    """POST ``queue`` and ``action`` (``pause`` or ``resume``): needs the ``toosimpleq.pause_queue``
    permission; recorded in the admin's history (a LogEntry on the queue's flow scope row)."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    if not can_pause(request):
        raise PermissionDenied
    queue = request.POST.get("queue", "").strip()
    action = request.POST.get("action")
    dashboard = reverse(f"{model_admin.admin_site.name}:toosimpleq_dashboard")
    if action not in ("pause", "resume"):
        messages.error(request, _("Unknown action."))
        return HttpResponseRedirect(dashboard)
    try:
        changed = flow.pause_queue(queue) if action == "pause" else flow.resume_queue(queue)
    except ConfigurationError as exc:
        messages.error(request, str(exc))
        return HttpResponseRedirect(dashboard)
    if changed:
        scope = FlowScope.objects.using(queue_database()).get(scope=f"queue:{queue}")
        text = _("Paused queue %(queue)s.") if action == "pause" else _("Resumed queue %(queue)s.")
        model_admin.log_change(request, scope, text % {"queue": queue})
        messages.success(request, text % {"queue": queue})
    else:
        text = _("Queue %(queue)s was already paused.") if action == "pause" else _("Queue %(queue)s was not paused.")
        messages.info(request, text % {"queue": queue})
    return HttpResponseRedirect(dashboard)


def nice_scale(top: int) -> tuple[int, int]:
    """``(step, maximum)`` of a y axis showing ``top``: steps of 1, 2 or 5 x 10^n, at most 4 of them."""
    step = 1
    while step * 4 < top:
        for factor in (2, 5 / 2, 2):  # 1 -> 2 -> 5 -> 10 -> 20 ...
            step = int(step * factor)
            if step * 4 >= top:
                break
    return step, step * max(1, -(-top // step))


def outcomes_chart(intervals: list[monitoring.Interval], interval_minutes: int, label_minutes: int) -> SafeString:
    """Succeeded and failed executions per interval, as stacked bars in an SVG chart with a y axis
    (counts, gridlines), time labels and a legend. Colours come from CSS classes (light and dark)."""
    step, top = nice_scale(max((i.succeeded + i.failed for i in intervals), default=0))
    plot_w = CHART_WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = CHART_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    bottom = MARGIN_TOP + plot_h
    slot = plot_w / max(len(intervals), 1)
    width = max(slot * 0.8, 1)

    def y(count: float) -> float:
        return bottom - plot_h * count / top

    grid = [(f"{y(v):.1f}", MARGIN_LEFT, CHART_WIDTH - MARGIN_RIGHT, MARGIN_LEFT - 6, f"{y(v) + 4:.1f}", v)
            for v in range(0, top + 1, step)]
    bars, labels = [], []
    for index, interval in enumerate(intervals):
        local = timezone.localtime(interval.start)
        x = MARGIN_LEFT + index * slot + (slot - width) / 2
        end = timezone.localtime(interval.start + datetime.timedelta(minutes=interval_minutes))
        title = _("%(start)s-%(end)s: %(succeeded)d succeeded, %(failed)d failed") % {
            "start": formats.time_format(local, "H:i"),
            "end": formats.time_format(end, "H:i"),
            "succeeded": interval.succeeded,
            "failed": interval.failed,
        }
        if interval.succeeded:
            bars.append(("succeeded", f"{x:.1f}", f"{y(interval.succeeded):.1f}", f"{width:.1f}",
                         f"{bottom - y(interval.succeeded):.1f}", title))
        if interval.failed:
            total = interval.succeeded + interval.failed
            bars.append(("failed", f"{x:.1f}", f"{y(total):.1f}", f"{width:.1f}",
                         f"{y(interval.succeeded) - y(total):.1f}", title))
        if (local.hour * 60 + local.minute) % label_minutes == 0:
            labels.append((f"{MARGIN_LEFT + index * slot:.1f}", bottom, bottom + 4, bottom + 18,
                           formats.time_format(local, "H:i")))
    return format_html(
        '<svg class="toosimpleq-chart" role="img" aria-label="{}" viewBox="0 0 {} {}" width="100%" '
        'style="height:auto;max-height:{}px">'
        '<g class="legend"><rect class="succeeded" x="{}" y="6" width="12" height="12"/>'
        '<text x="{}" y="16">{}</text>'
        '<rect class="failed" x="{}" y="6" width="12" height="12"/><text x="{}" y="16">{}</text></g>'
        "{}{}{}"
        '<line class="axis" x1="{}" y1="{}" x2="{}" y2="{}"/></svg>',
        _("Succeeded and failed executions per %(minutes)d minutes") % {"minutes": interval_minutes},
        CHART_WIDTH,
        CHART_HEIGHT,
        CHART_HEIGHT * 1.4,
        MARGIN_LEFT,
        MARGIN_LEFT + 16,
        _("succeeded"),
        MARGIN_LEFT + 110,
        MARGIN_LEFT + 126,
        _("failed"),
        format_html_join(
            "",
            '<line class="grid" x1="{1}" y1="{0}" x2="{2}" y2="{0}"/>'
            '<text class="count" x="{3}" y="{4}" text-anchor="end">{5}</text>',
            grid,
        ),
        format_html_join(
            "",
            '<rect class="{}" x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>',
            bars,
        ),
        format_html_join(
            "",
            '<line class="axis" x1="{0}" y1="{1}" x2="{0}" y2="{2}"/>'
            '<text x="{0}" y="{3}" text-anchor="middle">{4}</text>',
            labels,
        ),
        MARGIN_LEFT,
        bottom,
        CHART_WIDTH - MARGIN_RIGHT,
        bottom,
    )
