#!/usr/bin/env python
"""Benchmark of django-toosimple-q on SQLite, PostgreSQL and MariaDB: ``make bench`` (see bench/README.md).

    python bench/run.py [--quick] [--only enqueue|drain|latency|idle|stop|history|backlog|flow|workflows]
                        [--db sqlite|postgresql|mysql]

Each database is measured in its own child process (Django settings are per process); the parent
prints the machine, then one table for all databases, and writes it to bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's django_toosimple_q, not an installed one

SECTIONS = ["enqueue", "drain", "latency", "idle", "stop", "history", "backlog", "flow", "workflows"]
DATABASES = ["sqlite", "postgresql", "mysql"]
#: The server databases' name (PostgreSQL and MariaDB) and the SQLite file: set them to run beside
#: another bench on the same machine.
PG_DB_NAME = os.environ.get("BENCH_DB_NAME") or "toosimpleq_bench"
SQLITE_PATH = os.environ.get("BENCH_SQLITE_PATH") or os.path.join(tempfile.gettempdir(), "toosimpleq-bench.sqlite3")
RESULTS = ROOT / "bench" / "results" / "latest.json"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="about 1/10 of the counts: a smoke run")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run only this measurement (repeatable)")
    parser.add_argument("--db", choices=DATABASES, action="append", help="only this database (repeatable)")
    parser.add_argument("--backlog", help="backlog sizes, comma-separated (default 2000,50000,1000000; --quick 2000,20000,100000)")
    parser.add_argument("--backlog-processes", help="worker processes for the backlog, comma-separated (default 1,2)")
    parser.add_argument("--keep", action="store_true", help="keep the bench database and worker logs afterwards")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write the results (default: %(default)s)")
    parser.add_argument("--child", choices=DATABASES, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args()


# -- the parent: header, one child per database, table ----------------------------------------------


def main() -> int:
    args = parse_args()
    if args.child:
        return child(args)
    machine = machine_info()
    print_header(machine, args)
    results = {"machine": machine, "quick": args.quick, "sections": args.only or SECTIONS, "databases": {}}
    for db in args.db or DATABASES:
        problem = pg_unreachable() if db == "postgresql" else mysql_unreachable() if db == "mysql" else None
        if problem:
            print(f"\n== {db}: skipped, unreachable: {problem}", flush=True)
            results["databases"][db] = {"skipped": problem}
            continue
        print(f"\n== {db}", flush=True)
        results["databases"][db] = run_child(db, args)
    print()
    print_table(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nWritten to {args.json}")
    failed = [db for db, r in results["databases"].items() if r.get("error") or not r.get("all_ok", True)]
    return 1 if failed else 0


def run_child(db: str, args: argparse.Namespace) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        out_path = out.name
    command = [sys.executable, __file__, "--child", db, "--out", out_path]
    command += ["--quick"] * args.quick + ["--keep"] * args.keep
    if args.backlog:
        command += ["--backlog", args.backlog]
    if args.backlog_processes:
        command += ["--backlog-processes", args.backlog_processes]
    for name in args.only or []:
        command += ["--only", name]
    code = subprocess.call(command, cwd=ROOT)
    try:
        result = json.loads(Path(out_path).read_text() or "{}")
    except (OSError, ValueError):
        result = {}
    finally:
        Path(out_path).unlink(missing_ok=True)
    if code and not result.get("error"):
        result["error"] = f"the {db} run exited with code {code}"
    return result


def pg_unreachable() -> str | None:
    try:
        import psycopg

        psycopg.connect(**pg_params("postgres"), connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001 - any failure means "skip PostgreSQL"
        return f"{type(exc).__name__}: {str(exc).strip()}"
    return None


def mysql_params() -> dict:
    return {
        "host": os.environ.get("MYSQL_HOST", "127.0.0.1"),
        "port": int(os.environ.get("MYSQL_PORT", "3306")),
        "user": os.environ.get("MYSQL_USER", "root"),
        "password": os.environ.get("MYSQL_PASSWORD", ""),
    }


def mysql_unreachable() -> str | None:
    try:
        import MySQLdb

        MySQLdb.connect(**mysql_params(), connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001 - any failure means "skip MariaDB"
        return f"{type(exc).__name__}: {str(exc).strip()}"
    return None


def pg_params(dbname: str) -> dict:
    return {
        "host": os.environ.get("PGHOST", "127.0.0.1"),
        "port": os.environ.get("PGPORT", "5432"),
        "user": os.environ.get("PGUSER", "postgres"),
        "password": os.environ.get("PGPASSWORD") or None,
        "dbname": dbname,
    }


def machine_info() -> dict:
    import django

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    pg = None
    if not pg_unreachable():
        import psycopg

        with psycopg.connect(**pg_params("postgres")) as conn:
            pg = conn.execute("SHOW server_version").fetchone()[0]
    mariadb = None
    if not mysql_unreachable():
        import MySQLdb

        conn = MySQLdb.connect(**mysql_params())
        cursor = conn.cursor()
        cursor.execute("SELECT VERSION()")
        mariadb = cursor.fetchone()[0]
        conn.close()
    import django_toosimple_q

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "postgresql": pg,
        "sqlite": sqlite3.sqlite_version,
        "mariadb": mariadb,
        "commit": commit.stdout.strip() or None,
        "package": str(Path(django_toosimple_q.__file__).parent),
    }


def print_header(machine: dict, args: argparse.Namespace) -> None:
    load = ", ".join(f"{x:.2f}" for x in machine["loadavg"])
    print("django-toosimple-q benchmark" + (" (--quick: about 1/10 of the counts)" if args.quick else ""))
    print(f"  date        {machine['date']}   commit {machine['commit']}   code {machine['package']}")
    print(f"  machine     {machine['nproc']} CPU(s), {machine['cpu']}, load average {load}")
    print(f"  software    Python {machine['python']}, Django {machine['django']}, "
          f"PostgreSQL {machine['postgresql'] or 'unreachable'}, SQLite {machine['sqlite']}, "
          f"MariaDB {machine.get('mariadb') or 'unreachable'}")  # fmt: skip
    print("  note        numbers are noisy when the machine is shared; compare runs on the same machine")


def fmt_rate(value) -> str:
    return f"{value:,.0f}/s" if value else "n/a"


def fmt_ms(value) -> str:
    return f"{value:.1f}" if value is not None else "n/a"


def table_rows(r: dict) -> list[tuple[str, str]]:
    """(label, cell) pairs for one database's results."""
    rows: list[tuple[str, str]] = []
    if "enqueue" in r:
        e = r["enqueue"]
        if "error" in e:
            rows.append(("enqueue", "ERROR"))
        else:
            rows.append((f"enqueue: queue() x{e['count']:,}, one by one", fmt_rate(e["queue_per_s"])))
            rows.append((f"enqueue: Model.objects.create() x{e['count']:,}", fmt_rate(e["create_per_s"])))
            rows.append(("enqueue: queue() / create()", f"{e['ratio']:.2f}"))
            rows.append((f"enqueue: bulk x{e['bulk_count']:,}", f"{fmt_rate(e['bulk_per_s'])} ({e['bulk_method']})"))
    if "drain" in r:
        d = r["drain"]
        if "error" in d:
            rows.append(("drain", "ERROR"))
        for key, x in d.items():
            if not isinstance(x, dict):
                continue
            label = f"drain x{x['count']:,}: {x['processes']} proc x {x['threads']} thr (wall | db)"
            rows.append((label, drain_cell(x)))
    if "latency" in r:
        for key, x in r["latency"].items():
            if not isinstance(x, dict):
                rows.append(("latency", "ERROR"))
                continue
            cell = "n/a" if x["p50_ms"] is None else f"{fmt_ms(x['p50_ms'])} / {fmt_ms(x['p95_ms'])} / {fmt_ms(x['max_ms'])}"
            if x.get("timeouts"):
                cell += f" ({x['timeouts']} timed out)"
            rows.append((f"latency tick {x['tick']}: p50/p95/max ms (n={x['samples']})", cell))
    if "idle" in r:
        x = r["idle"]
        if "error" in x:
            rows.append(("idle", "ERROR"))
        else:
            rows.append((f"idle {x['seconds']:.0f}s: transactions/s (pg_stat_database)",
                         f"{x['transactions_per_s']:.2f}" if "transactions_per_s" in x else "n/a"))  # fmt: skip
            rows.append(("idle: statements/s (counted in the worker)", f"{x['statements_per_s']:.2f}"))
    if "stop" in r:
        x = r["stop"]
        if "error" in x:
            rows.append(("stop", "ERROR"))
        else:
            for key, label in (("recorded", "exit recorded"), ("exited", "process ended")):
                y = x[key]
                cell = "n/a" if y["p50_ms"] is None else f"{fmt_ms(y['p50_ms'])} / {fmt_ms(y['max_ms'])}"
                rows.append((f"stop: idle worker, SIGTERM to {label}, p50/max ms", cell))
    if "history" in r:
        h = r["history"]
        if "error" in h:
            rows.append(("history", "ERROR"))
        for key, x in h.items():
            if not isinstance(x, dict):
                continue
            loaded = x["loaded"]
            rows.append((f"history: {key} empty table, just before (wall | db)", drain_cell(x["empty"])))
            rows.append((f"history: {key} with {h['history_rows']:,} finished rows (wall | db)", drain_cell(loaded)))
            ratio = " | ".join(f"{v:.2f}" if v else "n/a" for v in (x["ratio_wall"], x["ratio_db"]))
            rows.append((f"history: {key} ratio to the empty table (wall | db)", ratio))
    if "flow" in r:
        f = r["flow"]
        if "error" in f:
            rows.append(("flow", "ERROR"))
        else:
            c = f["concurrency"]
            rows.append((
                f"flow: concurrency 50, x{c['count']:,} of {c['task_ms']:.0f} ms, {c['shape']}: per s (of ideal), peak",
                f"{fmt_rate(c['per_s'])} ({c['of_ideal']:.2f}), {c['peak']}" + ("" if c["ok"] else " NOT OK"),
            ))  # fmt: skip
            r8 = f["rate"]
            rows.append((
                f"flow: rate 1000/s, x{r8['count']:,}, {r8['shape']}: starts/s, most in 1 s",
                f"{fmt_rate(r8['per_s'])}, {r8['most_in_period']}" + ("" if r8["ok"] else " NOT OK"),
            ))  # fmt: skip
            x = f["unlimited_beside_limits"]
            rows.append((f"flow: drain x{x['count']:,} of an unlimited queue, limits set on others, {x['processes']} proc x {x['threads']} thr (wall | db)", drain_cell(x)))
    if "backlog" in r:
        b = r["backlog"]
        if "error" in b:
            rows.append(("backlog", "ERROR"))
        for key, runs in b.items():
            if not isinstance(runs, dict):
                continue
            for n, x in runs.items():
                cell = f"{fmt_rate(x['steady_per_s'])} ({x['ratio']:.2f})" if x.get("ratio") else fmt_rate(x["steady_per_s"])
                if x.get("timed_out"):
                    cell += " TIMEOUT"
                if not x.get("ok"):
                    cell += " NOT OK"
                if x.get("rates"):
                    cell += f", median of {len(x['rates'])}: " + " ".join(f"{rate or 0:,.0f}" for rate in x["rates"])
                rows.append((f"backlog x{int(n):,}: {x['processes']} proc x 1 thr, steady (ratio to x{b['sizes'][0]:,})", cell))
    if "workflows" in r:
        w = r["workflows"]
        if "error" in w:
            rows.append(("workflows", "ERROR"))
        elif "fan_in" in w:
            f, i = w["fan_in"], w["independent"]
            shape = f"{w['processes']} proc x {w['threads']} thr"
            ok = "" if f.get("ok") and i.get("ok") else " NOT OK"
            rows.append((f"fan-in x{w['count']:,} ({shape}): queue -> callback start", f"{f['queue_to_callback_seconds'] or 0:.2f} s{ok}"))
            rows.append(("fan-in: last member finished -> callback start (ms)", fmt_ms(f.get("last_member_to_callback_ms"))))
            for kind in ("queue", "run"):
                if w.get(f"{kind}_us_per_member"):
                    rows.append((
                        f"fan-in: {kind} cost per member | per independent task (ratio)",
                        f"{w[f'{kind}_us_per_member']:,.0f} us | {w[f'{kind}_us_per_task']:,.0f} us ({w[f'{kind}_cost_ratio']:.2f})",
                    ))  # fmt: skip
    return rows


