"""Run the test suite once per database: SQLite always, PostgreSQL and MariaDB when reachable.

TOOSIMPLEQ_REQUIRE_DBS=postgresql,mysql makes those mandatory: unreachable then means failure,
not a skipped suite. Extra arguments go to pytest (e.g. ``-k unique -x``).
TOOSIMPLEQ_TEST_DBS=sqlite,postgresql restricts which databases are tried.
"""

from __future__ import annotations

import os
import subprocess
import sys

ALL = ["sqlite", "postgresql", "mysql"]


def reachable(db: str) -> str | None:
    """None if the server answers, else why not."""
    try:
        if db == "postgresql":
            import psycopg

            psycopg.connect(
                host=os.environ.get("PGHOST", "127.0.0.1"),
                port=os.environ.get("PGPORT", "5432"),
                user=os.environ.get("PGUSER", "postgres"),
                dbname="postgres",
                connect_timeout=3,
            ).close()
        elif db == "mysql":
            import MySQLdb

            MySQLdb.connect(
                host=os.environ.get("MYSQL_HOST", "127.0.0.1"),
                port=int(os.environ.get("MYSQL_PORT", "3306")),
                user=os.environ.get("MYSQL_USER", "root"),
                password=os.environ.get("MYSQL_PASSWORD", ""),
                connect_timeout=3,
            ).close()
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return f"{type(exc).__name__}: {exc}"
    return None


def main(pytest_args: list[str]) -> int:
    wanted = [d for d in os.environ.get("TOOSIMPLEQ_TEST_DBS", ",".join(ALL)).split(",") if d]
    required = {d for d in os.environ.get("TOOSIMPLEQ_REQUIRE_DBS", "").split(",") if d}
    results: dict[str, str] = {}
    for db in wanted:
        problem = reachable(db)
        if problem:
            if db in required:
                print(f"\n=== {db}: REQUIRED but unreachable: {problem}", flush=True)
                results[db] = "unreachable (required)"
                continue
            print(f"\n=== {db}: skipped, unreachable: {problem}", flush=True)
            results[db] = "skipped (unreachable)"
            continue
        print(f"\n=== {db}: running the suite", flush=True)
        env = {**os.environ, "TOOSIMPLEQ_TEST_DB": db}
        code = subprocess.call([sys.executable, "-m", "pytest", *pytest_args], env=env)
        results[db] = "passed" if code == 0 else f"FAILED (pytest exit {code})"
    print("\n=== summary")
    for db, outcome in results.items():
        print(f"  {db:<11} {outcome}")
    failed = [db for db, outcome in results.items() if outcome.startswith(("FAILED", "unreachable"))]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
