"""The chaos test: workers killed, terminated and restarted, and PostgreSQL restarted, while 1,000
tasks run. Afterwards every task has succeeded exactly once at the end of its replacement chain, and
every duplicate run belongs to an execution that was interrupted.

PostgreSQL only. It restarts the server once when TOOSIMPLEQ_TEST_RESTART_POSTGRESQL=1 (CI sets it;
it needs root and pg_ctlcluster). About 1-2 minutes per run;
bounded: the chaos lasts ``CHAOS_SECONDS`` and the final drain at most ``DRAIN_SECONDS``.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter

import pytest

from django_toosimple_q.models import TaskExec, WorkerStatus
from django_toosimple_q.registry import tasks_registry
from tests.app.models import Record

from .conftest import can_restart_postgresql, reconnect, restart_postgresql, wait_for

States = TaskExec.States
TASKS = 1000
CHAOS_SECONDS = float(os.environ.get("TOOSIMPLEQ_CHAOS_SECONDS", "60"))
DRAIN_SECONDS = 180
WORKER_ARGS = ["--tick", "0.5", "--timeout", "5", "--grace", "1"]


@pytest.mark.parametrize("threads", [1, 4])
def test_chaos(workers, vendor, threads):
    if vendor != "postgresql":
        pytest.skip("the chaos test runs against PostgreSQL")
    restart_pg = can_restart_postgresql()
    task = tasks_registry["chaos_record"]
    # Each task takes long enough that the 1,000 of them keep the workers busy for most of the chaos
    # (about 40 s with 3 workers, whatever the thread count), so kills and the restart hit running tasks.
    task.queue_many([(f"k{i}", 120 * threads) for i in range(TASKS)])

    rng = random.Random(threads)
    args = [*WORKER_ARGS, "--threads", str(threads)]
    # Kills here are random, not caused by a task: the crash budget (TOOSIMPLEQ_MAX_CRASHES, tested in
    # test_poison.py) is raised so that an execution held by three killed workers still completes.
    env = {"TOOSIMPLEQ_TEST_MAX_CRASHES": "1000"}
    running = [workers.start(*args, env_extra=env) for _ in range(3)]
    counts = Counter()
    deadline = time.monotonic() + CHAOS_SECONDS
    restart_at = time.monotonic() + CHAOS_SECONDS / 2
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.5, 2.5))
        if restart_pg and time.monotonic() > restart_at:
            restart_postgresql()
            counts["postgresql restarts"] += 1
            restart_pg = False
            continue
        victim = rng.choice(running)
        running.remove(victim)
        if rng.random() < 0.5:
            victim.send_signal(signal.SIGKILL)
            counts["killed"] += 1
        else:
            victim.send_signal(signal.SIGTERM)
            counts["terminated"] += 1
        running.append(workers.start(*args, env_extra=env))

    reconnect()

    def drained() -> bool:
        try:
            return not TaskExec.objects.filter(state__in=[States.QUEUED, States.SLEEPING, States.PROCESSING]).exists()
        except Exception:  # noqa: BLE001
            reconnect()
            return False

    wait_for(drained, timeout=DRAIN_SECONDS, interval=0.5, message="every execution to finish")
    for proc in running:
        proc.send_signal(signal.SIGTERM)
    outputs = [proc.communicate(timeout=60)[0] for proc in workers.procs]

    executions = list(TaskExec.objects.all())
    by_key: dict[str, list[TaskExec]] = {}
    for execution in executions:
        by_key.setdefault(execution.args[0], []).append(execution)  # args: [key, milliseconds]
    runs = Counter(Record.objects.values_list("key", flat=True))
    counts["interrupted"] = sum(e.state == States.INTERRUPTED for e in executions)
    counts["replaced"] = sum(e.replaced_by_id is not None for e in executions)
    counts["failed (then retried)"] = sum(e.state == States.FAILED for e in executions)
    counts["duplicates"] = sum(n - 1 for n in runs.values() if n > 1)
    counts["executions"] = len(executions)
    print(f"\nchaos (threads={threads}): " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))

    assert len(by_key) == TASKS
    for key, chain in by_key.items():
        succeeded = [e for e in chain if e.state == States.SUCCEEDED]
        assert len(succeeded) == 1, (key, [(e.pk, e.state) for e in chain])
        # The success is the end of the chain: nothing replaced it.
        assert succeeded[0].replaced_by_id is None
        ends = [e for e in chain if e.replaced_by_id is None]
        assert ends == succeeded, (key, [(e.pk, e.state, e.replaced_by_id) for e in chain])
        assert runs[key] >= 1
        if runs[key] > 1:
            assert any(e.state == States.INTERRUPTED for e in chain), (key, runs[key])
    assert not WorkerStatus.objects.filter(exit_code=1).exists()
    for output in outputs:
        assert "crashed" not in output and "CRITICAL" not in output, output[-3000:]