def drain_cell(x: dict) -> str:
    cell = f"{fmt_rate(x['wall_per_s'])} | {fmt_rate(x['db_per_s'])}"
    if x.get("timed_out"):
        cell += " TIMEOUT"
    if not x.get("ok"):
        cell += " NOT OK"
    return cell


def print_table(results: dict) -> None:
    dbs = list(results["databases"])
    columns = {db: dict(table_rows(results["databases"][db])) for db in dbs}
    labels: list[str] = []
    for db in dbs:
        for label, _ in table_rows(results["databases"][db]):
            if label not in labels:
                labels.append(label)
    width = max([len(label) for label in labels] + [20])
    cell_width = max([len(c) for col in columns.values() for c in col.values()] + [len(db) for db in dbs] + [10])
    print(" " * width + "  " + "  ".join(db.ljust(cell_width) for db in dbs))
    for label in labels:
        cells = "  ".join(columns[db].get(label, "-").ljust(cell_width) for db in dbs)
        print(f"{label.ljust(width)}  {cells}")
    for db in dbs:
        r = results["databases"][db]
        for key in ("skipped", "error"):
            if r.get(key):
                print(f"{db}: {key}: {r[key]}")
        if r.get("journal_mode"):
            print(f"{db}: journal_mode={r['journal_mode']} (the file's mode after the run)")
        if r.get("notes"):
            for note in r["notes"]:
                print(f"{db}: {note}")


