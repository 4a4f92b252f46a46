"""The measurements. Each returns a JSON-able dict; ``run.py`` turns them into the table.

Imported only after ``django.setup()``.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.db.models import Max, Min
from django.utils import timezone

from django_toosimple_q.models import TaskExec

from . import harness
from .benchapp.tasks import append_line, collect, nap, square, stamp
from .harness import Workers, log

try:
    from django_toosimple_q.worker.worker import DEFAULT_TICK
except ImportError:  # the constant moved: the bench still runs, the sample timeout is a guess
    DEFAULT_TICK = 10.0

States = TaskExec.States

#: Drains of the smallest backlog whose median rate is the backlog section's reference.
REFERENCE_RUNS = 5
#: (worker processes, threads per process) for the drain.
DRAIN_SHAPES = [(1, 1), (1, 4), (1, 8), (2, 1), (2, 4)]
HISTORY_SHAPES = [(1, 1), (1, 4)]


@dataclass
class Sizes:
    enqueue: int = 5_000
    bulk: int = 50_000
    drain: int = 20_000
    latency_samples: int = 50
    latency_warmup: int = 3
    idle_seconds: float = 60.0
    history: int = 1_000_000
    drain_timeout: float = 900.0
    stop_samples: int = 10
    backlog: tuple[int, ...] = (2_000, 50_000, 1_000_000)
    #: Worker processes (1 thread each) for the backlog.
    backlog_processes: tuple[int, ...] = (1, 2)
    flow_concurrency: int = 5_000
    flow_rate: int = 10_000
    fan_in: int = 10_000

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            enqueue=500, bulk=5_000, drain=2_000, latency_samples=5, latency_warmup=1,
            idle_seconds=25.0, history=100_000, drain_timeout=300.0, stop_samples=3,
            backlog=(2_000, 20_000, 100_000), flow_concurrency=1_000, flow_rate=3_000, fan_in=1_000,
        )  # fmt: skip


class Bench:
    def __init__(self, sizes: Sizes, work_dir: Path):
        self.sizes = sizes
        self.work_dir = work_dir
        self.workers = Workers(work_dir)
        self.vendor = connection.vendor

    def file(self, name: str) -> str:
        path = self.work_dir / name
        path.unlink(missing_ok=True)
        return str(path)

    # -- 1. enqueue --------------------------------------------------------------------------------

    def enqueue(self) -> dict:
        n = self.sizes.enqueue
        path = self.file("enqueue.txt")  # never written: these executions are not run

        def with_queue() -> float:
            start = time.perf_counter()
            for number in range(n):
                append_line.queue(path, number)
            return time.perf_counter() - start

        def with_create() -> float:
            # The same field values queue() writes, through a plain Model.objects.create().
            start = time.perf_counter()
            for number in range(n):
                now = timezone.now()
                TaskExec.objects.create(
                    task_name=append_line.name, args=[path, number], kwargs={}, queue=append_line.queue_name,
                    priority=append_line.priority, due=now, created=now, state=States.QUEUED,
                    retries=append_line.retries, retry_delay=append_line.retry_delay, unique_key=None,
                )  # fmt: skip
            return time.perf_counter() - start

        # Two alternating rounds, best of each: the machine is shared, so keep the less disturbed one.
        times: dict[str, list[float]] = {"queue": [], "create": []}
        for round_number in range(2):
            for name, loop in (("queue", with_queue), ("create", with_create)):
                harness.reset()
                times[name].append(loop())
                log(f"enqueue round {round_number + 1}: {name} x{n}: {n / times[name][-1]:,.0f}/s")
        queue_rate = n / min(times["queue"])
        create_rate = n / min(times["create"])

        harness.reset()
        start = time.perf_counter()
        method = harness.enqueue_lines(path, self.sizes.bulk)
        bulk_seconds = time.perf_counter() - start
        stored = TaskExec.objects.filter(state=States.QUEUED).count()
        log(f"bulk enqueue x{self.sizes.bulk} ({method}): {self.sizes.bulk / bulk_seconds:,.0f}/s")
        harness.reset()
        return {
            "count": n,
            "queue_per_s": queue_rate,
            "create_per_s": create_rate,
            "ratio": queue_rate / create_rate,
            "queue_seconds": times["queue"],
            "create_seconds": times["create"],
            "bulk_count": self.sizes.bulk,
            "bulk_method": method,
            "bulk_seconds": bulk_seconds,
            "bulk_per_s": self.sizes.bulk / bulk_seconds,
            "bulk_stored_ok": stored == self.sizes.bulk,
        }

    # -- 2. drain ----------------------------------------------------------------------------------

    def drain(self) -> dict:
        results = {}
        for processes, threads in DRAIN_SHAPES:
            results[f"{processes}x{threads}"] = self.drain_once(processes, threads)
        return results

    def drain_once(self, processes: int, threads: int, history: int = 0, env: dict[str, str] | None = None) -> dict:
        """Queue ``sizes.drain`` tasks (after ``history`` finished rows, if any), then time workers
        started with ``--until_done`` until they all exit."""
        n = self.sizes.drain
        harness.reset()
        path = self.file(f"drain-{processes}x{threads}.txt")
        if history:
            harness.insert_history(history, path)
        min_id = TaskExec.objects.order_by("-id").values_list("id", flat=True).first() or 0
        harness.enqueue_lines(path, n)
        connection.close()  # our connection stays out of the way (SQLite locks, PostgreSQL stats)

        start = time.time()
        for index in range(processes):
            self.workers.start("--until_done", "--threads", str(threads), "--label", f"bench-{index}-{{pid}}", env=env)
        finished = self.workers.wait_all(self.sizes.drain_timeout)
        wall = time.time() - start
        codes = self.workers.exit_codes()
        tail = self.workers.tail() if not finished or any(codes) else ""
        self.workers.stop_all()

        first, last = harness.drain_window(min_id)
        check = harness.check_drain(path, n, min_id)
        done = check["states"].get(States.SUCCEEDED, 0)
        result = {
            "processes": processes,
            "threads": threads,
            "count": n,
            "history_rows": history,
            "timed_out": not finished,
            "exit_codes": codes,
            "wall_seconds": wall,
            "wall_per_s": done / wall,
            "db_seconds": (last - first) if first and last else None,
            "db_per_s": done / (last - first) if first and last and last > first else None,
            "startup_seconds": (first - start) if first else None,
            **check,
        }
        if history:
            result["history_rows_after"] = TaskExec.objects.filter(id__lte=min_id).count()
        label = f"drain {processes} process(es) x {threads} thread(s)" + (f", {history:,} finished rows" if history else "")
        db_rate = f"{result['db_per_s']:,.0f}/s" if result["db_per_s"] else "n/a"
        log(f"{label}: wall {wall:.1f}s = {result['wall_per_s']:,.0f}/s, db {db_rate}, ok={check['ok']}")
        if tail or not check["ok"]:
            log(f"problem: timed_out={not finished} exit codes {codes} states {check['states']} "
                f"lines {check['lines']} duplicated {check['duplicated']}\n{tail}")  # fmt: skip
        return result

    # -- flow control -------------------------------------------------------------------------------

    def flow(self) -> dict:
        """A queue with a concurrency limit of 50, one with a rate limit of 1,000/s (how close to the
        limit they get), and the drain of an unlimited queue by workers that also enforce those limits."""
        return {
            "concurrency": self.flow_concurrency(),
            "rate": self.flow_rate(),
            "unlimited_beside_limits": self.drain_once(2, 4, env=FLOW_ENV),
        }

    def _flow_drain(self, executions: list, processes: int, threads: int, path: str) -> tuple[bool, list[TaskExec]]:
        from django_toosimple_q.engine import get_engine

        harness.reset()
        from django_toosimple_q.models import FlowStart

        FlowStart.objects.all().delete()
        get_engine().insert_many(executions)
        connection.close()
        for index in range(processes):
            self.workers.start("--until_done", "--threads", str(threads), "--tick", "1", "--label", f"flow-{index}-{{pid}}", env=FLOW_ENV)
        finished = self.workers.wait_all(self.sizes.drain_timeout)
        if not finished:
            log(f"flow drain timed out:\n{self.workers.tail()}")
        self.workers.stop_all()
        return finished, list(TaskExec.objects.all())

    def flow_concurrency(self) -> dict:
        n, processes, threads = self.sizes.flow_concurrency, 2, 32
        path = self.file("flow-concurrency.txt")
        executions = [nap.new_exec((path, i, NAP_SECONDS), {}, queue="bench_limited") for i in range(n)]
        finished, rows = self._flow_drain(executions, processes, threads, path)
        check = harness.check_drain(path, n, task_name=nap.name)
        done = [e for e in rows if e.state == States.SUCCEEDED]
        intervals = [(e.started.timestamp(), e.finished.timestamp()) for e in done]
        first = min(a for a, _ in intervals)
        last = max(b for _, b in intervals)
        per_s = len(done) / (last - first)
        ideal = FLOW_CONCURRENCY / NAP_SECONDS
        peak = most_at_once(intervals)
        log(f"flow concurrency {FLOW_CONCURRENCY}: {per_s:,.0f}/s of an ideal {ideal:,.0f}/s, peak {peak} running")
        return {
            "count": n, "task_ms": NAP_SECONDS * 1000, "shape": f"{processes} proc x {threads} thr",
            "per_s": per_s, "ideal_per_s": ideal, "of_ideal": per_s / ideal, "peak": peak,
            "ok": check["ok"] and finished and peak <= FLOW_CONCURRENCY, "timed_out": not finished,
        }  # fmt: skip

    def flow_rate(self) -> dict:
        from django_toosimple_q.models import FlowStart

        n, processes, threads = self.sizes.flow_rate, 2, 4
        path = self.file("flow-rate.txt")
        executions = [append_line.new_exec((path, i), {}, queue="bench_rated") for i in range(n)]
        finished, rows = self._flow_drain(executions, processes, threads, path)
        check = harness.check_drain(path, n)
        times = sorted(at.timestamp() for at in FlowStart.objects.filter(scope="queue:bench_rated").values_list("at", flat=True))
        most = most_in_window(times, 1.0) if times else 0
        # The first FLOW_RATE start at once (nothing started in the last second), then FLOW_RATE per second.
        span = times[-1] - times[0] if len(times) > 1 else None
        per_s = (len(times) - FLOW_RATE) / span if span and len(times) > FLOW_RATE else None
        log(f"flow rate {FLOW_RATE}/s: {per_s or 0:,.0f} starts/s after the first second's {FLOW_RATE}, most in 1 s {most}")
        return {
            "count": n, "shape": f"{processes} proc x {threads} thr", "per_s": per_s, "most_in_period": most,
            "starts_recorded": len(times),
            "ok": check["ok"] and finished and most <= FLOW_RATE and len(times) == n, "timed_out": not finished,
        }  # fmt: skip

    # -- 3. latency --------------------------------------------------------------------------------

    def latency(self) -> dict:
        results = {"default": self.latency_at(None)}
        results["tick_1"] = self.latency_at(1.0)
        return results

    def latency_at(self, tick: float | None) -> dict:
        """One idle worker; queue one ``stamp`` at a time and compare its start with our commit."""
        harness.reset()
        args = ["--tick", str(tick)] if tick is not None else []
        self.workers.start(*args)
        poll = tick or DEFAULT_TICK
        sample_timeout = 3 * poll + 5
        samples: list[float] = []
        timeouts = 0
        try:
            harness.wait_registered(1)
            time.sleep(0.5)
            total = self.sizes.latency_warmup + self.sizes.latency_samples
            previous = 0.0
            for index in range(total):
                # Arrive at a random moment of the worker's poll cycle: a polling worker starts its
                # wait when it picks up the previous task, so enqueuing right after that would always
                # measure a whole tick. When pickup is fast (woken by the database), wait briefly.
                time.sleep(random.uniform(0, poll if previous > 0.02 else 0.05))
                try:
                    execution = stamp.queue()
                    committed = time.time()
                    started = harness.wait_result(execution.pk, committed + sample_timeout)
                except (OperationalError, InterfaceError) as exc:  # a shared server restarting
                    log(f"latency sample {index}: database error, skipped: {str(exc).strip()}")
                    connection.close()
                    time.sleep(2)
                    continue
                if started is None:
                    timeouts += 1
                    log(f"latency sample {index} not run within {sample_timeout:g}s")
                    if timeouts >= 3:
                        break
                    continue
                previous = started - committed
                if index >= self.sizes.latency_warmup:
                    samples.append(previous * 1000)
        finally:
            tail = self.workers.tail() if timeouts else ""
            self.workers.stop_all()
        result = {"tick": tick if tick is not None else f"default ({DEFAULT_TICK:g})", "samples": len(samples),
                  "timeouts": timeouts, **summarize_ms(samples)}  # fmt: skip
        log(f"latency tick={result['tick']}: {describe_ms(result)}")
        if tail:
            log(tail)
        return result

    # -- 4. idle cost ------------------------------------------------------------------------------

    def idle(self) -> dict:
        """One idle worker at the default tick for ``idle_seconds``: statements it sends (counted in
        the worker) and, on PostgreSQL, transactions of the bench database (pg_stat_database, read
        from a connection to another database so that reading adds nothing)."""
        harness.reset()
        sql_log = Path(self.file("idle-sql.log"))
        proc = self.workers.start(env={"BENCH_COUNT_SQL": str(sql_log)})
        readings: list[tuple[float, int]] = []
        try:
            harness.wait_registered(1)
            connection.close()
            time.sleep(12)  # past the start-up statements and their stats (an idle backend publishes within 10 s)
            start = time.time()
            while time.time() < start + self.sizes.idle_seconds:
                value = self._xacts()
                if value is not None:
                    readings.append((time.time(), value))
                time.sleep(0.5)
            end = time.time()
        finally:
            self.workers.stop_all()
        kinds: Counter[str] = Counter()
        statements = 0
        for line in sql_log.read_text().splitlines():
            stamp_text, pid, sql = line.split(" ", 2)
            if int(pid) == proc.pid and start <= float(stamp_text) <= end:
                statements += 1
                kinds[statement_kind(sql)] += 1
        result = {
            "seconds": end - start,
            "statements": statements,
            "statements_per_s": statements / (end - start),
            "statement_kinds": dict(kinds.most_common()),
        }
        if readings:
            result.update(xact_rate(readings))
        log(f"idle: {result['statements_per_s']:.2f} statements/s"
            + (f", {result['transactions_per_s']:.2f} transactions/s ({result['transactions_method']})"
               if "transactions_per_s" in result else ""))  # fmt: skip
        for kind, count in kinds.most_common():
            log(f"    {count:5d}  {kind}")
        return result

    def _xacts(self) -> int | None:
        if self.vendor != "postgresql":
            return None
        import psycopg

        conf = settings.DATABASES["default"]
        with psycopg.connect(
            host=conf["HOST"], port=conf["PORT"], user=conf["USER"], password=conf["PASSWORD"] or None,
            dbname="postgres", autocommit=True,
        ) as conn:  # fmt: skip
            conn.execute("SELECT pg_stat_clear_snapshot()")
            row = conn.execute(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", [conf["NAME"]]
            ).fetchone()
        return int(row[0])

    # -- 5. stop -----------------------------------------------------------------------------------

    def stop(self) -> dict:
        """An idle worker at the default tick gets SIGTERM: milliseconds until it has recorded its exit
        (the ``stopped`` time its row gets last) and until the process has ended."""
        import signal

        from django_toosimple_q.models import WorkerStatus

        proven_field = any(f.name == "receives_notifications" for f in WorkerStatus._meta.fields)
        recorded: list[float] = []
        exited: list[float] = []
        for _ in range(self.sizes.stop_samples):
            harness.reset()
            proc = self.workers.start()
            try:
                harness.wait_registered(1)
                # Idle for real: past the start-up, and on PostgreSQL with its listener trusted (when
                # the code under test records that).
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and self.vendor == "postgresql" and proven_field:
                    if WorkerStatus.objects.filter(receives_notifications=True).exists():
                        break
                    time.sleep(0.05)
                time.sleep(1.0)
                sent = time.time()
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
                exited.append((time.time() - sent) * 1000)
                stopped = WorkerStatus.objects.values_list("stopped", flat=True).get()
                recorded.append((stopped.timestamp() - sent) * 1000)
            finally:
                self.workers.stop_all()
        result = {"recorded": summarize_ms(recorded), "exited": summarize_ms(exited)}
        log(f"stop: exit recorded {describe_ms(result['recorded'])}; process ended {describe_ms(result['exited'])}")
        return result

    # -- 6. history --------------------------------------------------------------------------------

    def history(self) -> dict:
        """The drain again with ``sizes.history`` finished rows in the table; ratio to the empty table,
        measured right before (on a shared machine, the drain section's figure may be minutes old)."""
        results = {"history_rows": self.sizes.history}
        for processes, threads in HISTORY_SHAPES:
            key = f"{processes}x{threads}"
            baseline = self.drain_once(processes, threads)
            loaded = self.drain_once(processes, threads, history=self.sizes.history)
            results[key] = {
                "empty": baseline,
                "loaded": loaded,
                "ratio_wall": ratio(loaded["wall_per_s"], baseline["wall_per_s"]),
                "ratio_db": ratio(loaded["db_per_s"], baseline["db_per_s"]),
            }
        harness.reset()
        return results

    # -- 7. backlog --------------------------------------------------------------------------------

    def backlog(self) -> dict:
        """The drain rate against the size of the backlog: N executions already QUEUED (inserted in
        SQL, untimed), then P worker processes (1 thread each) ``--until_done``; the steady rate is
        taken from the first start to the last start, and compared with the smallest N."""
        results: dict = {"sizes": list(self.sizes.backlog)}
        smallest = self.sizes.backlog[0]
        for processes in self.sizes.backlog_processes:
            runs = {}
            for n in self.sizes.backlog:
                runs[str(n)] = self.backlog_once(processes, n)
            # The smallest backlog drains in a fraction of a second, where one worker starting a few
            # ms before the other, or one stall, moves the rate by a quarter: the reference is the
            # median of REFERENCE_RUNS drains (all kept in "rates").
            reference = [runs[str(smallest)]] + [self.backlog_once(processes, smallest) for _ in range(REFERENCE_RUNS - 1)]
            rates = [run["steady_per_s"] for run in reference]
            runs[str(smallest)] = {
                **reference[0],
                "rates": rates,
                "steady_per_s": statistics.median(rate or 0.0 for rate in rates),
                "ok": all(run["ok"] for run in reference),
                "timed_out": any(run["timed_out"] for run in reference),
            }
            base = runs[str(smallest)]["steady_per_s"]
            for run in runs.values():
                run["ratio"] = ratio(run["steady_per_s"], base)
            results[f"{processes}x1"] = runs
        harness.reset()
        return results

    def backlog_once(self, processes: int, n: int) -> dict:
        harness.reset()
        path = self.file(f"backlog-{processes}-{n}.txt")
        started_fill = time.perf_counter()
        harness.fill_queued(n, path)
        fill_seconds = time.perf_counter() - started_fill
        connection.close()
        start = time.time()
        for index in range(processes):
            self.workers.start("--until_done", "--threads", "1", "--label", f"backlog-{index}-{{pid}}")
        finished = self.workers.wait_all(max(self.sizes.drain_timeout, n / 200))
        wall = time.time() - start
        codes = self.workers.exit_codes()
        tail = self.workers.tail() if not finished or any(codes) else ""
        self.workers.stop_all()
        from django.db.models import Max, Min

        agg = TaskExec.objects.filter(task_name=append_line.name).aggregate(first=Min("started"), last=Max("started"))
        first, last = (agg["first"].timestamp() if agg["first"] else None), (agg["last"].timestamp() if agg["last"] else None)
        check = harness.check_drain(path, n)
        done = check["states"].get(States.SUCCEEDED, 0)
        steady = (done - 1) / (last - first) if first and last and last > first else None
        result = {
            "processes": processes, "count": n, "fill_seconds": fill_seconds, "timed_out": not finished,
            "exit_codes": codes, "wall_seconds": wall, "wall_per_s": done / wall,
            "steady_seconds": (last - first) if first and last else None, "steady_per_s": steady, **check,
        }  # fmt: skip
        rate = f"{steady:,.0f}/s" if steady else "n/a"
        log(f"backlog {n:,} x {processes} process(es): fill {fill_seconds:.1f}s, steady {rate}, "
            f"wall {wall:.1f}s, ok={check['ok']}")  # fmt: skip
        if tail or not check["ok"]:
            log(f"problem: timed_out={not finished} exit codes {codes} states {check['states']} "
                f"lines {check['lines']} duplicated {check['duplicated']}\n{tail}")  # fmt: skip
        return result


    # -- 8. workflows -------------------------------------------------------------------------------

    def workflows(self) -> dict:
        """A fan-in of ``sizes.fan_in`` members against as many independent tasks, in the same run, with
        the same workers (WORKFLOW_SHAPE) already running and idle: the time from queuing the workflow
        to the start of its callback, and the cost per member (queue time; run time from the first start
        to the last finish) against the cost per independent task."""
        from django_toosimple_q.workflows import chain, group

        n = self.sizes.fan_in
        processes, threads = WORKFLOW_SHAPE
        results: dict = {"count": n, "processes": processes, "threads": threads}
        harness.reset()
        for index in range(processes):
            self.workers.start("--threads", str(threads), "--label", f"wf-{index}-{{pid}}")
        try:
            harness.wait_registered(processes)
            time.sleep(2)  # their listeners are proven (PostgreSQL), they idle

            start = time.perf_counter()
            independent = square.queue_many([(i,) for i in range(n)])
            queue_seconds = time.perf_counter() - start
            ids = [e.pk for e in independent]
            results["independent"] = {"queue_seconds": queue_seconds, **self._await_squares(ids)}

            queued_at = time.time()
            start = time.perf_counter()
            callback = chain(group(square.s(i) for i in range(n)), collect.s()).queue()
            queue_seconds = time.perf_counter() - start
            final = callback.wait(timeout=self.sizes.drain_timeout)
            members = list(TaskExec.objects.filter(workflow_id=callback.workflow_id, task_name=square.name).values_list("pk", flat=True))
            drained = self._await_squares(members)
        finally:
            self.workers.stop_all()
        ok = final.state == States.SUCCEEDED and final.result["count"] == n
        callback_start = final.result["started"] if ok else None
        last_member = drained.pop("last_finished")
        results["independent"].pop("last_finished")
        results["fan_in"] = {
            "queue_seconds": queue_seconds,
            **drained,
            "ok": ok and drained["ok"],
            "queue_to_callback_seconds": (callback_start - queued_at) if callback_start else None,
            "last_member_to_callback_ms": (callback_start - last_member) * 1000 if callback_start and last_member else None,
        }
        independent, fan_in = results["independent"], results["fan_in"]
        for kind in ("queue", "run"):
            if independent.get(f"{kind}_seconds") and fan_in.get(f"{kind}_seconds"):
                results[f"{kind}_cost_ratio"] = fan_in[f"{kind}_seconds"] / independent[f"{kind}_seconds"]
                results[f"{kind}_us_per_member"] = fan_in[f"{kind}_seconds"] / n * 1e6
                results[f"{kind}_us_per_task"] = independent[f"{kind}_seconds"] / n * 1e6
        log(
            f"workflows: {n:,} members, queue {fan_in['queue_seconds']:.2f}s (independent {independent['queue_seconds']:.2f}s), "
            f"run {fan_in.get('run_seconds') or 0:.2f}s (independent {independent.get('run_seconds') or 0:.2f}s), "
            f"queue->callback {fan_in['queue_to_callback_seconds'] or 0:.2f}s, ok={fan_in['ok']}"
        )
        harness.reset()
        return results

    def _await_squares(self, ids: list[int]) -> dict:
        """Wait until the executions ``ids`` (and their replacements) have finished; their run window."""
        deadline = time.monotonic() + self.sizes.drain_timeout
        rows = TaskExec.objects.filter(pk__in=ids)
        while rows.filter(state__in=[*States.not_started(), States.PROCESSING]).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        agg = rows.aggregate(first=Min("started"), last=Max("finished"))
        states = dict(Counter(rows.values_list("state", flat=True)))
        run = (agg["last"] - agg["first"]).total_seconds() if agg["first"] and agg["last"] else None
        return {
            "run_seconds": run, "states": states, "timed_out": time.monotonic() >= deadline,
            "ok": states.get(States.SUCCEEDED, 0) == len(ids),
            "last_finished": agg["last"].timestamp() if agg["last"] else None,
        }  # fmt: skip


#: The limits of bench/settings.py under BENCH_FLOW.
FLOW_ENV = {"BENCH_FLOW": "1"}
FLOW_CONCURRENCY = 50
FLOW_RATE = 1000
NAP_SECONDS = 0.05


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def most_in_window(times: list[float], period: float) -> int:
    """The most starts in any half-open window ``(t - period, t]``."""
    most, first = 0, 0
    for last, at in enumerate(times):
        while times[first] <= at - period:
            first += 1
        most = max(most, last - first + 1)
    return most


#: (worker processes, threads per process) for the workflows section.
WORKFLOW_SHAPE = (2, 4)


def xact_rate(readings: list[tuple[float, int]]) -> dict:
    """Transactions per second from periodic readings of pg_stat_database.

    A PostgreSQL 15 backend publishes its counts at most once a second, and an idle one may keep
    them pending for up to 10 s, so the counter moves in jumps that lag the transactions. Between
    the first and the last jump seen, whole batches were published: that span gives the rate. With
    fewer than two jumps, fall back to the change over the whole window (an estimate).
    """
    jumps = [(t, v) for (t, v), (_, before) in zip(readings[1:], readings) if v != before]
    naive = (readings[-1][1] - readings[0][1]) / max(readings[-1][0] - readings[0][0], 1e-9)
    result = {"transactions": readings[-1][1] - readings[0][1], "transactions_per_s_window": naive}
    if len(jumps) >= 2 and jumps[-1][0] - jumps[0][0] >= 5:
        (t1, v1), (t2, v2) = jumps[0], jumps[-1]
        result.update(transactions_per_s=(v2 - v1) / (t2 - t1), transactions_method=f"between stats flushes, {t2 - t1:.0f}s")
    else:
        result.update(transactions_per_s=naive, transactions_method="whole window")
    return result


def statement_kind(sql: str) -> str:
    """``UPDATE toosimpleq_taskexec``, ``SELECT toosimpleq_workerstatus``...: the verb and first table."""
    words = sql.replace('"', "").split()
    verb = words[0].upper() if words else "?"
    for keyword in ("FROM", "UPDATE", "INTO"):
        if keyword in words[1:] or (verb == keyword and len(words) > 1):
            index = 0 if verb == keyword else words.index(keyword, 1)
            kind = f"{verb} {words[index + 1]}" if index + 1 < len(words) else verb
            return kind + (" ... RETURNING" if "RETURNING" in words else "")
    return verb


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def summarize_ms(samples: list[float]) -> dict:
    if not samples:
        return {"p50_ms": None, "p95_ms": None, "max_ms": None}
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {"p50_ms": statistics.median(ordered), "p95_ms": p95, "max_ms": ordered[-1], "all_ms": samples}


def describe_ms(result: dict) -> str:
    if result.get("p50_ms") is None:
        return "no samples"
    return f"p50 {result['p50_ms']:.1f} ms, p95 {result['p95_ms']:.1f} ms, max {result['max_ms']:.1f} ms"


def work_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="toosimpleq-bench-"))
