"""What tracing adds to ``queue()``: the same calls with ``tracing.ENABLED`` False (the extra absent),
with opentelemetry-api and no SDK (non-recording spans), and with the SDK recording to memory.

    python bench/tracing_overhead.py [--calls 3000] [--db sqlite|postgresql]

Median of 5 rounds of ``--calls`` ``queue()`` calls each, in microseconds per call, on a scratch
database (SQLite: a file in the temp folder; PostgreSQL: ``toosimpleq_bench_tracing``); then the
tracing wrapper alone (what ``insert_many`` runs around the INSERT), without the database's noise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    os.environ["TOOSIMPLEQ_TEST_DB"] = args.db
    if args.db == "sqlite":
        os.environ["TOOSIMPLEQ_TEST_DB_NAME"] = os.path.join(tempfile.gettempdir(), "toosimpleq_bench_tracing.sqlite3")
    else:
        import psycopg

        os.environ["TOOSIMPLEQ_TEST_DB_NAME"] = "toosimpleq_bench_tracing"
        with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'toosimpleq_bench_tracing'").fetchone():
                conn.execute('CREATE DATABASE "toosimpleq_bench_tracing"')
    import django

    django.setup()
    from django.core.management import call_command
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import NoOpTracer

    from django_toosimple_q import tracing
    from django_toosimple_q.models import TaskExec
    from tests.app.tasks import add

    call_command("migrate", verbosity=0)
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    recording = provider.get_tracer("bench")
    no_sdk = NoOpTracer()
    modes = {
        "extra absent (ENABLED False)": (False, None),
        "API, no SDK (non-recording)": (True, no_sdk),
        "SDK, recording to memory": (True, recording),
    }
    results: dict[str, list[float]] = {name: [] for name in modes}
    for _round in range(5):
        for name, (enabled, tracer) in modes.items():  # interleaved: the machine's load hits all alike
            tracing.ENABLED = enabled
            tracing._TRACER = tracer
            TaskExec.objects.all().delete()
            exporter.clear()
            started = time.perf_counter()
            for i in range(args.calls):
                add.queue(i, i)
            results[name].append((time.perf_counter() - started) / args.calls * 1e6)
    print(f"queue() on {args.db}, {args.calls} calls x 5 rounds; load average {os.getloadavg()}")
    for name, samples in results.items():
        print(f"  {name:<30} median {statistics.median(samples):8.1f} us/call  (min {min(samples):.1f})")

    # The work tracing adds to one queue() alone, without the database's noise: what insert_many does
    # around the INSERT (the flag; or the span, the context injected into the row, the id attribute).
    print(f"the wrapper alone, {args.calls * 10} times; load average {os.getloadavg()}")
    execution = add.new_exec((1, 1), {})
    execution.pk = 1
    for name, (enabled, tracer) in modes.items():
        tracing.ENABLED = enabled
        tracing._TRACER = tracer
        samples = []
        for _round in range(5):
            exporter.clear()
            started = time.perf_counter()
            for _ in range(args.calls * 10):
                execution.trace_context = None
                if tracing.ENABLED:
                    with tracing.queuing([execution]) as span:
                        tracing.queued(span, [execution])
            samples.append((time.perf_counter() - started) / (args.calls * 10) * 1e6)
        print(f"  {name:<30} median {statistics.median(samples):8.2f} us/call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