# -- the child: one database ---------------------------------------------------------------------------


def child(args: argparse.Namespace) -> int:
    db = args.child
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    os.environ["BENCH_DB"] = db
    os.environ["BENCH_DB_NAME"] = SQLITE_PATH if db == "sqlite" else PG_DB_NAME
    # A stop request (Ctrl-C, SIGTERM) unwinds through the finally blocks that stop the workers.
    signal.signal(signal.SIGTERM, _interrupt)
    create_database(db)

    import django

    django.setup()
    from django.core.management import call_command

    from bench import sections

    call_command("migrate", verbosity=0)
    sizes = sections.Sizes.quick() if args.quick else sections.Sizes()
    if args.backlog:
        sizes.backlog = tuple(int(n.replace("_", "")) for n in args.backlog.split(","))
    if args.backlog_processes:
        sizes.backlog_processes = tuple(int(n) for n in args.backlog_processes.split(","))
    work_dir = sections.work_dir()
    bench = sections.Bench(sizes, work_dir)
    results: dict = {"notes": []}
    try:
        for name in args.only or SECTIONS:
            print(f"-- {name}", flush=True)
            started = time.time()
            results[name] = run_section(bench, name)
            print(f"   ({name} took {time.time() - started:.0f}s)", flush=True)
        results["all_ok"] = all_ok(results)
        if sections.harness.has_queue_many() is False:
            results["notes"].append("no queue_many(): bulk enqueues used bulk_create() of new_exec()")
        results["journal_mode"] = journal_mode(db)
    finally:
        bench.workers.stop_all()
        from django.db import connections

        connections.close_all()
        if not args.keep:
            try:
                drop_database(db)
            except Exception as exc:  # noqa: BLE001 - the next run drops it first anyway
                print(f"   could not drop the bench database: {exc}")
            shutil.rmtree(work_dir, ignore_errors=True)
        else:
            print(f"   kept the database and the worker logs in {work_dir}")
        Path(args.out).write_text(json.dumps(results, default=str))
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run_section(bench, name: str) -> dict:
    """Run one measurement; once again if the database went away (a shared server may restart)."""
    import traceback

    from django.db import InterfaceError, OperationalError, connections

    for attempt in (1, 2):
        try:
            return getattr(bench, name)()
        except (OperationalError, InterfaceError) as exc:
            traceback.print_exc()
            bench.workers.stop_all()
            connections.close_all()
            if attempt == 1:
                print(f"   database error ({exc}); running {name} again in 15s", flush=True)
                time.sleep(15)
                continue
            return {"error": f"{type(exc).__name__}: {exc}"}
        except Exception as exc:  # noqa: BLE001 - report it and go on with the next measurement
            traceback.print_exc()
            bench.workers.stop_all()
            return {"error": f"{type(exc).__name__}: {exc}"}
    raise AssertionError("unreachable")


