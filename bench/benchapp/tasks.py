"""The tasks the benchmark queues (autodiscovered by the workers like any app's tasks.py)."""

import time

from django_toosimple_q.decorators import register_task


@register_task(name="bench.append_line")
def append_line(path, number):
    """A near no-op: append one line to a file (one write() on a file opened for appending, so
    concurrent workers never interleave lines). The drain counts the lines to check exactly-once."""
    with open(path, "a") as file:
        file.write(f"{number}\n")


@register_task(name="bench.stamp")
def stamp():
    """Return when the task started, so the latency measurement can read it back."""
    return time.time()


@register_task(name="bench.nap")
def nap(path, number, seconds):
    """Sleep, then append a line: a task whose duration, not the queue, bounds the throughput (the
    concurrency-limit measurement: at most ``limit / seconds`` per second)."""
    time.sleep(seconds)
    with open(path, "a") as file:
        file.write(f"{number}\n")


@register_task(name="bench.square")
def square(number):
    """A fan-in member (workflows section): no I/O, a result to collect."""
    return number * number


@register_task(name="bench.collect")
def collect(results):
    """The fan-in callback: when it starts is what the workflows section measures."""
    return {"count": len(results), "started": time.time()}
