"""Tasks that try to stop the worker (tests/test_poison.py): each must end in a final state while
the worker goes on."""

import multiprocessing
import os
import signal
import threading
import time

from django.db import connection, transaction

from django_toosimple_q.decorators import register_task

from .models import Record


def unescape(text):
    """Arguments carry the poison as escapes (``\\ud800``): the task makes the real characters."""
    return text.encode("ascii").decode("unicode_escape", "surrogatepass")


@register_task(name="poison_print", retries=2)
def poison_print(text):
    print(unescape(text))
    return "printed"


@register_task(name="poison_raise", retries=0)
def poison_raise(text):
    raise RuntimeError(unescape(text))


@register_task(name="poison_result", retries=3)
def poison_result(kind):
    return make_unstorable(kind)


@register_task(name="poison_result_limited", retries=3, timeout=30)
def poison_result_limited(kind):
    return make_unstorable(kind)


def make_unstorable(kind):
    if kind == "huge_int":
        return 10**5000
    if kind == "cyclic":
        value = [1]
        value.append(value)
        return value
    if kind == "deep":
        value = []
        for _ in range(5000):
            value = [value]
        return value
    if kind == "object":
        return object()
    raise ValueError(kind)


@register_task(name="poison_fail_retry", retries=3, retry_delay=0)
def poison_fail_retry():
    raise RuntimeError("fails, to be retried")


@register_task(name="kill_worker")
def kill_worker():
    """Kills the worker process running it, from the worker itself or from its child process."""
    Record.objects.create(key="kill_worker", pid=os.getpid())
    parent = multiprocessing.parent_process()
    os.kill(os.getppid() if parent is not None else os.getpid(), signal.SIGKILL)
    time.sleep(30)


@register_task(name="exit_process")
def exit_process():
    """Ends the process running it (a crash in native code looks the same to the worker)."""
    Record.objects.create(key="exit_process", pid=os.getpid())
    os._exit(7)


@register_task(name="limited_sleep_then_record", timeout=60)
def limited_sleep_then_record(key, seconds):
    Record.objects.create(key=f"{key}-started", pid=os.getpid())
    time.sleep(seconds)
    Record.objects.create(key=key, pid=os.getpid())
    return key


@register_task(name="leave_transaction_open")
def leave_transaction_open(key, how):
    if how == "autocommit_off":
        transaction.set_autocommit(False)
        Record.objects.create(key=key, pid=os.getpid())
    elif how == "atomic_entered":
        transaction.atomic().__enter__()
        Record.objects.create(key=key, pid=os.getpid())
    elif how == "raw_begin":
        with connection.cursor() as cursor:
            cursor.execute("BEGIN")
        Record.objects.create(key=key, pid=os.getpid())
    return key


@register_task(name="count_records")
def count_records(key):
    """Records how many rows it sees, so a test can tell whether it saw uncommitted ones."""
    seen = Record.objects.count()
    Record.objects.create(key=key, pid=seen)
    return seen


@register_task(name="start_thread")
def start_thread(seconds):
    threading.Thread(target=time.sleep, args=(seconds,), name="left-by-task", daemon=False).start()
    return "started"
