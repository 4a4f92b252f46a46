"""``manage.py toosimpleq_pause QUEUE...``: pause queues (``--resume``: resume them; ``--list``: show)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from ... import flow
from ...errors import ConfigurationError


class Command(BaseCommand):
    help = (
        "Pause queues: workers stop starting their executions (running ones finish; queuing still works). "
        "--resume resumes them; --list shows the paused queues."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser):
        parser.add_argument("queues", nargs="*", metavar="QUEUE")
        parser.add_argument("--resume", action="store_true", help="resume the queues instead of pausing them")
        parser.add_argument("--list", action="store_true", help="list the paused queues")
        parser.add_argument("--database", default=None, help="database alias (default: the queue's database)")

    def handle(self, *args, **options):
        using = options["database"]
        if options["list"] or not options["queues"]:
            if not options["list"]:
                raise CommandError("Give the queues to pause (or --resume them), or --list")
            paused = flow.paused_queues(using=using)
            self.stdout.write("Paused: " + ", ".join(paused) if paused else "No queue is paused")
            return
        for queue in options["queues"]:
            try:
                if options["resume"]:
                    changed = flow.resume_queue(queue, using=using)
                    self.stdout.write(f"{queue}: resumed" if changed else f"{queue}: was not paused")
                else:
                    changed = flow.pause_queue(queue, using=using)
                    self.stdout.write(f"{queue}: paused" if changed else f"{queue}: already paused")
            except ConfigurationError as exc:
                raise CommandError(str(exc)) from None
