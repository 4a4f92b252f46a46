"""PostgreSQL: row locks skipped by concurrent workers, one round trip where others need two, and
LISTEN/NOTIFY so that idle workers start a task within milliseconds of its commit.

Notifications are an accelerator, never a precondition: a worker trusts its listener only while the
listener proves it receives (see ``Listener``); otherwise the worker polls every tick.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import functools
import logging
import selectors
import socket
import threading
import time
from typing import Any, Callable, Iterable

from django.db import DatabaseError, DataError, connections

from .. import conf, waiting
from ..models import TaskExec, WorkerStatus
from .base import Engine, Selection, States
from .flow import FLOW_PAYLOAD
from .inserts import JSON_TEXT
from .outcome import Outcome

logger = logging.getLogger("django_toosimple_q.engine")

#: The channel the table's triggers notify when a row becomes QUEUED or is inserted SLEEPING (payload:
#: see ``read_payload``).
CHANNEL = "toosimpleq"
#: Seconds a ping may take to come back before the worker stops trusting its listener and polls.
PING_DELAY = 1.0
#: A connection that has never carried a ping is probed less and less often, up to this (seconds):
#: through a transaction pooler, its LISTEN stays on a pooled server connection whose other clients
#: would receive the pings.
MAX_PROBE_INTERVAL = 300.0
#: Unanswered pings a connection may have before the worker logs that it receives nothing.
PROBES_BEFORE_WARNING = 3
#: A connection that carried pings and then missed them for this long is reopened (a link that died
#: silently never recovers by itself).
RECONNECT_AFTER = 30.0


def ping_channel(worker_id: int) -> str:
    """The channel a worker's pings travel on: one per worker, so no listener sees the others' pings."""
    return f"{CHANNEL}_ping_{int(worker_id)}"


def read_payload(payload: str) -> tuple[str, bool]:
    """``(queue, sleeping)`` from a payload of the triggers: ``"<queue>"`` when an execution became
    QUEUED, ``"sleeping <queue>"`` when one was inserted SLEEPING; ``"queued <queue>"`` when it became
    QUEUED in a queue whose own name starts with one of these prefixes (migration 0024)."""
    kind, space, rest = payload.partition(" ")
    if space and kind in ("sleeping", "queued"):
        return rest, kind == "sleeping"
    return payload, False


#: ``to_char`` pattern of a UTC datetime in the ISO form ``datetime.fromisoformat`` reads.
ISO_UTC = 'YYYY-MM-DD"T"HH24:MI:SS.US'


def _is_datetime(field: Any) -> bool:
    return field.get_internal_type() == "DateTimeField"


def read_utc(value: str | None, expression: Any = None, connection: Any = None) -> datetime.datetime | None:
    """A datetime column read as ``ISO_UTC`` text (a converter, as ``executions_from_rows`` calls them)."""
    if value is None:
        return None
    try:
        return datetime.datetime.fromisoformat(value).replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        raise DataError(f"A datetime of an execution cannot be read in Python: {value!r}") from None


@functools.lru_cache(maxsize=256)
def text_array(values: tuple[str, ...]) -> str:
    """The PostgreSQL array literal of ``values``, every element double-quoted (so that commas, braces,
    spaces, quotes, backslashes and the word NULL stay text), for a ``%s::text[]`` parameter. A worker
    claims with the same lists again and again: each literal is made once."""
    quoted = ('"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' for value in values)
    return "{" + ",".join(quoted) + "}"


#: Outcomes recorded by ``finish_many`` whose announcement (``announce_finished``) rides in its statement.
ANNOUNCED_IN_STATEMENT = 350


class PostgreSQLEngine(Engine):
    insert_as_arrays = True
    seconds_between = "EXTRACT(EPOCH FROM ({end} - {start}))"
    #: Executions a worker claims between two vacuums of ``toosimpleq_ready`` (see ``vacuum_ready``).
    VACUUM_READY_EVERY = 10_000
    #: The type of each column an outcome writes (cast from its JSON text, see ``finish_many``).
    outcome_types = {
        "id": "bigint",
        "state": "varchar",
        "started": "timestamptz",
        "finished": "timestamptz",
        "result": "text",
        "error": "text",
        "output": "text",
        "exception_class": "varchar",
    }

    def finish_many(self, worker: WorkerStatus, outcomes: list[tuple[TaskExec, Outcome]]) -> set[int]:
        """One UPDATE joined to the outcomes read side by side from one JSON array of text per column
        (``ROWS FROM (json_array_elements_text(...), ...)``, as ``queue_many()`` inserts): the
        statement's text is the same for every batch size, and one JSON text per column costs far
        less to send than a PostgreSQL array, whose every element the driver quotes in Python."""
        table = TaskExec._meta.db_table
        names = ("id", *self.OUTCOME_COLUMNS)
        fields = {name: TaskExec._meta.get_field(name) for name in self.OUTCOME_COLUMNS}
        connection = self.connection
        columns: list[list[Any]] = [[] for _ in names]
        for execution, outcome in outcomes:
            values = self._outcome_values(outcome)
            columns[0].append(execution.pk)
            for index, name in enumerate(self.OUTCOME_COLUMNS, start=1):
                value = values[name]
                if isinstance(value, datetime.datetime):
                    value = value.isoformat()  # cast back by the statement (with its offset, if aware)
                elif value is not None and not isinstance(value, str):
                    value = fields[name].get_db_prep_save(value, connection)
                columns[index].append(value)
            execution.apply(outcome)
        functions = ", ".join(["json_array_elements_text(%s::json)"] * len(names))
        assignments = ", ".join(f"{name} = v.{name}::{self.outcome_types[name]}" for name in self.OUTCOME_COLUMNS)
        sql = (
            f"UPDATE {table} AS t SET {assignments} FROM (SELECT *, %s::text AS owned_state, %s::bigint AS owner "
            f"FROM ROWS FROM ({functions}) AS o({', '.join(names)}) OFFSET 0) AS v "
            # ``|| ''`` and ``+ 0``: the rows are reached by primary key. An index on ``state`` or
            # ``worker_id`` also holds the dead entries of every execution this worker ran since the
            # last vacuum, and with stale statistics the planner would pick it and walk them all.
            # The state and the worker expected are columns of ``v`` (kept a subquery by ``OFFSET 0``)
            # so that these are join conditions: as conditions on ``t`` alone, the planner guesses they
            # keep one row of the table, and on a table of a few thousand rows it scans the table first
            # and reads every outcome again for each of its rows (a batch of 128 outcomes: 15-20 ms
            # instead of 1-3 ms).
            "WHERE t.id = v.id::bigint AND t.state || '' = v.owned_state AND t.worker_id + 0 = v.owner RETURNING t.id"
        )
        params: list[Any] = [States.PROCESSING, worker.pk, *(JSON_TEXT.encode(column) for column in columns)]
        if len(outcomes) <= ANNOUNCED_IN_STATEMENT:
            # The announcement of TaskExec.wait() in the same statement (no round trip more): ids of up
            # to 20 characters each stay within the 8,000 bytes of a notification's payload.
            sql = (
                f"WITH done AS ({sql}), told AS (SELECT pg_notify(%s, string_agg(id::text, ',')) FROM done "
                f"HAVING count(*) > 0) SELECT done.id FROM done LEFT JOIN told ON true"
            )
            params.append(waiting.FINISHED_CHANNEL)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            done = {row[0] for row in cursor.fetchall()}
        if len(outcomes) > ANNOUNCED_IN_STATEMENT:
            self.announce_finished(done)
        return done

    def __init__(self, db: str):
        super().__init__(db)
        self._claimed_since_vacuum = 0

    def announce_finished(self, ids: Iterable[int]) -> None:
        """``NOTIFY toosimpleq_finished`` with the ids (comma-separated, under the 8,000-byte payload
        limit per notification), delivered at the commit: ``TaskExec.wait()`` wakes on it."""
        payloads: list[str] = []
        current = ""
        for pk in ids:
            text = str(int(pk))
            if current and len(current) + len(text) + 1 > 7900:
                payloads.append(current)
                current = ""
            current = f"{current},{text}" if current else text
        if current:
            payloads.append(current)
        if not payloads:
            return
        with self.connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p", [waiting.FINISHED_CHANNEL, payloads]
            )

    def is_busy_error(self, exc: Exception) -> bool:
        return "deadlock detected" in str(exc) or "could not serialize" in str(exc)

    # -- the claim: toosimpleq_claim(), reading toosimpleq_ready (migrations 0027, 0028) -----------

    def claim_ready(self, worker: WorkerStatus, selection: Selection, limit: int, now: datetime.datetime) -> list[TaskExec]:
        """The fast path (see ``Engine.claim``): one call of ``toosimpleq_claim()`` (migration 0028). It
        picks the first ``limit`` ready rows (locked, skipping those other workers hold), takes their
        executions that are still QUEUED and not locked by another transaction (a cancel under way),
        and deletes the ready rows of those taken. Nobody waits for a lock here, so no deadlock; a ready row whose execution was skipped
        stays for the next claim. The function keeps its plans for the life of the server connection
        and sets what its statement needs itself (see the migration).

        Outside a transaction (an idle worker with no outcome to record) it runs in autocommit: one
        round trip, commit included, between a notification and the task's start."""
        if limit <= 0 or not selection.task_names:
            return []
        # The lists as array literals and the time as ISO text, cast by the statement: the driver
        # then quotes three strings instead of dumping each list element by element (about 40 us of
        # a warm process per claim, several times that in one idle just before).
        sql = (
            f"SELECT {self._returning()} FROM "
            "toosimpleq_claim(%s::text[], %s::text[], %s::text[], %s, %s::timestamptz, %s)"
        )
        params = [
            text_array(tuple(selection.task_names)),
            text_array(tuple(selection.queues)) if selection.queues else None,
            text_array(tuple(selection.excluded_queues)) if selection.excluded_queues else None,
            limit,
            now.isoformat(),
            worker.pk,
        ]

        def run() -> list[TaskExec]:
            cursor = self._claim_cursor()
            cursor.execute(sql, params)
            return self.executions_from_rows(cursor.fetchall())

        claimed = self.retrying(run)
        claimed.sort(key=lambda e: (-e.priority, e.due, e.id))
        self._claimed_since_vacuum += len(claimed)
        return claimed

    def _claim_cursor(self) -> Any:
        """The cursor claims run on, kept while its driver connection lives (and Django logs queries
        or not): making one, Django's wrapper and the driver's cursor, took about 60 us of the path
        from a notification to the task's start in a process idle just before. Statements still go
        through Django's wrapper (its error translation, ``execute_wrapper()``)."""
        connection = self.connection
        connection.ensure_connection()
        raw, logged = connection.connection, connection.queries_logged
        cached = self.__dict__.get("_claim_cursor_cache")  # one tuple: read at once by any thread
        if cached is not None and cached[0] is raw and cached[1] == logged:
            return cached[2]
        cursor = connection.cursor()
        self._claim_cursor_cache = (raw, logged, cursor)
        return cursor

    def _taken_by_flow(self, ids: list[int]) -> None:
        # The trigger leaves rows turning PROCESSING to the claimer once CLAIMING is set in the transaction.
        with self.connection.cursor() as cursor:
            cursor.execute("DELETE FROM toosimpleq_ready WHERE id = ANY(%s)", [ids])

    def _returning(self) -> str:
        """The claim's columns, datetimes as UTC ISO text (``read_utc``): the driver's timestamp loader
        runs in Python and cost 10 us per value, more than half of building a claimed execution."""
        columns = self.__dict__.get("_returning_columns")
        if columns is None:
            columns = self._returning_columns = ", ".join(
                f"to_char({f.column} AT TIME ZONE 'UTC', '{ISO_UTC}')" if _is_datetime(f) else f.column
                for f in TaskExec._meta.concrete_fields
            )
        return columns

    def _converters(self) -> list[tuple[str, Any, list[Any]]]:
        cached = self.__dict__.get("_converter_list")
        if cached is None:
            cached = [
                (attname, expression, [read_utc] if _is_datetime(expression.target) else functions)
                for attname, expression, functions in super()._converters()
            ]
            self._converter_list = cached
        return cached

    def record_and_claim(self, *args: Any, **kwargs: Any) -> tuple[list[bool], list[TaskExec]]:
        result = super().record_and_claim(*args, **kwargs)
        if self._claimed_since_vacuum >= self.VACUUM_READY_EVERY:
            self.vacuum_ready()
        return result

    def vacuum_ready(self) -> None:
        """Remove the entries of claimed rows from ``toosimpleq_ready`` and its index, so that the next
        claims do not walk over them. The table holds waiting rows only: a vacuum reads as much as the
        backlog, never the history. ``SKIP_LOCKED``: if another worker is vacuuming it, do nothing."""
        self._claimed_since_vacuum = 0
        if self.connection.in_atomic_block:
            return  # VACUUM cannot run in a transaction: the next pass outside one will
        try:
            with self.connection.cursor() as cursor:
                cursor.execute("VACUUM (SKIP_LOCKED) toosimpleq_ready")
        except DatabaseError as exc:
            logger.warning("Could not vacuum toosimpleq_ready (%s); claims may slow down under a backlog", exc)

    def wake_sleeping(self, now: datetime.datetime) -> datetime.datetime | None:
        table = self.connection.ops.quote_name(TaskExec._meta.db_table)
        sql = (
            f"WITH woken AS (UPDATE {table} SET state = %s WHERE state = %s AND due <= %s RETURNING id) "
            f"SELECT min(due) FROM {table} WHERE state = %s AND due > %s"
        )
        params = [States.QUEUED, States.SLEEPING, now, States.SLEEPING, now]

        def run() -> datetime.datetime | None:
            with self.connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchone()[0]

        return self.retrying(run)

    def send_ping(self, worker: WorkerStatus, seq: int) -> None:
        # Delivered at the commit of the tick's transaction, to this worker's listener only.
        with self.connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, %s)", [ping_channel(worker.pk), str(seq)])

    def listener(
        self,
        worker: WorkerStatus,
        tick: float,
        queues_served: Callable[[str], bool],
        wake: Callable[[bool], None],
        flow_changed: Callable[[str], None] | None = None,
    ) -> Listener | None:
        alias = conf.listen_database()
        if alias is None:
            return None
        return Listener(alias, worker.pk, tick, queues_served, wake, flow_changed)


