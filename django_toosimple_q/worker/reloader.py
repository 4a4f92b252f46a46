"""Autoreload for the worker, built on Django's own file watcher.

The parent process only restarts children; the child runs the worker in its main thread (so it keeps
its signal handlers) and Django's reloader in a background thread. A code change asks the worker to
stop like a signal would (running tasks finish), and the child exits with ``EXIT_RELOAD`` so that the
parent starts a fresh one. Any other exit code is passed through: the exit status stays right.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Callable

from django.utils import autoreload

from .isolation import die_with_parent
from .process import run_process
from .worker import EXIT_RELOAD, Worker

logger = logging.getLogger("django_toosimple_q.worker")


def run_with_reloader(make_worker: Callable[[], Worker]) -> int:
    if os.environ.get(autoreload.DJANGO_AUTORELOAD_ENV) == "true":
        return _run_child(make_worker())
    return _run_parent()


def _run_child(worker: Worker) -> int:
    _follow_parent(worker)
    reloader = autoreload.get_reloader()

    def on_change(path) -> None:
        logger.info("%s changed: restarting the worker once running tasks are done", path)
        worker.request_stop(EXIT_RELOAD)
        reloader.stop()

    reloader.notify_file_changed = on_change
    threading.Thread(target=reloader.run, args=(threading.main_thread(),), daemon=True).start()
    return run_process(worker)


def _follow_parent(worker: Worker) -> None:
    """The child stops (gracefully, like on SIGTERM) when its parent is gone, however it went (even
    SIGKILL): the kernel tells us on Linux, and a watchdog thread notices elsewhere."""
    parent = int(os.environ.get(PARENT_ENV, "0")) or os.getppid()
    die_with_parent(signal.SIGTERM)

    def watch() -> None:
        while os.getppid() == parent:
            if worker.stopping.wait(1.0):
                return
        logger.warning("The autoreloading parent process is gone: stopping")
        worker.request_stop(signum=signal.SIGTERM)

    threading.Thread(target=watch, name="toosimpleq-parent-watch", daemon=True).start()


#: Environment variable giving the child the pid of its autoreloading parent.
PARENT_ENV = "TOOSIMPLEQ_RELOADER_PARENT"


def _run_parent() -> int:
    while True:
        env = {**os.environ, autoreload.DJANGO_AUTORELOAD_ENV: "true", PARENT_ENV: str(os.getpid())}
        # Its own session, so that a terminal's Ctrl-C reaches the child once, through us.
        child = subprocess.Popen(autoreload.get_child_arguments(), env=env, start_new_session=True)
        forward = lambda signum, frame: child.send_signal(signum)  # noqa: E731
        previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            code = child.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        if code != EXIT_RELOAD:
            return code if code >= 0 else 128 - code
        sys.stdout.flush()
