"""``manage.py toosimpleq_status``: queue depths, waiting ages, failures, workers and flow control
(limits, running counts, rate use, paused queues); a health check.

Exit codes (added together when several problems are found):
0 healthy; 1 fewer workers online than ``--min-workers`` (default 1); 2 some queue has an execution
waiting longer than ``--max-wait`` seconds past its due time; 4 more failures in the last 24 h than
``--max-failures``.
"""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand
from django.db import DEFAULT_DB_ALIAS

from ... import flow, monitoring

NO_WORKER, WAITING_TOO_LONG, TOO_MANY_FAILURES = 1, 2, 4


class Command(BaseCommand):
    help = (
        "Print queue depths, the oldest waiting age, recent failures and online workers. Exits non-zero "
        "when no worker is online (1), a queue waits longer than --max-wait (2) or failures exceed "
        "--max-failures (4); codes add up."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
        parser.add_argument(
            "--max-wait",
            type=float,
            metavar="SECONDS",
            help="unhealthy when an execution has been due for longer than this without being taken",
        )
        parser.add_argument(
            "--min-workers",
            type=int,
            default=1,
            metavar="N",
            help="unhealthy when fewer workers are online (default 1; 0 disables the check)",
        )
        parser.add_argument(
            "--max-failures", type=int, metavar="N", help="unhealthy when more executions failed in the last 24 h"
        )
        parser.add_argument(
            "--queue",
            action="append",
            default=[],
            help="only report (and check) this queue (can be used several times)",
        )
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="database alias (default: default)")

    def handle(self, *args, **options):
        snap = monitoring.snapshot(using=options["database"])
        if options["queue"]:
            snap.queues = [q for q in snap.queues if q.queue in options["queue"]]
        limited = flow.flow_status(using=options["database"])
        if options["queue"]:
            limited = [f for f in limited if f.kind == "task" or f.name in options["queue"]]
        problems, code = self.check(snap, options)
        if options["json"]:
            data = snap.as_dict()
            data["flow"] = [f.as_dict() for f in limited]
            data["healthy"] = not problems
            data["problems"] = problems
            data["exit_code"] = code
            self.stdout.write(json.dumps(data, indent=2))
        else:
            self.print_tables(snap, problems, limited)
        if code:
            raise SystemExit(code)

    def check(self, snap: monitoring.Snapshot, options) -> tuple[list[str], int]:
        problems, code = [], 0
        if len(snap.workers_online) < options["min_workers"]:
            problems.append(f"{len(snap.workers_online)} worker(s) online, fewer than {options['min_workers']}")
            code |= NO_WORKER
        if options["max_wait"] is not None:
            late = [q for q in snap.queues if q.ready and q.oldest_wait > options["max_wait"]]
            for q in late:
                problems.append(
                    f"queue {q.queue!r} has waited {q.oldest_wait:.0f}s (more than {options['max_wait']:g}s)"
                )
            if late:
                code |= WAITING_TOO_LONG
        if options["max_failures"] is not None and snap.failures_24h > options["max_failures"]:
            problems.append(f"{snap.failures_24h} failures in the last 24 h (more than {options['max_failures']})")
            code |= TOO_MANY_FAILURES
        return problems, code

    def print_tables(self, snap: monitoring.Snapshot, problems: list[str], limited: list[flow.FlowStatus]) -> None:
        out = self.stdout
        out.write("Queues")
        rows: list[tuple[object, ...]] = [("queue", "ready", "oldest wait", "queued", "sleeping", "processing", "waiting")]
        rows += [
            (q.queue, q.ready, _seconds(q.oldest_wait) if q.ready else "-", q.queued, q.sleeping, q.processing, q.waiting)
            for q in snap.queues
        ]
        out.write(_table(rows) if snap.queues else "  (nothing waiting or running)")
        out.write("")
        out.write("Executions per state")
        out.write(_table([("state", "count")] + [(s, n) for s, n in snap.states.items()] + [("total", snap.total)]))
        out.write("")
        out.write(
            f"Failures in the last 24 h: {snap.failures_24h} "
            f"(and {snap.retried_failures_24h} failed attempts that were retried)"
        )
        out.write("")
        if limited:
            out.write("Flow control")
            rows = [("", "name", "concurrency", "running", "rate limit", "rate use", "queued", "paused")]
            rows += [
                (
                    f.kind + (" (per key)" if f.per_key else ""),
                    f.name,
                    f.concurrency if f.concurrency is not None else "-",
                    f.running,
                    f.rate_limit or "-",
                    f.rate_used if f.rate_used is not None else "-",
                    f.queued,
                    "PAUSED" if f.paused else "",
                )
                for f in limited
            ]
            out.write(_table(rows))
            out.write("")
        out.write(f"Workers online: {len(snap.workers_online)}")
        if snap.workers_online:
            rows = [("id", "label", "host", "pid", "queues", "pick-up", "last heartbeat")]
            rows += [
                (
                    w.id,
                    w.label,
                    w.host,
                    w.pid if w.pid is not None else "-",
                    ",".join(w.queues) or "all",
                    pickup(w.receives_notifications),
                    w.last_seen,
                )
                for w in snap.workers_online
            ]
            out.write(_table(rows))
        out.write("")
        if problems:
            out.write(self.style.ERROR("UNHEALTHY: " + "; ".join(problems)))
        else:
            out.write(self.style.SUCCESS("OK"))


def pickup(receives_notifications: bool) -> str:
    """How a worker learns about new work: notified at once, or by polling every tick."""
    return "notifications" if receives_notifications else "polling"


def _seconds(value: float) -> str:
    if value < 120:
        return f"{value:.1f}s"
    if value < 7200:
        return f"{value / 60:.1f}min"
    return f"{value / 3600:.1f}h"


def _table(rows: list[tuple]) -> str:
    """Left-aligned text columns, numbers right-aligned, two spaces apart, indented."""
    text = [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in text) for i in range(len(text[0]))]
    lines = []
    for row, raw in zip(text, rows):
        cells = [
            cell.rjust(w) if isinstance(value, (int, float)) and not isinstance(value, bool) else cell.ljust(w)
            for cell, value, w in zip(row, raw, widths)
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines)
