"""Tasks the test suite queues; autodiscovered like any app's tasks.py (also by worker subprocesses)."""

import asyncio
import os
import pickle
import time

import django

from django_toosimple_q import serialization, validation
from django_toosimple_q.decorators import register_task

from .models import Record

if os.environ.get("TOOSIMPLEQ_TEST_FLOW"):
    from . import flow_tasks  # noqa: F401 - tasks with flow limits (tests/test_flow_control.py)

if django.VERSION >= (6, 0):
    # Django's own @task functions, run by our worker through django_toosimple_q.backends.QueueBackend.
    from . import django_tasks  # noqa: F401


@register_task(name="record")
def record(key):
    Record.objects.create(key=key, pid=os.getpid())
    return key


@register_task(name="record_with_retries", retries=5, retry_delay=0.1)
def record_with_retries(key):
    """Like ``record``, retried when it fails (e.g. its connection was dropped under it)."""
    Record.objects.create(key=key, pid=os.getpid())
    return key


@register_task(name="sleep_then_record")
def sleep_then_record(key, seconds):
    time.sleep(seconds)
    Record.objects.create(key=key, pid=os.getpid())
    return key


@register_task(name="add")
def add(a, b):
    return a + b


@register_task(name="fail", retries=0)
def fail(message="boom"):
    raise ValueError(message)


@register_task(name="echo")
def echo(value):
    print("echo:", value)
    return value


@register_task(name="sleepy_limited", timeout=1, retries=1, retry_delay=0)
def sleepy_limited(seconds):
    time.sleep(seconds)
    return "woke up"


@register_task(name="exits_process", timeout=30)
def exits_process():
    os._exit(9)


@register_task(name="async_record")
async def async_record(key):
    await asyncio.sleep(0.01)
    await Record.objects.acreate(key=key, pid=os.getpid())
    return key


@register_task(name="async_record_limited", timeout=30)
async def async_record_limited(key):
    """Time-limited, so it runs in the worker's child process."""
    await Record.objects.acreate(key=key, pid=os.getpid())
    return key


if os.environ.get("TOOSIMPLEQ_TEST_NEW_VERSION"):
    # Registered only by workers started as "the new version" in rolling-deploy tests.
    @register_task(name="only_in_new_version")
    def only_in_new_version():
        return "new"


@register_task(name="chaos_record", retries=10, retry_delay=0.2)
def chaos_record(key, milliseconds=0):
    """Records each run, then works a while (so that kills land while tasks run)."""
    Record.objects.create(key=key, pid=os.getpid())
    time.sleep(milliseconds / 1000)
    return key


# Worker subprocesses of tests/test_schedules.py get their schedules from tests/app/schedules.py,
# only when asked, so that other tests' workers never see them.
if os.environ.get("TOOSIMPLEQ_TEST_SCHEDULES"):
    from . import schedules  # noqa: E402, F401


# Tasks that try to stop the worker (tests/test_poison.py).
from . import poison_tasks  # noqa: E402, F401


# -- input validation (tests/test_input_validation.py, tests/test_properties.py) ------------------------

# The longest retry delay allowed with retries=2: the second retry waits exactly the 100-year maximum.
LONGEST_RETRY_DELAY = validation.MAX_RETRY_WAIT.total_seconds() / 2
# The widest queue name: 255 characters, some of them outside the Basic Multilingual Plane.
WIDEST_QUEUE = "é🚀" + "q" * 253


@register_task(name="fails_with_longest_retries", retries=2, retry_delay=LONGEST_RETRY_DELAY)
def fails_with_longest_retries():
    raise RuntimeError("fails, to be retried after the longest delay allowed")


@register_task(name="at_the_limits", priority=validation.PRIORITY_MAX, queue=WIDEST_QUEUE, timeout=7 * 24 * 3600)
def at_the_limits(value):
    return value


def _self_containing_list():
    cycle = []
    cycle.append(cycle)
    return cycle


def _nested_list(depth):
    value = []
    for _ in range(depth - 1):
        value = [value]
    return value


