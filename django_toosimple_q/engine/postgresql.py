"""PostgreSQL: row locks skipped by concurrent workers, one round trip where others need two, and
LISTEN/NOTIFY so that idle workers start a task within milliseconds of its commit."""

from __future__ import annotations

import datetime
import logging
import threading
from typing import Callable

from ..models import TaskExec
from .base import Engine, States

logger = logging.getLogger("django_toosimple_q.engine")

#: The channel the table's triggers notify (payload: the queue name) when a row becomes QUEUED.
CHANNEL = "toosimpleq"


class PostgreSQLEngine(Engine):
    lock_clause = " FOR UPDATE SKIP LOCKED"

    def is_busy_error(self, exc: Exception) -> bool:
        return "deadlock detected" in str(exc) or "could not serialize" in str(exc)

    def wake_sleeping(self, now: datetime.datetime) -> datetime.datetime | None:
        table = self.connection.ops.quote_name(TaskExec._meta.db_table)
        sql = (
            f"WITH woken AS (UPDATE {table} SET state = %s WHERE state = %s AND due <= %s RETURNING id) "
            f"SELECT min(due) FROM {table} WHERE state = %s AND due > %s"
        )
        params = [States.QUEUED, States.SLEEPING, now, States.SLEEPING, now]

        def run():
            with self.connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchone()[0]

        return self.retrying(run)

    def listener(self, queues_served: Callable[[str], bool], wake: Callable[[bool], None]) -> Listener | None:
        return Listener(self, queues_served, wake)


class Listener:
    """A thread holding its own connection in LISTEN mode; calls ``wake(sleeping)`` when a served queue
    gets work (``sleeping``: an execution due later, so the worker re-reads when to wake up).

    Its connection is separate from Django's (LISTEN needs a session that stays open), so it must
    reach PostgreSQL directly, not through a transaction-pooling PgBouncer.
    """

    def __init__(self, engine: PostgreSQLEngine, queues_served: Callable[[str], bool], wake: Callable[[bool], None]):
        self.engine = engine
        self.queues_served = queues_served
        self.wake = wake
        self._stop = threading.Event()
        #: True while LISTEN is in place: the worker may then skip polling claims.
        self.connected = False
        self._thread = threading.Thread(target=self._run, name="toosimpleq-listen", daemon=True)

    def start(self) -> Listener:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _connect(self):
        wrapper = self.engine.connection
        conn = wrapper.get_new_connection(wrapper.get_connection_params())
        conn.autocommit = True
        conn.execute(f"LISTEN {CHANNEL}")
        return conn

    def _run(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            conn = None
            try:
                conn = self._connect()
                if not hasattr(conn, "notifies"):
                    logger.warning("LISTEN needs psycopg 3; this worker polls every tick instead")
                    return
                delay = 0.5
                self.connected = True
                # After (re)connecting, work may have been queued while nobody listened.
                self.wake(False)
                self.wake(True)
                while not self._stop.is_set():
                    for notify in conn.notifies(timeout=1.0):
                        sleeping = notify.payload.startswith("sleeping ")
                        if self.queues_served(notify.payload.removeprefix("sleeping ")):
                            self.wake(sleeping)
            except Exception as exc:  # noqa: BLE001 - the polling tick covers us while we reconnect
                self.connected = False
                if self._stop.is_set():
                    break
                logger.warning("LISTEN connection lost (%s); reconnecting in %.1fs", str(exc).strip(), delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)
            finally:
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001
                        pass
