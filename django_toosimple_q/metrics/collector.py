"""The figures of the queue as Prometheus metric families, read from the database at each scrape.

Computed from the database rather than counted in each process, so they are the same whichever
host or process serves them, cover every worker (on every host), and survive restarts; see
docs/monitoring.md for the names and what each one means.
"""

from __future__ import annotations

import time
from typing import Iterator

from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from .. import flow, monitoring
from ..limits import parse_rate
from ..engine.totals import BUCKETS, Aggregate
from ..models import TaskExec
from ..registry import tasks_registry

States = TaskExec.States
PREFIX = "toosimpleq"
#: The states of ``toosimpleq_executions``: waiting (not due yet, or due; a workflow step waiting for
#: its upstream steps) and running.
ACTIVE = (States.SLEEPING, States.QUEUED, States.PROCESSING, States.WAITING)


class QueueCollector(Collector):
    """Collects every metric of the queue in database ``using`` (None: the queue's database)."""

    def __init__(self, using: str | None = None):
        self.using = using

    def describe(self) -> list[Metric]:
        return []  # registering must not query the database

    def collect(self) -> Iterator[Metric]:
        began = time.perf_counter()
        now = timezone.now()
        using = self.using
        yield from self._queues(monitoring.queue_stats(now, using))
        yield from self._finished(monitoring.finished_totals(using))
        workers = GaugeMetricFamily(
            f"{PREFIX}_workers",
            "Worker processes that have not recorded an exit, by state: online (heartbeat within its "
            "timeout) or timedout (stopped responding: dead or stuck).",
            labels=["state"],
        )
        for state, count in monitoring.worker_counts(now, using).items():
            workers.add_metric([state.lower()], count)
        yield workers
        lag = GaugeMetricFamily(
            f"{PREFIX}_schedule_lag_seconds",
            "Seconds since the next occurrence of a schedule came due without being queued (0: on time).",
            labels=["schedule"],
        )
        for name, seconds in sorted(monitoring.schedule_lags(now, using).items()):
            lag.add_metric([name], seconds)
        yield lag
        yield from self._flow(flow.flow_status(using=using, now=now))
        yield GaugeMetricFamily(
            f"{PREFIX}_metrics_collect_seconds",
            "How long reading these metrics from the database took.",
            value=time.perf_counter() - began,
        )

    def _queues(self, stats: list[monitoring.QueueStats]) -> Iterator[Metric]:
        executions = GaugeMetricFamily(
            f"{PREFIX}_executions",
            "Executions waiting or running, by queue and state: sleeping (due later, or waiting for a "
            "retry), queued (due, waiting for a worker), processing (running).",
            labels=["queue", "state"],
        )
        ready = GaugeMetricFamily(
            f"{PREFIX}_ready_executions",
            "Executions whose due time has passed and that no worker has taken yet, by queue.",
            labels=["queue"],
        )
        oldest = GaugeMetricFamily(
            f"{PREFIX}_oldest_ready_age_seconds",
            "Seconds the oldest ready execution of a queue has waited past its due time (0: none waits).",
            labels=["queue"],
        )
        by_queue = {s.queue: s for s in stats}
        # The queues of registered tasks always appear (at 0), so that series do not vanish when idle.
        for name in sorted(set(by_queue) | {task.queue_name for task in tasks_registry.values()}):
            queue = by_queue.get(name) or monitoring.QueueStats(name)
            for state in ACTIVE:
                executions.add_metric([name, state.lower()], getattr(queue, state.lower()))
            ready.add_metric([name], queue.ready)
            oldest.add_metric([name], queue.oldest_wait)
        yield from (executions, ready, oldest)

    def _finished(self, totals: list[Aggregate]) -> Iterator[Metric]:
        finished = CounterMetricFamily(
            f"{PREFIX}_executions_finished",
            "Executions that finished, by task and outcome (succeeded, failed, interrupted, invalid, "
            "cancelled, blocked); a failed attempt that was retried counts as failed.",
            labels=["task", "outcome"],
        )
        run = HistogramMetricFamily(
            f"{PREFIX}_execution_run_seconds",
            "Run time of finished executions that started (from start to end), by task.",
            labels=["task"],
        )
        pickup = HistogramMetricFamily(
            f"{PREFIX}_execution_pickup_seconds",
            "Pick-up latency of finished executions that started (from due to start), by task.",
            labels=["task"],
        )
        per_task: dict[str, Aggregate] = {}
        for aggregate in totals:
            finished.add_metric([aggregate.task_name, aggregate.state.lower()], aggregate.executions)
            per_task.setdefault(aggregate.task_name, Aggregate(aggregate.task_name, "")).add(aggregate)
        for task, total in sorted(per_task.items()):
            run.add_metric([task], _buckets(total.run_buckets, total.started), total.run_seconds)
            pickup.add_metric([task], _buckets(total.wait_buckets, total.started), total.wait_seconds)
        yield from (finished, run, pickup)


    def _flow(self, statuses: list[flow.FlowStatus]) -> Iterator[Metric]:
        labels = ["kind", "name"]
        running = GaugeMetricFamily(
            f"{PREFIX}_flow_running",
            "Executions running now in a limited (or paused) queue, or of a limited task.",
            labels=labels,
        )
        concurrency = GaugeMetricFamily(
            f"{PREFIX}_flow_concurrency_limit",
            "The concurrency limit of a queue or task (per key for a task with concurrency_key).",
            labels=labels,
        )
        rate = GaugeMetricFamily(
            f"{PREFIX}_flow_rate_limit_per_second",
            "The rate limit of a queue or task, in starts per second (per key for a task with concurrency_key).",
            labels=labels,
        )
        used = GaugeMetricFamily(
            f"{PREFIX}_flow_rate_used",
            "Starts within the last period of the rate limit (all keys together for a per-key limit).",
            labels=labels,
        )
        paused = GaugeMetricFamily(f"{PREFIX}_queue_paused", "1 while a queue is paused.", labels=["queue"])
        limits = flow_limits_of(statuses)
        for status in statuses:
            key = [status.kind, status.name]
            running.add_metric(key, status.running)
            if status.concurrency is not None:
                concurrency.add_metric(key, status.concurrency)
            if status.rate_limit is not None:
                rate.add_metric(key, limits[(status.kind, status.name)])
                used.add_metric(key, status.rate_used or 0)
            if status.kind == "queue":
                paused.add_metric([status.name], 1 if status.paused else 0)
        yield from (running, concurrency, rate, used, paused)


def flow_limits_of(statuses: list[flow.FlowStatus]) -> dict[tuple[str, str], float]:
    """Starts per second of each rate limit in ``statuses``."""
    rates = {}
    for status in statuses:
        if status.rate_limit is not None:
            rate = parse_rate(status.rate_limit)
            rates[(status.kind, status.name)] = rate.count / rate.period
    return rates


def _buckets(counts: list[int], total: int) -> list[tuple[str, float]]:
    return [*((repr(bound), float(count)) for bound, count in zip(BUCKETS, counts)), ("+Inf", float(total))]


def registry(using: str | None = None) -> CollectorRegistry:
    """A registry holding only the queue's metrics (not this process's own)."""
    collectors = CollectorRegistry(auto_describe=False)
    collectors.register(QueueCollector(using))
    return collectors
