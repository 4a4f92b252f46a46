"""The queue dashboard: an admin page with counts, queue depths, workers and a throughput chart.

Served at ``<admin>/toosimpleq/taskexec/dashboard/`` (URL name ``admin:toosimpleq_dashboard``) for
users who may view task executions. Everything is computed by ``monitoring`` with indexed queries
and drawn as inline SVG: no script, no network.
"""

from __future__ import annotations

import datetime
from urllib.parse import urlencode

from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .. import monitoring
from ..models import TaskExec, WorkerStatus
from . import display

HOURS_CHOICES = (1, 3, 6, 12, 24)
DEFAULT_HOURS = 3
CHART_WIDTH, CHART_HEIGHT, MARGIN_LEFT, MARGIN_BOTTOM = 1200, 220, 48, 24


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
    failures_url = (
        f"{changelist}?{urlencode({'state__exact': TaskExec.States.FAILED, 'finished__gte': since.isoformat()})}"
    )
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
    series = monitoring.finished_per_minute(hours * 60, now)
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
        "workers": workers,
        "workers_url": workers_url,
        "changelist_url": changelist,
        "hours": hours,
        "hours_choices": HOURS_CHOICES,
        "chart": throughput_chart(series),
        "finished_in_window": sum(n for _, n in series),
        "worker_state": display.state_badge(WorkerStatus.States.ONLINE, WorkerStatus.States.ONLINE.label),
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, "admin/toosimpleq/dashboard.html", context)


def throughput_chart(series: list[tuple[datetime.datetime, int]]) -> SafeString:
    """Executions finished per minute as an SVG bar chart (one bar per minute, hour ticks)."""
    top = max((n for _, n in series), default=0) or 1
    plot_w = CHART_WIDTH - MARGIN_LEFT
    plot_h = CHART_HEIGHT - MARGIN_BOTTOM
    step = plot_w / max(len(series), 1)
    bars = []
    for i, (minute, n) in enumerate(series):
        if not n:
            continue
        h = plot_h * n / top
        label = ngettext("%(time)s: %(count)d finished", "%(time)s: %(count)d finished", n) % {
            "time": formats.time_format(timezone.localtime(minute), "H:i"),
            "count": n,
        }
        bars.append(
            (f"{MARGIN_LEFT + i * step:.2f}", f"{plot_h - h:.2f}", f"{max(step * 0.85, 0.5):.2f}", f"{h:.2f}", label)
        )
    # A tick every hour, or every 15 minutes for a one-hour window.
    tick_every = 15 if len(series) <= 60 else 60 if len(series) <= 6 * 60 else 180
    ticks = []
    for i, (minute, _n) in enumerate(series):
        local = timezone.localtime(minute)
        if (local.hour * 60 + local.minute) % tick_every == 0:
            ticks.append((f"{MARGIN_LEFT + i * step:.2f}", f"{plot_h + 16}", formats.time_format(local, "H:i")))
    return format_html(
        '<svg class="toosimpleq-chart" role="img" aria-label="{}" viewBox="0 0 {} {}" '
        'width="100%" style="height:auto;font:11px sans-serif">'
        '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#999"/>'
        '<text x="{}" y="12" text-anchor="end" fill="#666">{}</text>'
        '<text x="{}" y="{}" text-anchor="end" fill="#666">0</text>'
        "{}{}</svg>",  # grid first, bars on top
        _("Executions finished per minute"),
        CHART_WIDTH,
        CHART_HEIGHT,
        MARGIN_LEFT,
        plot_h,
        CHART_WIDTH,
        plot_h,
        MARGIN_LEFT - 6,
        top,
        MARGIN_LEFT - 6,
        plot_h,
        format_html_join(
            "",
            '<line x1="{0}" y1="{1}" x2="{0}" y2="{3}" stroke="#ccc"/>'
            '<text x="{0}" y="{2}" text-anchor="middle" fill="#666">{4}</text>',
            ((x, 0, y, plot_h, text) for x, y, text in ticks),
        ),
        format_html_join(
            "",
            '<rect x="{}" y="{}" width="{}" height="{}" fill="#417690"><title>{}</title></rect>',
            bars,
        ),
    )
