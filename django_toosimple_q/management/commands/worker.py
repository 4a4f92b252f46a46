"""``manage.py worker``: parse the arguments, then hand over to ``Worker``."""

from __future__ import annotations

import argparse
import logging
import math
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ...contrib.mail import load_delivery_task
from ... import validation
from ...worker import Worker, run_process
from ...worker.worker import DEFAULT_GRACE, DEFAULT_TICK, DEFAULT_TIMEOUT
from ...worker.reloader import run_with_reloader


def _seconds(minimum: float, inclusive: bool):
    """An argparse type: a finite number of seconds above ``minimum`` (nan and inf are refused)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
            bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
            raise argparse.ArgumentTypeError(f"{text!r}: give a finite number of seconds {bound}")
        return value

    parse.__name__ = "seconds"
    return parse


def _time_limit(text: str) -> float:
    """``--task_timeout``: as a task's own ``timeout`` (the same bounds, see ``validation``)."""
    value = _seconds(0, inclusive=False)(text)
    if value > validation.MAX_TIMEOUT.total_seconds():
        raise argparse.ArgumentTypeError(
            f"{text!r}: at most {validation.MAX_TIMEOUT.total_seconds():g} seconds ({validation.MAX_TIMEOUT.days} days)"
        )
    return value


def _threads(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of threads from 1 to 1024")
    return value


class Command(BaseCommand):
    help = "Run queued tasks and due schedules until stopped."

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group()
        which.add_argument(
            "--queue",
            action="append",
            default=[],
            help="which queue to run (can be used several times, all queues are run if not provided)",
        )
        which.add_argument(
            "--exclude_queue",
            action="append",
            default=[],
            help="which queue not to run (can be used several times, all queues are run if not provided)",
        )
        parser.add_argument(
            "--tick",
            type=_seconds(0, inclusive=False),
            default=DEFAULT_TICK,
            help="seconds between checks of the database for new tasks/schedules (default: %(default)s)",
        )
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--once", action="store_true", help="run one pass then exit (useful for debugging)")
        mode.add_argument(
            "--until_done",
            action="store_true",
            help="run until no tasks are available then exit (useful for debugging)",
        )
        parser.add_argument(
            "--label",
            default="worker-{pid}",
            help="the name of the worker to help identifying it ('{pid}' will be replaced by the process id)",
        )
        parser.add_argument(
            "--timeout",
            type=_seconds(0, inclusive=False),
            default=DEFAULT_TIMEOUT,
            help="seconds without a heartbeat after which this worker is considered offline and its running "
            "tasks are rescued by other workers (default: %(default)s)",
        )
        parser.add_argument(
            "--grace",
            type=_seconds(0, inclusive=True),
            default=DEFAULT_GRACE,
            help="on SIGTERM/SIGINT, seconds running tasks get to finish before they are interrupted and "
            "replaced (default: %(default)s)",
        )
        parser.add_argument(
            "--task_timeout",
            type=_time_limit,
            default=None,
            help="time limit in seconds for tasks that set none themselves; such tasks run in a child "
            "process that is killed past it (default: no limit)",
        )
        parser.add_argument(
            "--threads",
            type=_threads,
            default=1,
            help="how many tasks this worker runs at once, each in its own thread (default: 1)",
        )
        parser.add_argument(
            "--no_schedules",
            action="store_true",
            help="run tasks but never create executions from schedules",
        )
        parser.add_argument(
            "--reload",
            choices=["always", "never"],
            default=None,
            help="restart when code changes (by default, only if DEBUG=True and started from the command line)",
        )

    def handle(self, *args, **options):
        _show_logs(options["verbosity"])
        # Emails queued through EMAIL_BACKEND are served even without the contrib app installed (as in 1.x).
        load_delivery_task()
        # Autoreload restarts the command line as a child process: from call_command() (a shell, a
        # test, a script) that would run the caller again, so an in-process worker never reloads.
        own_process = getattr(self, "_called_from_command_line", False)
        default_reload = "always" if settings.DEBUG and own_process else "never"
        reload = options["reload"] or default_reload
        if reload == "always" and not own_process:
            raise CommandError("--reload always only works from the command line (manage.py worker)")

        def make_worker() -> Worker:
            try:
                return Worker(
                    queues=options["queue"],
                    excluded_queues=options["exclude_queue"],
                    tick=options["tick"],
                    once=options["once"],
                    until_done=options["until_done"],
                    label=options["label"],
                    timeout=options["timeout"],
                    threads=options["threads"],
                    grace=options["grace"],
                    task_timeout=options["task_timeout"],
                    no_schedules=options["no_schedules"],
                )
            except ValueError as exc:
                raise CommandError(str(exc), returncode=2) from None

        code = run_with_reloader(make_worker) if reload == "always" else run_process(make_worker(), own_process)
        if code:
            sys.exit(code)


def _show_logs(verbosity: int) -> None:
    """Print the worker's log lines unless the project configured logging for them."""
    logger = logging.getLogger("django_toosimple_q")
    if logger.handlers or verbosity == 0:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO)