# What ``edge_result(kind)`` returns: results at the edge of what can be stored (those beyond are made
# by ``poison_tasks.make_unstorable``).
EDGE_RESULTS = {
    "lone_surrogate": lambda: "report-\udcff.txt",
    "nul": lambda: "a\x00b",
    "widest_int": lambda: 10**3999,
    "deepest": lambda: _nested_list(serialization.MAX_DEPTH),
}


@register_task(name="identity")
def identity(value):
    """Returns its argument (without printing it, unlike ``echo``)."""
    return value


@register_task(name="edge_result", retries=3)
def edge_result(kind):
    return EDGE_RESULTS[kind]()


@register_task(name="return_pickled", retries=2)
def return_pickled(path, index):
    """Returns value ``index`` of the list pickled at ``path`` (the test's generated values)."""
    with open(path, "rb") as file:
        return pickle.load(file)[index]


@register_task(name="traced_work")
def traced_work(key):
    """Makes a span of its own: a child of the execution's span (tests/test_tracing.py)."""
    from opentelemetry import trace

    with trace.get_tracer("tests").start_as_current_span("inside the task"):
        Record.objects.create(key=key, pid=os.getpid())
    return key


# -- workflows (tests/test_workflows.py) ---------------------------------------------------------------


@register_task(name="wf_double")
def wf_double(value):
    return value * 2


@register_task(name="wf_add")
def wf_add(value, amount):
    return value + amount


@register_task(name="wf_member")
def wf_member(index, milliseconds=0):
    """A fan-in member: records its run (the test checks that the callback starts after the last one)."""
    time.sleep(milliseconds / 1000)
    Record.objects.create(key=f"member-{index}", pid=os.getpid())
    return index * index


@register_task(name="wf_collect")
def wf_collect(results, label="collected"):
    """A fan-in callback: records when it runs and how many runs came before it."""
    Record.objects.create(key=f"callback-{label}", pid=os.getpid())
    return [r if not isinstance(r, Exception) else f"failed:{r.state}" for r in results]


@register_task(name="wf_fail")
def wf_fail(*args):
    raise ValueError("step failed")


@register_task(name="wf_flaky", retries=2, retry_delay=0)
def wf_flaky(value, key):
    """Fails on its first run (recorded), succeeds on the retry."""
    if not Record.objects.filter(key=key).exists():
        Record.objects.create(key=key, pid=os.getpid())
        raise RuntimeError("first run fails")
    return value + 1


@register_task(name="wf_const")
def wf_const(value="constant"):
    return value


@register_task(name="wf_tag")
def wf_tag(received=None, tag=""):
    """A step for the property test of workflow shapes: what it received, tagged."""
    return [tag, received]


@register_task(name="wf_unique", unique=True)
def wf_unique(value, tag=""):
    """A unique task used as a step: records each run (tests/test_workflows.py, unique steps)."""
    Record.objects.create(key=f"unique-{value}{tag}", pid=os.getpid())
    return value * 10


@register_task(name="wf_flaky_unique", unique=True, retries=1, retry_delay=0)
def wf_flaky_unique(value, key):
    """wf_flaky as a unique task: fails on its first run for ``key``, succeeds after. With a ``key``
    ending in "-twin", the first run also queues the identical call for an hour later (a twin that
    waits when the retry is queued)."""
    if not Record.objects.filter(key=key).exists():
        Record.objects.create(key=key, pid=os.getpid())
        if key.endswith("-twin"):
            from django.utils import timezone

            wf_flaky_unique.queue(value, key, due=timezone.now() + timezone.timedelta(hours=1))
        raise RuntimeError("first run fails")
    return value + 1


@register_task(name="wf_unique_hangs", unique=True)
def wf_unique_hangs(value, key):
    """A unique step whose first run queues its twin for an hour later, then hangs until its worker is
    killed; later runs return at once (tests/test_workflows.py: rescue of a unique step)."""
    if not Record.objects.filter(key=key).exists():
        from django.utils import timezone

        Record.objects.create(key=key, pid=os.getpid())
        wf_unique_hangs.queue(value, key, due=timezone.now() + timezone.timedelta(hours=1))
        time.sleep(600)
    return value + 1
