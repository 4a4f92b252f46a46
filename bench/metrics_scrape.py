"""What a Prometheus scrape of the metrics view costs with a large history: 1,000,000 finished rows.

    python bench/metrics_scrape.py --db postgresql        # sqlite, postgresql, mysql (default: all three)
    python bench/metrics_scrape.py --rows 200000 --runs 10

Fills a dedicated database (``toosimpleq_bench_metrics``; SQLite: a file in the temp folder) once,
with the same bulk SQL as ``bench/admin_dashboard.py`` (finished executions spread over the last 7
days, 20 tasks, 3 queues), plus 2,000 waiting executions. Then it times, through Django's test
client (the whole request):

- a scrape before any fold (a new installation before the first housekeeping: every finished row
  is counted by the query);
- the first fold (``Engine.fold_totals``, what the first housekeeping after the upgrade does);
- a fold of the last minute (what each housekeeping does afterwards);
- scrapes once folded (the steady state), median and slowest of ``--runs``, with their slowest query;
- scrapes of a busy queue: ``--recent`` more executions (24,000: 100 per second) finished in the last
  4 minutes, all counted by each scrape since they are younger than the mark.

Results go to bench/results/metrics_scrape-<db>.json. Prints the load average: the machine is shared.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DB_NAME = "toosimpleq_bench_metrics"


def configure(db: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    os.environ["TOOSIMPLEQ_TEST_DB"] = db
    if db == "sqlite":
        os.environ["TOOSIMPLEQ_TEST_DB_NAME"] = os.path.join(tempfile.gettempdir(), f"{DB_NAME}.sqlite3")
    elif db == "postgresql":
        import psycopg

        os.environ["TOOSIMPLEQ_TEST_DB_NAME"] = DB_NAME
        with psycopg.connect(
            host=os.environ.get("PGHOST", "127.0.0.1"), port=os.environ.get("PGPORT", "5432"),
            user=os.environ.get("PGUSER", "postgres"), dbname="postgres", autocommit=True,
        ) as conn:  # fmt: skip
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone():
                conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    else:
        import MySQLdb

        os.environ["TOOSIMPLEQ_TEST_DB_NAME"] = DB_NAME
        conn = MySQLdb.connect(
            host=os.environ.get("MYSQL_HOST", "127.0.0.1"), port=int(os.environ.get("MYSQL_PORT", "3306")),
            user=os.environ.get("MYSQL_USER", "root"), password=os.environ.get("MYSQL_PASSWORD", ""),
        )  # fmt: skip
        conn.cursor().execute(
            f"CREATE DATABASE IF NOT EXISTS {DB_NAME} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        )
        conn.close()
    import django

    django.setup()


def mariadb_fill_sql(rows: int, workers: list[int]) -> str:
    """The same rows as ``admin_dashboard.fill_sql`` (without the 100 kB results), from MariaDB's
    sequence engine."""
    from bench.admin_dashboard import COLUMNS

    def ts(shift_ms: int) -> str:
        return f"(UTC_TIMESTAMP(6) - INTERVAL (({rows} - seq) * (604800.0 / {rows}) * 1000000 + {shift_ms} * 1000) MICROSECOND)"

    state = (
        "CASE WHEN seq % 20 = 0 THEN 'FAILED' WHEN seq % 50 = 1 THEN 'CANCELLED' "
        "WHEN seq % 33 = 2 THEN 'INTERRUPTED' ELSE 'SUCCEEDED' END"
    )
    return (
        f"INSERT INTO toosimpleq_taskexec ({COLUMNS}) SELECT "
        "CONCAT('task_', seq % 20), CONCAT('[', seq % 1000, ',\"item-', seq, '\"]'), '{}', "
        "CASE seq % 3 WHEN 0 THEN 'default' WHEN 1 THEN 'mail' ELSE 'reports' END, 0, "
        f"{ts(1000)}, {ts(1000)}, {ts(500)}, {ts(0)}, {state}, CAST(seq % 1000 * 2 AS CHAR), "
        "CASE WHEN seq % 20 = 0 THEN CONCAT('ValueError: boom ', seq) ELSE NULL END, '', 0, 0, "
        f"({workers[0]} + seq % {len(workers)}), 1, 0, FALSE FROM seq_1_to_{rows}"
    )


def prepare(rows: int) -> None:
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from bench.admin_dashboard import empty_tables_with_workers, fill_sql
    from django_toosimple_q.models import TaskExec, WorkerStatus

    call_command("migrate", verbosity=0)
    finished = TaskExec.objects.filter(state__in=TaskExec.States.finished()).count()
    if finished < rows:
        print(f"  filling {rows:,} finished executions ({connection.vendor}) ...", flush=True)
        workers = empty_tables_with_workers()
        started = time.perf_counter()
        sql = mariadb_fill_sql(rows, workers) if connection.vendor == "mysql" else fill_sql(connection.vendor, rows, workers)
        with connection.cursor() as cursor:
            cursor.execute(sql)
        now = timezone.now()
        TaskExec.objects.bulk_create(
            TaskExec(
                task_name=f"task_{i % 20}", args=[i], queue=("default", "mail")[i % 2],
                due=now - datetime.timedelta(seconds=i), state="QUEUED" if i % 4 else "SLEEPING",
            )  # fmt: skip
            for i in range(2000)
        )
        print(f"  filled in {time.perf_counter() - started:.1f}s", flush=True)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE TABLE toosimpleq_taskexec" if connection.vendor == "mysql" else "ANALYZE")
    WorkerStatus.objects.update(last_seen=timezone.now(), stopped=None)


def scrape(client, token: str) -> tuple[float, list[dict]]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")
        elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.content[:500]
    assert b"toosimpleq_executions_finished_total" in response.content
    return elapsed, list(queries.captured_queries)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def run_one(db: str, rows: int, runs: int, recent: int) -> dict:
    configure(db)
    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from django.utils import timezone

    from django_toosimple_q.engine import get_engine
    from django_toosimple_q.engine.totals import FOLD_MARGIN
    from django_toosimple_q.models import ExecutionTotal

    print(f"\n== {db} ({connection.settings_dict['NAME']}), {rows:,} finished rows; load average {os.getloadavg()}", flush=True)
    prepare(rows)
    client = Client()
    token = settings.TOOSIMPLEQ_METRICS_TOKEN
    engine = get_engine()
    report: dict = {"db": db, "rows": rows, "runs": runs, "load_before": os.getloadavg()}

    ExecutionTotal.objects.all().delete()
    scrape(client, token)  # warm-up: imports, caches, the table's pages
    unfolded = sorted(scrape(client, token)[0] for _ in range(3))
    report["scrape_before_any_fold_ms"] = ms(statistics.median(unfolded))
    print(f"  scrape before any fold (counts every row)   {report['scrape_before_any_fold_ms']:>9.1f} ms", flush=True)

    started = time.perf_counter()
    engine.fold_totals(timezone.now() - FOLD_MARGIN)
    report["first_fold_ms"] = ms(time.perf_counter() - started)
    print(f"  first fold (the history, once)              {report['first_fold_ms']:>9.1f} ms", flush=True)
    started = time.perf_counter()
    engine.fold_totals(timezone.now() - FOLD_MARGIN + datetime.timedelta(minutes=1))
    report["fold_one_minute_ms"] = ms(time.perf_counter() - started)
    print(f"  fold of one more minute (each housekeeping) {report['fold_one_minute_ms']:>9.1f} ms", flush=True)

    durations, slowest = [], (0.0, "")
    count = 0
    for _ in range(runs):
        elapsed, queries = scrape(client, token)
        durations.append(elapsed)
        count = len(queries)
        for query in queries:
            if float(query["time"]) > slowest[0]:
                slowest = (float(query["time"]), query["sql"])
    report.update(
        scrape_median_ms=ms(statistics.median(durations)),
        scrape_max_ms=ms(max(durations)),
        queries=count,
        slowest_query_ms=ms(slowest[0]),
        slowest_query=slowest[1][:400],
    )
    print(
        f"  scrape once folded: median {report['scrape_median_ms']} ms, max {report['scrape_max_ms']} ms, "
        f"{count} queries, slowest {report['slowest_query_ms']} ms", flush=True,
    )  # fmt: skip

    # A busy queue: the part counted at each scrape is what finished since the mark (up to 6 minutes).
    from django_toosimple_q.models import TaskExec

    now = timezone.now()
    first_id = TaskExec.objects.order_by("-id").values_list("id", flat=True).first()
    TaskExec.objects.bulk_create(
        (
            TaskExec(
                task_name=f"task_{i % 20}", queue="default", state="SUCCEEDED" if i % 20 else "FAILED",
                due=now - datetime.timedelta(seconds=240 * i / recent + 1),
                started=now - datetime.timedelta(seconds=240 * i / recent + 0.5),
                finished=now - datetime.timedelta(seconds=240 * i / recent),
            )  # fmt: skip
            for i in range(recent)
        ),
        batch_size=2000,
    )
    busy = []
    for _ in range(runs):
        busy.append(scrape(client, token)[0])
    report["recent_rows"] = recent
    report["scrape_busy_median_ms"] = ms(statistics.median(busy))
    report["scrape_busy_max_ms"] = ms(max(busy))
    print(
        f"  scrape with {recent:,} executions finished in the last 4 minutes ({recent / 240:.0f}/s): "
        f"median {report['scrape_busy_median_ms']} ms, max {report['scrape_busy_max_ms']} ms", flush=True,
    )  # fmt: skip
    TaskExec.objects.filter(id__gt=first_id).delete()
    report["load_after"] = os.getloadavg()
    print(f"  load average after: {report['load_after']}", flush=True)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"metrics_scrape-{db}.json").write_text(json.dumps(report, indent=2))
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", action="append", choices=["sqlite", "postgresql", "mysql"], help="default: all three")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--recent", type=int, default=24_000, help="executions finished in the last 4 minutes, for the busy case")
    args = parser.parse_args()
    dbs = args.db or ["sqlite", "postgresql", "mysql"]
    if len(dbs) > 1:  # Django is configured once per process: one child per database
        code = 0
        for db in dbs:
            code |= subprocess.call(
                [sys.executable, __file__, "--db", db, "--rows", str(args.rows), "--runs", str(args.runs), "--recent", str(args.recent)]
            )
        return code
    run_one(dbs[0], args.rows, args.runs, args.recent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