def all_ok(results: dict) -> bool:
    """False if any measurement failed or any drain did not run every task exactly once."""
    def drains(section):
        if not isinstance(section, dict):
            return
        for value in section.values():
            if isinstance(value, dict):
                if "ok" in value:
                    yield value
                else:
                    yield from drains(value)

    if any(isinstance(v, dict) and "error" in v for v in results.values()):
        return False
    return all(d["ok"] and not d.get("timed_out") for name in ("drain", "history", "backlog", "flow") for d in drains(results.get(name)))


def journal_mode(db: str) -> str | None:
    if db != "sqlite":
        return None
    with sqlite3.connect(SQLITE_PATH) as conn:
        return conn.execute("PRAGMA journal_mode").fetchone()[0]


def create_database(db: str) -> None:
    if db == "sqlite":
        drop_database(db)
        return
    if db == "mysql":
        _mysql(f"DROP DATABASE IF EXISTS `{PG_DB_NAME}`", f"CREATE DATABASE `{PG_DB_NAME}` CHARACTER SET utf8mb4")
        return
    import psycopg

    with psycopg.connect(**pg_params("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{PG_DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{PG_DB_NAME}"')


def drop_database(db: str) -> None:
    if db == "sqlite":
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(SQLITE_PATH + suffix).unlink(missing_ok=True)
        return
    if db == "mysql":
        _mysql(f"DROP DATABASE IF EXISTS `{PG_DB_NAME}`")
        return
    import psycopg

    with psycopg.connect(**pg_params("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{PG_DB_NAME}" WITH (FORCE)')


def _mysql(*statements: str) -> None:
    import MySQLdb

    conn = MySQLdb.connect(**mysql_params())
    try:
        for statement in statements:
            conn.cursor().execute(statement)
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
