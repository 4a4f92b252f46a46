"""How long the upgrade from django-toosimple-q 1.x takes on a large table (issue 14).

    python bench/upgrade.py                       # SQLite and PostgreSQL, 1,000,000 executions
    python bench/upgrade.py --db mysql --rows 200000

For each database: a new database gets the 1.x tables (``migrate toosimpleq 0001_squashed_0016_legacy_1x``),
is filled with ``--rows`` executions as 1.2.1 wrote them (base64 pickles of arguments with dates and
aware datetimes, results, captured output; 85 % succeeded, 5 % failed with a traceback, 10 % waiting,
a tenth of those of a ``unique`` task), then ``manage.py migrate`` runs one migration at a time as a
subprocess with ``tests.legacy_settings`` (the fixture's tasks registered), each timed. The start-up
of ``manage.py`` (a ``migrate`` with nothing to do) is measured and subtracted. Results go to
``bench/results/upgrade-<db>.json``.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
NAME = "toosimpleq_bench_upgrade"
# Every migration after the 1.x tables, in order: the upgrade plus whatever came later.
STEPS = sorted(p.stem for p in (ROOT / "django_toosimple_q" / "migrations").glob("0*.py"))[1:]
UTC = datetime.timezone.utc
COLUMNS = (
    "id", "task_name", "args", "kwargs", "created", "started", "finished", "state", "result", "stdout", "stderr",
    "due", "retries", "retry_delay", "replaced_by_id", "error", "worker_id", "result_preview",
)  # fmt: skip
TRACEBACK = (
    "Traceback (most recent call last):\n  File \"app/tasks.py\", line 29, in legacy_fail\n"
    "    raise RuntimeError(\"legacy failure\")\nRuntimeError: legacy failure\n"
)


def database_name(db: str) -> str:
    return os.path.join(tempfile.gettempdir(), f"{NAME}.sqlite3") if db == "sqlite" else NAME


def environment(db: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.legacy_settings",
        "TOOSIMPLEQ_TEST_DB": db,
        "TOOSIMPLEQ_LEGACY_DB_NAME": database_name(db),
        "LEGACY_OUT": tempfile.gettempdir(),
        "PYTHONPATH": str(ROOT),
    }


def manage(db: str, *args: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "django", *args], env=environment(db), cwd=ROOT, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed, done.stdout


def recreate(db: str, create: bool = True) -> None:
    """Drop the bench database, then create it empty (unless ``create`` is False)."""
    name = database_name(db)
    if db == "sqlite":
        if os.path.exists(name):
            os.remove(name)
    elif db == "postgresql":
        host = ["-h", os.environ.get("PGHOST", "127.0.0.1"), "-U", os.environ.get("PGUSER", "postgres")]
        subprocess.run(["psql", *host, "-q", "-c", f'DROP DATABASE IF EXISTS "{name}"'], check=True)
        if create:
            subprocess.run(["psql", *host, "-q", "-c", f'CREATE DATABASE "{name}"'], check=True)
    else:
        host = ["-h", os.environ.get("MYSQL_HOST", "127.0.0.1"), "-u", os.environ.get("MYSQL_USER", "root")]
        statement = f"DROP DATABASE IF EXISTS `{name}`" + (f"; CREATE DATABASE `{name}` CHARACTER SET utf8mb4" if create else "")
        subprocess.run(["mariadb", *host, "-e", statement], check=True)


def b64pickle(value) -> str:
    return base64.b64encode(pickle.dumps(value, protocol=2)).decode("ascii")


def legacy_rows(count: int, start: int, now: datetime.datetime):
    """``count`` rows shaped as 1.2.1 wrote them, ids from ``start``."""
    for row_id in range(start, start + count):
        kind = row_id % 20
        created = now - datetime.timedelta(seconds=count - row_id)
        when = datetime.datetime(2024, 1, 1, tzinfo=UTC) + datetime.timedelta(minutes=row_id)
        if kind < 17:  # succeeded history
            yield (
                row_id, "legacy_greet", b64pickle((f"user-{row_id}",)), b64pickle({"when": when}), created, created,
                created, "SUCCEEDED", b64pickle({"greeting": f"hello user-{row_id}", "when": when}),
                "sent\n" if kind == 0 else "", "", created, 0, 0, None, None, None, "{'greeting': ...}",
            )  # fmt: skip
        elif kind == 17:  # failed
            yield (
                row_id, "legacy_add", b64pickle((row_id, 1)), b64pickle({}), created, created, created, "FAILED",
                None, "", "warning\n", created, 0, 0, None, TRACEBACK, None, None,
            )  # fmt: skip
        else:  # waiting; every tenth of them a unique task
            task, args = ("legacy_unique", (row_id,)) if row_id % 200 == 18 else ("legacy_add", (row_id, 2))
            yield (
                row_id, task, b64pickle(args), b64pickle({}), created, None, None, "QUEUED", None, "", "",
                created, 0, 0, None, None, None, None,
            )  # fmt: skip


def fill(db: str, rows: int) -> float:
    """Insert the 1.x rows from this process; returns the seconds it took (not part of the upgrade)."""
    os.environ.update(environment(db))
    import django

    django.setup()
    from django.db import connection, transaction

    started = time.perf_counter()
    now = datetime.datetime.now(UTC)
    chunk = 20000
    placeholders = ", ".join(["%s"] * len(COLUMNS))
    insert = f"INSERT INTO toosimpleq_taskexec ({', '.join(COLUMNS)}) VALUES ({placeholders})"
    with transaction.atomic(), connection.cursor() as cursor:  # one commit (SQLite: one fsync)
        for first in range(1, rows + 1, chunk):
            batch = list(legacy_rows(min(chunk, rows + 1 - first), first, now))
            if db == "postgresql":
                with cursor.cursor.copy(f"COPY toosimpleq_taskexec ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                    for row in batch:
                        copy.write_row(row)
            else:
                # Naive UTC, as Django stores datetimes in SQLite and MariaDB.
                batch = [tuple(v.replace(tzinfo=None) if isinstance(v, datetime.datetime) else v for v in r) for r in batch]
                cursor.executemany(insert, batch)
        if db == "postgresql":
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence('toosimpleq_taskexec', 'id'), (SELECT max(id) FROM toosimpleq_taskexec))"
            )
            cursor.execute("ANALYZE toosimpleq_taskexec")
    connection.close()
    return time.perf_counter() - started


def measure(db: str, rows: int) -> dict:
    print(f"\n== {db}: {rows:,} executions", flush=True)
    recreate(db)
    manage(db, "migrate", "toosimpleq", "0001_squashed_0016_legacy_1x")
    filled = fill(db, rows)
    print(f"  filled the 1.x table in {filled:.1f} s (not part of the upgrade)", flush=True)
    startup, _ = manage(db, "migrate", "toosimpleq", "0001_squashed_0016_legacy_1x")  # nothing to do
    result = {"db": db, "rows": rows, "startup_s": round(startup, 2), "steps": {}}
    for step in STEPS:
        elapsed, output = manage(db, "migrate", "toosimpleq", step)
        seconds = max(elapsed - startup, 0.0)
        result["steps"][step] = round(seconds, 2)
        print(f"  {step:<44} {seconds:8.1f} s", flush=True)
        if step == "0018_upgrade_data":
            report = [line.strip() for line in output.splitlines() if "execution(s)" in line]
            result["report"] = report
            print("   ", "\n    ".join(report), flush=True)
    total = sum(result["steps"].values())
    result["total_s"] = round(total, 1)
    result["per_million_s"] = round(total * 1_000_000 / rows, 1)
    print(f"  total {total:.1f} s, i.e. {result['per_million_s']:.0f} s per million executions", flush=True)
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / f"upgrade-{db}.json").write_text(json.dumps(result, indent=2))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", action="append", choices=["sqlite", "postgresql", "mysql"])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="leave the database afterwards")
    options = parser.parse_args()
    for db in options.db or ["sqlite", "postgresql"]:
        # One process per database: Django is set up once per process.
        if os.environ.get("BENCH_UPGRADE_CHILD") == db:
            measure(db, options.rows)
            if not options.keep:
                recreate(db, create=False)
            return
        subprocess.run(
            [sys.executable, __file__, "--db", db, "--rows", str(options.rows), *(["--keep"] if options.keep else [])],
            env={**os.environ, "BENCH_UPGRADE_CHILD": db},
            check=True,
        )


if __name__ == "__main__":
    main()