class Listener:
    """A thread holding its own connection in LISTEN mode; calls ``wake(sleeping)`` when a served queue
    gets work (``sleeping``: an execution due later, so the worker re-reads when to wake up).

    **Trust.** A connection that "connects" may still receive nothing: through a transaction-pooling
    PgBouncer, LISTEN lands on whichever server connection ran it and notifications never come back.
    So the worker's per-tick transaction also sends a ping (``pg_notify`` on this worker's own channel,
    with a sequence number; no extra transaction), and ``trusted()`` holds only while every ping sent
    more than ``PING_DELAY`` ago has come back. Notifications reach a session in commit order, so a
    ping coming back also proves that every notification committed before it arrived. The worker
    polls at every tick whenever ``trusted()`` is False.

    **Two steps.** The connection first LISTENs to the ping channel only; it LISTENs to the work
    channel once a ping proved it: a LISTEN through a transaction pooler would otherwise leave every
    task's notification flowing to the pool's other clients (which keep them in memory).

    **Threads.** The listener thread opens, reopens and closes the connection. Both it and the
    worker's main thread read notifications from it: the main thread sleeps on the connection's socket
    too (``fileno()``) and, woken by it, reads what arrived itself (``take_notifications()``), so a new
    task's notification wakes the thread that claims it directly; the listener thread reads whatever
    arrives while the main thread is busy (a pause still reaches the task threads at once). ``_io``
    serializes the reading; ``_lock`` guards the state behind ``ping_due()``, ``ping_sent()``,
    ``trusted()`` and ``seconds_until_check()``.
    """

    def __init__(
        self,
        alias: str,
        worker_id: int,
        tick: float,
        queues_served: Callable[[str], bool],
        wake: Callable[[bool], None],
        flow_changed: Callable[[str], None] | None = None,
    ):
        self.alias = alias
        #: Called when a queue is paused or resumed (``engine.flow.FLOW_PAYLOAD``).
        self.flow_changed = flow_changed
        self.ping_channel = ping_channel(worker_id)
        #: Shown in ``pg_stat_activity``, so operators (and tests) can tell this connection apart.
        self.application_name = f"toosimpleq-listen-{int(worker_id)}"
        self.tick = tick
        self.queues_served = queues_served
        self.wake = wake
        self._stop = threading.Event()
        # Wakes the thread out of its wait at once on stop().
        self._stop_r, self._stop_w = socket.socketpair()
        # Wakes the thread when the main thread read a first ping, to send the LISTEN it calls for.
        self._kick_r, self._kick_w = socket.socketpair()
        self._kick_r.setblocking(False)
        self._kick_w.setblocking(False)
        self._lock = threading.Lock()
        #: Held while a thread reads from the connection (or sends LISTEN on it).
        self._io = threading.Lock()
        #: The connection once its first LISTEN is in place, and its socket (None: none to read; the
        #: main thread's last read failed, and the listener thread reopens it).
        self._conn: Any = None
        self._fd: int | None = None
        self._connected = False  # the LISTEN connection is open (it may still receive nothing)
        self._received = 0  # highest ping seq received on this connection, once the work channel is LISTENed
        self._latest_ping = 0  # highest seen by the listener thread, not yet acted upon
        self._seq = 0
        # (seq, monotonic) of the pings not known to be back. Only the oldest ones matter; bounded so that
        # a connection that never proves itself cannot grow it for ever.
        self._sent: collections.deque[tuple[int, float]] = collections.deque(maxlen=64)
        self._next_probe = 0.0
        self._probe_interval = tick
        self._probes = 0  # pings sent on this connection before it carried one
        self._thread = threading.Thread(target=self._run, name="toosimpleq-listen", daemon=True)

    def start(self) -> Listener:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        try:
            self._stop_w.send(b"x")
        except OSError:
            pass
        # Prompt: the thread's wait ends at once. Only a connection attempt cannot be interrupted;
        # the thread is a daemon, so do not hold the worker's exit for it.
        self._thread.join(timeout=1.0)

    # -- the worker's main thread ------------------------------------------------------------------

    def ping_due(self, now: float) -> int | None:
        """The sequence number of a ping to send with this tick's transaction, or None (``now``: monotonic)."""
        with self._lock:
            if not self._connected:
                return None  # no LISTEN in place: it could not come back
            if not self._received:
                if now < self._next_probe:
                    return None
                self._next_probe = now + self._probe_interval
                self._probe_interval = min(self._probe_interval * 2, max(MAX_PROBE_INTERVAL, self.tick))
                self._probes += 1
                if self._probes == PROBES_BEFORE_WARNING:
                    logger.warning(
                        "The LISTEN connection (database %r) receives no notifications: is it a transaction-pooling "
                        "PgBouncer? This worker polls every tick. Set TOOSIMPLEQ_LISTEN_DATABASE to a connection "
                        "that reaches PostgreSQL directly (or through a session-pooling PgBouncer), or to None.",
                        self.alias,
                    )
            self._seq += 1
            return self._seq

    def ping_sent(self, seq: int, at: float) -> None:
        """The ping ``seq`` was committed at ``at`` (monotonic)."""
        with self._lock:
            if seq > self._received:
                self._sent.append((seq, at))

    def trusted(self, now: float) -> bool:
        """True while notifications provably arrive: the worker may then skip polling."""
        with self._lock:
            if not self._connected or not self._received:
                return False
            while self._sent and self._sent[0][0] <= self._received:
                self._sent.popleft()
            return not self._sent or self._sent[0][1] + PING_DELAY > now

    def seconds_until_check(self, now: float) -> float:
        """While trusted: seconds until the oldest ping in flight is overdue (when trust may end)."""
        if not self.trusted(now):
            return float("inf")
        with self._lock:
            if not self._sent:
                return float("inf")
            return max(self._sent[0][1] + PING_DELAY - now, 0.0)

    def fileno(self) -> int | None:
        """The connection's socket, for the main thread to sleep on (None while there is none)."""
        return self._fd

    def take_notifications(self) -> None:
        """Read what arrived on the connection, in the calling thread (the main thread, woken by its
        socket). A failure is left to the listener thread, which sees the same socket and reopens the
        connection; meanwhile the main thread stops sleeping on it."""
        with self._io:
            conn = self._conn
            if conn is None:
                return
            try:
                self._read(conn, blocking=False)
            except Exception:  # noqa: BLE001 - the listener thread reconnects
                self._fd = None

    # -- the listener thread -----------------------------------------------------------------------

    def _connect(self) -> Any:
        wrapper = connections[self.alias]
        params = {**wrapper.get_connection_params(), "application_name": self.application_name}
        conn = wrapper.Database.connect(**params)
        if not hasattr(conn, "pgconn"):
            conn.close()
            return None
        conn.autocommit = True
        return conn

    def _run(self) -> None:
        delay = 0.5
        try:
            while not self._stop.is_set():
                conn = None
                try:
                    conn = self._connect()
                    if conn is None:
                        logger.warning("LISTEN needs psycopg 3; this worker polls every tick instead")
                        return
                    delay = 0.5
                    self._listen(conn)
                except Exception as exc:  # noqa: BLE001 - the polling tick covers us while we reconnect
                    if self._stop.is_set():
                        break
                    logger.warning("LISTEN connection lost (%s); reconnecting in %.1fs", str(exc).strip(), delay)
                    self._stop.wait(delay)
                    delay = min(delay * 2, 30.0)
                finally:
                    with self._io:
                        self._conn = self._fd = None
                    with self._lock:
                        self._connected = False
                        self._received = 0
                    if conn is not None:
                        try:
                            conn.close()
                        except Exception:  # noqa: BLE001
                            pass
        finally:
            for end in (self._stop_r, self._stop_w, self._kick_r, self._kick_w):
                end.close()

    def _listen(self, conn: Any) -> None:
        """LISTEN, then hand notifications over until stopped; raises when the connection fails."""
        fd = self._open(conn)
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            selector.register(self._stop_r, selectors.EVENT_READ)
            selector.register(self._kick_r, selectors.EVENT_READ)
            while not self._stop.is_set():
                selector.select(timeout=5.0)
                if self._stop.is_set():
                    return
                with contextlib.suppress(OSError):
                    self._kick_r.recv(64)
                with self._io:  # the main thread may have read it already: then nothing is waiting
                    self._read(conn)
                self._check_silence()

    def _open(self, conn: Any) -> int:
        """LISTEN to the ping channel on a new connection and offer it to the main thread; returns its
        socket."""
        conn.add_notify_handler(lambda n: self._notified(n.channel, n.payload))  # while a statement runs
        self._latest_ping = 0
        conn.execute(f"LISTEN {self.ping_channel}")
        with self._lock:
            self._received = 0
            self._probe_interval = self.tick
            self._next_probe = 0.0
            self._probes = 0
            self._connected = True
        logger.debug("Listening on %r", self.ping_channel)
        fd = conn.fileno()
        with self._io:
            self._conn, self._fd = conn, fd
        self.wake(True)  # the worker's duties run now, and send the first ping
        return fd

    def _read(self, conn: Any, blocking: bool = True) -> None:
        """Hand over the notifications that arrived, and act on the pings; raises when the connection
        is gone. Called with ``_io`` held, by either thread; ``blocking``: may wait for the server (the
        main thread may not: a link that hangs would hold its heartbeats)."""
        pgconn = conn.pgconn
        pgconn.consume_input()  # raises when the connection is gone
        encoding = conn.info.encoding
        while (notify := pgconn.notifies()) is not None:
            self._notified(notify.relname.decode(encoding), notify.extra.decode(encoding))
        if pgconn.status != 0:  # not CONNECTION_OK
            raise ConnectionError("the LISTEN connection was closed")
        self._take_pings(conn, blocking)

    def _notified(self, channel: str, payload: str) -> None:
        if channel == self.ping_channel:
            if payload.isascii() and payload.isdigit():
                self._latest_ping = max(self._latest_ping, int(payload))
            return
        if channel != CHANNEL:
            return
        logger.debug("Notified: %s", payload)
        if payload.startswith(FLOW_PAYLOAD):
            if self.flow_changed is not None:
                self.flow_changed(payload[len(FLOW_PAYLOAD) :])
            return
        queue, sleeping = read_payload(payload)
        if self.queues_served(queue):
            self.wake(sleeping)

    def _take_pings(self, conn: Any, blocking: bool) -> None:
        """Act on the pings that came back: the first one on this connection proves it, so LISTEN to the
        work channel, then have the worker claim what was queued before and re-read the sleeping ones
        (their notifications were missed)."""
        latest = self._latest_ping
        with self._lock:
            if latest <= self._received:
                return
            first = not self._received
        if first:
            if not blocking:
                with contextlib.suppress(OSError):  # full (kicked already) or closed (stopping)
                    self._kick_w.send(b"!")  # a round trip: the listener thread's to wait for, not the main thread's
                return
            conn.execute(f"LISTEN {CHANNEL}")
            logger.debug("Listening on %r", CHANNEL)
        with self._lock:
            self._received = max(self._received, latest)
        if first:
            # What was queued, or inserted sleeping, before this LISTEN sent a notification nobody got:
            # claim now, and re-read when the next sleeping execution is due.
            self.wake(True)
            self.wake(False)

    def _check_silence(self) -> None:
        """Raise (and so reconnect) when a proven connection stopped carrying pings long ago."""
        now = time.monotonic()
        with self._lock:
            if not self._received:
                return
            late = [at for seq, at in self._sent if seq > self._received]
        if late and now - late[0] > RECONNECT_AFTER:
            raise ConnectionError(f"no ping came back for {now - late[0]:.0f}s")
