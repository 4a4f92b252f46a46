"""Pick-up latency of two checkouts under the same conditions: one idle worker from each (own queue),
samples alternating between them, so that the machine's drift (which moves whole runs of
``run.py --only latency`` by more than the difference sought) falls on both alike.

    python bench/run.py --only latency --db postgresql --keep     # makes the bench database
    python bench/latency_pair.py CHECKOUT_A CHECKOUT_B [SAMPLES]

PostgreSQL only (the bench database ``toosimpleq_bench``, or ``BENCH_DB_NAME``); the executions'
table is emptied first. Run it twice with the checkouts swapped: the queue and the order matter a
little. Prints p50/p90 in ms from the enqueuing commit to the task's start, per checkout.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

a, b = sys.argv[1], sys.argv[2]
samples = int(sys.argv[3]) if len(sys.argv) > 3 else 200
os.environ.update(DJANGO_SETTINGS_MODULE="bench.settings", BENCH_DB="postgresql")
os.environ.setdefault("BENCH_DB_NAME", "toosimpleq_bench")
# This process only queues and reads (this checkout's code, the same for both); each worker runs its own.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import django  # noqa: E402

django.setup()

from bench import harness  # noqa: E402
from bench.benchapp.tasks import stamp  # noqa: E402
from django_toosimple_q.engine import get_engine  # noqa: E402
from django_toosimple_q.models import TaskExec  # noqa: E402

WARMUP = 6
TaskExec.objects.all().delete()
procs = []
for root, queue in ((a, "pair_a"), (b, "pair_b")):
    env = dict(os.environ, PYTHONPATH=root, PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "django", "worker", "--reload", "never", "--queue", queue]
    logs = os.path.join(root, "bench", "results")  # git-ignored: absent from a fresh checkout
    os.makedirs(logs, exist_ok=True)
    with open(os.path.join(logs, f"latency-pair-{queue}.log"), "w") as log:
        procs.append(subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT))
results: dict[str, list[float]] = {"pair_a": [], "pair_b": []}
try:
    harness.wait_listening(2)  # registered, and picking up work by notification
    for index in range(samples + WARMUP):
        queue = "pair_a" if index % 2 == 0 else "pair_b"
        time.sleep(random.uniform(0, 0.05))
        execution = stamp.new_exec((), {})
        execution.queue = queue
        execution = get_engine().insert(execution)
        committed = time.time()
        started = harness.wait_result(execution.pk, committed + 30)
        if started is None:
            raise SystemExit(f"sample {index} ({queue}) did not run within 30 s")
        if index >= WARMUP:
            results[queue].append((float(started) - committed) * 1000)
finally:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait()
for queue, root in (("pair_a", a), ("pair_b", b)):
    values = sorted(results[queue])
    print(f"{root}: n={len(values)} p50 {values[len(values) // 2]:.2f} ms, p90 {values[int(len(values) * 0.9)]:.2f} ms")
