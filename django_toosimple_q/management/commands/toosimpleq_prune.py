"""``manage.py toosimpleq_prune``: delete finished executions (and stopped workers) older than an age."""

from __future__ import annotations

import datetime

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from ... import conf
from ...engine import get_engine


class Command(BaseCommand):
    help = (
        "Delete finished executions older than --older_than seconds (default: TOOSIMPLEQ_DELETE_FINISHED_AFTER), "
        "in small batches, then the records of workers that stopped before then (never a running worker's). "
        "Workers do this by themselves; this command is for cron jobs or a one-off clean-up."
    )

    def add_arguments(self, parser):
        parser.add_argument("--older_than", type=float, default=None, help="age in seconds")
        parser.add_argument("--batch", type=int, default=1000, help="rows per delete statement (default: 1000)")

    def handle(self, *args, **options):
        if options["older_than"] is not None:
            if options["older_than"] < 0:
                raise CommandError("--older_than must be >= 0")
            keep = datetime.timedelta(seconds=options["older_than"])
        else:
            configured = conf.delete_finished_after()
            if configured is None:
                raise CommandError("TOOSIMPLEQ_DELETE_FINISHED_AFTER is None (keep forever): pass --older_than")
            keep = configured
        engine = get_engine(conf.queue_database())
        cutoff = timezone.now() - keep
        total = 0
        while batch := engine.prune(cutoff, options["batch"]):
            total += batch
        workers = engine.prune_workers(cutoff)
        self.stdout.write(
            f"Deleted {total} execution(s) finished before {cutoff.isoformat()}, and the records of {workers} "
            "worker(s) that stopped before then (running workers are never deleted)."
        )
