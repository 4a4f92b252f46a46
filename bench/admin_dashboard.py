"""How fast the admin stays with a large history: the dashboard and the execution list on 1,000,000 rows.

    python bench/admin_dashboard.py --db postgresql            # and/or --db sqlite (default: both)
    python bench/admin_dashboard.py --rows 200000 --runs 3

Fills a dedicated database (PostgreSQL ``toosimpleq_bench_admin``, SQLite file in the temp folder)
once with bulk SQL (``generate_series`` / a recursive CTE): finished executions spread over the last
7 days (90 % succeeded, 5 % failed, cancelled, interrupted), every 10,000th with a 100 kB result, plus
a backlog of queued ones. Then it times each admin page through Django's test client (full request:
middleware, queries, templates) and prints the median and the slowest SQL statement of each page.
Results are also written to bench/results/admin_dashboard-<db>.json.

``--drop-admin-indexes`` times the same pages without the indexes the admin migration adds, to show
what they buy (they are created again at the end).
"""

from __future__ import annotations

import argparse
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
DB_NAME = "toosimpleq_bench_admin"
ADMIN_INDEXES = ("toosimpleq_state_finished_idx", "toosimpleq_created_idx")


def configure(db: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    os.environ["TOOSIMPLEQ_TEST_DB"] = db
    if db == "sqlite":
        os.environ["TOOSIMPLEQ_TEST_DB_NAME"] = os.path.join(tempfile.gettempdir(), f"{DB_NAME}.sqlite3")
    else:
        os.environ["TOOSIMPLEQ_TEST_DB_NAME"] = DB_NAME
        import psycopg

        with psycopg.connect(
            host=os.environ.get("PGHOST", "127.0.0.1"),
            port=os.environ.get("PGPORT", "5432"),
            user=os.environ.get("PGUSER", "postgres"),
            dbname="postgres",
            autocommit=True,
        ) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone():
                conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    import django

    django.setup()


COLUMNS = (
    "task_name, args, kwargs, queue, priority, due, created, started, finished, state, result, error, output, "
    "retries, retry_delay, worker_id, attempt, crashes, is_unique"
)


def fill_sql(vendor: str, rows: int, workers: list[int]) -> str:
    """One INSERT ... SELECT producing ``rows`` finished executions, newest last (highest id)."""
    w = len(workers)
    if vendor == "postgresql":
        ago = f"(now() - ({rows} - x) * (604800.0 / {rows}) * interval '1 second')"
        big = "'\"' || repeat('0', 100000) || '\"'"
        source = f"generate_series(1, {rows}) AS g(x)"
        prefix = ""
        ts = lambda shift: f"({ago} - interval '{shift} milliseconds')"  # noqa: E731
        worker = f"({workers[0]} + x % {w})"
    else:
        prefix = f"WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < {rows}) "
        source = "g"
        big = "'\"' || hex(zeroblob(50000)) || '\"'"
        ts = lambda shift: (  # noqa: E731
            "strftime('%Y-%m-%d %H:%M:%f', 'now', "
            f"'-' || (({rows} - x) * 604800.0 / {rows} + {shift} / 1000.0) || ' seconds')"
        )
        worker = f"({workers[0]} + x % {w})"
    state = (
        "CASE WHEN x % 20 = 0 THEN 'FAILED' WHEN x % 50 = 1 THEN 'CANCELLED' "
        "WHEN x % 33 = 2 THEN 'INTERRUPTED' ELSE 'SUCCEEDED' END"
    )
    result = f"CASE WHEN x % 10000 = 0 THEN {big} WHEN x % 20 = 0 THEN NULL ELSE CAST(x % 1000 * 2 AS TEXT) END"
    error = "CASE WHEN x % 20 = 0 THEN 'Traceback (most recent call last):\nValueError: boom ' || x ELSE NULL END"
    table = "toosimpleq_taskexec"
    return (
        f"{prefix}INSERT INTO {table} ({COLUMNS}) SELECT "
        f"'task_' || (x % 20), '[' || (x % 1000) || ',\"item-' || x || '\"]', '{{}}', "
        f"CASE x % 3 WHEN 0 THEN 'default' WHEN 1 THEN 'mail' ELSE 'reports' END, 0, "
        f"{ts(1000)}, {ts(1000)}, {ts(500)}, {ts(0)}, {state}, {result}, {error}, '', 0, 0, {worker}, 1, 0, FALSE "
        f"FROM {source}"
    )


def empty_tables_with_workers(count: int = 4) -> list[int]:
    """Delete every execution and worker record; create ``count`` workers to attach executions to."""
    from django_toosimple_q.models import TaskExec, WorkerStatus

    TaskExec.objects.all().delete()
    WorkerStatus.objects.all().delete()
    return [
        WorkerStatus.objects.create(label=f"worker-{i}", host="bench", pid=1000 + i, timeout=3600).pk
        for i in range(count)
    ]


def prepare(rows: int) -> dict:
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from django_toosimple_q.models import TaskExec, WorkerStatus

    call_command("migrate", verbosity=0)
    finished = TaskExec.objects.exclude(state__in=TaskExec.States.waiting()).count()
    if finished < rows:
        print(f"  filling {rows:,} finished executions ({connection.vendor}) ...", flush=True)
        workers = empty_tables_with_workers()
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(fill_sql(connection.vendor, rows, workers))
        now = timezone.now()
        TaskExec.objects.bulk_create(
            TaskExec(task_name=f"task_{i % 20}", args=[i], queue=("default", "mail")[i % 2], due=now, state="QUEUED")
            for i in range(1000)
        )
        print(f"  filled in {time.perf_counter() - started:.1f}s", flush=True)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")
    WorkerStatus.objects.update(last_seen=timezone.now(), stopped=None)
    user, _ = User.objects.get_or_create(username="bench", defaults={"is_staff": True, "is_superuser": True})
    mid = TaskExec.objects.order_by("-id").values_list("id", flat=True)[rows // 2]
    return {"user": user, "mid": mid, "worker": WorkerStatus.objects.order_by("id").first().pk}


def pages(info: dict) -> list[tuple[str, str]]:
    from django.urls import reverse
    from django.utils import timezone

    from django_toosimple_q.models import TaskExec

    today = timezone.localtime(timezone.now())
    big = TaskExec.objects.filter(result__startswith='"000').order_by("-id").values_list("id", flat=True).first()
    changelist = reverse("admin:toosimpleq_taskexec_changelist")
    return [
        ("dashboard (3 h chart)", reverse("admin:toosimpleq_dashboard")),
        ("dashboard (24 h chart)", reverse("admin:toosimpleq_dashboard") + "?hours=24"),
        ("list", changelist),
        ("list, page 100", changelist + "?p=100"),
        ("list, state=FAILED", changelist + "?state__exact=FAILED"),
        ("list, task_name=task_7", changelist + "?task_name=task_7"),
        ("list, queue=mail", changelist + "?queue=mail"),
        ("list, worker", changelist + f"?worker={info['worker']}"),
        ("list, search id", changelist + f"?q=%23{info['mid']}"),
        ("list, search name (substring)", changelist + "?q=task_1"),
        ("list, date hierarchy: month", changelist + f"?created__year={today.year}&created__month={today.month}"),
        (
            "list, date hierarchy: day",
            changelist + f"?created__year={today.year}&created__month={today.month}&created__day={today.day}",
        ),
        ("detail of a 100 kB result", reverse("admin:toosimpleq_taskexec_change", args=[big])),
        ("workers list", reverse("admin:toosimpleq_workerstatus_changelist")),
    ]


def time_pages(info: dict, runs: int) -> list[dict]:
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from django_toosimple_q import monitoring

    client = Client()
    client.force_login(info["user"])
    results = []
    for name, url in pages(info):
        response = client.get(url)  # warm-up (and a check that the page works)
        assert response.status_code == 200, (name, url, response.status_code)
        durations = []
        slowest = (0.0, "")
        for _ in range(runs):
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                client.get(url)
                durations.append(time.perf_counter() - started)
            for q in queries.captured_queries:
                if float(q["time"]) > slowest[0]:
                    slowest = (float(q["time"]), q["sql"])
        results.append(
            {
                "page": name,
                "url": url,
                "median_ms": round(statistics.median(durations) * 1000, 1),
                "max_ms": round(max(durations) * 1000, 1),
                "queries": len(queries.captured_queries),
                "slowest_query_ms": round(slowest[0] * 1000, 1),
                "slowest_query": slowest[1][:300],
            }
        )
        print(
            f"  {name:<34} {results[-1]['median_ms']:>9.1f} ms  (max {results[-1]['max_ms']:.1f}, "
            f"{results[-1]['queries']} queries, slowest {results[-1]['slowest_query_ms']:.1f} ms)",
            flush=True,
        )
    durations = []
    for _ in range(runs):
        started = time.perf_counter()
        monitoring.snapshot()
        durations.append(time.perf_counter() - started)
    results.append({"page": "toosimpleq_status snapshot", "median_ms": round(statistics.median(durations) * 1000, 1)})
    print(f"  {'toosimpleq_status snapshot':<34} {results[-1]['median_ms']:>9.1f} ms", flush=True)
    return results


def drop_indexes(create: bool) -> None:
    from django.db import connection

    from django_toosimple_q.models import TaskExec

    with connection.schema_editor() as editor:
        for index in TaskExec._meta.indexes:
            if index.name in ADMIN_INDEXES:
                (editor.add_index if create else editor.remove_index)(TaskExec, index)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def run_one(db: str, rows: int, runs: int, without: bool) -> None:
    configure(db)
    from django.db import connection

    print(f"\n== {db} ({connection.settings_dict['NAME']}), {rows:,} finished rows, median of {runs} runs", flush=True)
    info = prepare(rows)
    report = {"db": db, "rows": rows, "runs": runs, "with_indexes": time_pages(info, runs)}
    if without:
        print("  -- without the admin indexes --", flush=True)
        drop_indexes(create=False)
        try:
            report["without_admin_indexes"] = time_pages(info, runs)
        finally:
            drop_indexes(create=True)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"admin_dashboard-{db}.json").write_text(json.dumps(report, indent=2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", action="append", choices=["sqlite", "postgresql"], help="default: both")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--drop-admin-indexes", action="store_true", help="also time without the admin indexes")
    args = parser.parse_args()
    dbs = args.db or ["sqlite", "postgresql"]
    if len(dbs) > 1:  # Django is configured once per process: one child per database
        code = 0
        for db in dbs:
            cmd = [sys.executable, __file__, "--db", db, "--rows", str(args.rows), "--runs", str(args.runs)]
            code |= subprocess.call(cmd + (["--drop-admin-indexes"] if args.drop_admin_indexes else []))
        return code
    run_one(dbs[0], args.rows, args.runs, args.drop_admin_indexes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
