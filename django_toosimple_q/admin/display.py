"""Small HTML fragments shared by the admin pages. Everything user-provided goes through format_html."""

from __future__ import annotations

import datetime
import pprint
from typing import Any

from django.urls import reverse
from django.utils import formats, timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from .. import serialization
from ..models import TaskExec, WorkerStatus

States = TaskExec.States

#: colour and symbol of each state; the symbol keeps the state readable without colour.
STATE_STYLES: dict[str, tuple[str, str]] = {
    States.SLEEPING: ("#6c757d", "◌"),
    States.QUEUED: ("#0b63c5", "○"),
    States.PROCESSING: ("#c25e00", "▶"),
    States.SUCCEEDED: ("#1a7f37", "✔"),
    States.FAILED: ("#c62828", "✘"),
    States.INTERRUPTED: ("#b35c00", "⚠"),
    States.INVALID: ("#7b3fb5", "⊘"),
    States.CANCELLED: ("#6c757d", "■"),
    States.WAITING: ("#5a6b7d", "⧖"),
    States.BLOCKED: ("#8d4a4a", "⊟"),
    WorkerStatus.States.ONLINE: ("#1a7f37", "●"),
    WorkerStatus.States.TIMEDOUT: ("#c25e00", "◐"),
    WorkerStatus.States.STOPPED: ("#6c757d", "■"),
    WorkerStatus.States.TERMINATED: ("#b35c00", "⚠"),
    WorkerStatus.States.CRASHED: ("#c62828", "✘"),
}

EMPTY = "-"


def state_badge(state: str, label: Any) -> SafeString:
    colour, symbol = STATE_STYLES.get(state, ("#333333", "?"))
    return format_html(
        '<span class="toosimpleq-state toosimpleq-state-{}" style="color:{};font-weight:bold;white-space:nowrap">'
        "{}&nbsp;{}</span>",
        state.lower(),
        colour,
        symbol,
        label,
    )


def moment(value: datetime.datetime | None) -> SafeString | str:
    """A compact local time for list columns: "today 14:03:12", else the date and the minute
    ("2026-11-30 23:10"); the full form on hover."""
    if value is None:
        return EMPTY
    # With USE_TZ=False the database gives naive local times, and timezone.now() is naive too.
    local = timezone.localtime(value) if timezone.is_aware(value) else value
    now = timezone.now()
    today = (timezone.localtime(now) if timezone.is_aware(now) else now).date()
    if local.date() == today:
        shown = _("today %(time)s") % {"time": formats.date_format(local, "H:i:s")}
    else:
        shown = formats.date_format(local, "Y-m-d H:i")
    return format_html(
        '<span style="white-space:nowrap" title="{}">{}</span>',
        formats.date_format(local, "Y-m-d H:i:s"),
        shown,
    )


def duration_text(value: datetime.timedelta | None) -> str:
    """``1.25 s``, ``3 min 4 s``, ``2 h 5 min``: short and sortable by eye."""
    if value is None:
        return EMPTY
    seconds = value.total_seconds()
    if seconds < 60:
        return _("%(seconds).2f s") % {"seconds": seconds}
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return _("%(minutes)d min %(seconds)d s") % {"minutes": minutes, "seconds": seconds}
    hours, minutes = divmod(minutes, 60)
    return _("%(hours)d h %(minutes)d min") % {"hours": hours, "minutes": minutes}


def stored_preview(raw: str | None, limit: int) -> str:
    """A preview of a stored typed-JSON text of which at most ``limit + 1`` characters were read.

    Complete values are decoded and shown as Python would print them; a cut one is shown as its
    stored text, ending with an ellipsis.
    """
    if raw is None:
        return ""
    if len(raw) > limit:
        return raw[:limit].rstrip() + "…"
    try:
        value = serialization.loads(raw)
    except Exception:  # noqa: BLE001 - a damaged row is shown as it is stored
        return raw
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pretty_value(value: Any) -> SafeString:
    """A stored value in full, pretty-printed and escaped, in a scrollable block."""
    if isinstance(value, serialization.Undecodable):
        return format_html(
            '<p class="errornote">{}</p><pre class="toosimpleq-pre">{}</pre>',
            _("This value cannot be decoded: %(error)s") % {"error": value.error},
            value.raw,
        )
    return pre(pprint.pformat(value, width=100, sort_dicts=False))


def pre(text: str | None) -> SafeString | str:
    if not text:
        return EMPTY
    return format_html(
        '<pre class="toosimpleq-pre" style="white-space:pre-wrap;max-height:40em;overflow:auto;margin:0">{}</pre>',
        text,
    )


def change_link(obj_or_model, pk: Any, text: Any) -> SafeString:
    opts = obj_or_model._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[pk])
    return format_html('<a href="{}">{}</a>', url, text)
