"""Workers behind a real PgBouncer (transaction and session pooling), and the listener's self-check.

A worker never trusts a channel it has not seen work: its listener must bring back the pings of the
worker's own tick transactions, or the worker polls every tick. Through a transaction pooler nothing
comes back (polling); through a session pooler or a direct connection notifications are trusted.
PostgreSQL only; skipped when pgbouncer is not installed unless TOOSIMPLEQ_REQUIRE_PGBOUNCER=1.
"""

from __future__ import annotations

import contextlib
import json
import io
import signal
import socket
import threading
from collections import Counter

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection, connections, transaction
from django.test import override_settings

from django_toosimple_q.models import TaskExec, WorkerStatus
from django_toosimple_q.registry import tasks_registry
from tests.app.models import Record

from .conftest import Proc, wait_for

States = TaskExec.States
MODES = ["transaction", "session"]
pytestmark = pytest.mark.postgresql_only


def status_of(proc: Proc) -> WorkerStatus:
    return wait_for(lambda: WorkerStatus.objects.filter(pid=proc.pid).first(), message=proc)


def receives(status: WorkerStatus) -> bool:
    return WorkerStatus.objects.get(pk=status.pk).receives_notifications


def ran(key: str) -> bool:
    return Record.objects.filter(key=key).exists()


def stop(*procs: Proc) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out


def listener_backends(status: WorkerStatus) -> list[int]:
    """PIDs of the server backends holding this worker's LISTEN connection (its application_name)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
            [f"toosimpleq-listen-{status.pk}"],
        )
        return [row[0] for row in cursor.fetchall()]


@contextlib.contextmanager
def through(bouncer):
    """The test process's "pooled" alias goes through ``bouncer``; the queue is there meanwhile."""
    wrapper = connections["pooled"]
    mirror = wrapper.settings_dict
    wrapper.close()
    wrapper.settings_dict = {**mirror, "PORT": str(bouncer.port)}
    try:
        with override_settings(TOOSIMPLEQ_DATABASE="pooled"):
            yield wrapper
    finally:
        wrapper.close()
        wrapper.settings_dict = mirror


# -- through the pooler ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_long_running_workers_pick_up_work_queued_while_idle(workers, pgbouncers, mode):
    bouncer = pgbouncers(mode)
    procs = [workers.start("--tick", "0.5", env_extra=bouncer.worker_env()) for _ in range(2)]
    statuses = [status_of(proc) for proc in procs]
    if mode == "transaction":
        # LISTEN "connects" through the pooler, but the pings never come back: the workers say so and poll.
        for proc in procs:
            proc.wait_output("receives no notifications")
    else:
        wait_for(lambda: all(receives(s) for s in statuses), message=procs[0])
    for i in range(3):
        tasks_registry["record"].queue(f"idle{i}")
        wait_for(lambda: ran(f"idle{i}"), message=procs[0])
    assert [receives(s) for s in statuses] == [mode == "session"] * 2
    report = io.StringIO()
    call_command("toosimpleq_status", "--json", stdout=report)
    shown = {w["id"]: w["receives_notifications"] for w in json.loads(report.getvalue())["workers_online"]}
    assert shown == {s.pk: mode == "session" for s in statuses}
    stop(*procs)


@pytest.mark.parametrize("mode", MODES)
def test_seconds_schedule_runs(workers, pgbouncers, mode):
    env = {**pgbouncers(mode).worker_env(), "TOOSIMPLEQ_TEST_SCHEDULES": "every_second"}
    proc = workers.start("--tick", "0.5", env_extra=env)
    wait_for(lambda: Record.objects.filter(key__startswith="every_second|").count() >= 4, message=proc)
    stop(proc)
    keys = list(Record.objects.values_list("key", flat=True))
    assert len(keys) == len(set(keys))
    assert TaskExec.objects.filter(task_name="record_occurrence", state=States.SUCCEEDED).count() == len(keys)


@pytest.mark.parametrize("mode", MODES)
def test_three_workers_with_two_threads_drain_2000_tasks_exactly_once(workers, pgbouncers, mode):
    env = pgbouncers(mode).worker_env()
    procs = [workers.start("--tick", "0.5", "--threads", "2", env_extra=env) for _ in range(3)]
    for proc in procs:
        status_of(proc)
    tasks_registry["record"].queue_many([(f"drain{i}",) for i in range(2000)])
    wait_for(lambda: TaskExec.objects.filter(state=States.SUCCEEDED).count() == 2000, timeout=300, message=procs[0])
    stop(*procs)
    runs = Counter(Record.objects.values_list("key", flat=True))
    assert len(runs) == 2000 and set(runs.values()) == {1}
    assert not TaskExec.objects.exclude(state=States.SUCCEEDED).exists()
    print("executions per worker:", Counter(TaskExec.objects.values_list("worker_id", flat=True)))


@pytest.mark.parametrize("mode", MODES)
def test_rescue_after_sigkill(workers, pgbouncers, mode):
    env = pgbouncers(mode).worker_env()
    execution = tasks_registry["sleep_then_record"].queue("rescued", 3)
    victim = workers.start("--tick", "0.2", "--timeout", "2", "-v", "2", env_extra=env)
    victim.wait_output(f"Running sleep_then_record #{execution.pk}")
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    rescuer = workers.start("--tick", "0.2", "--timeout", "30", env_extra=env)
    wait_for(lambda: TaskExec.objects.filter(state=States.SUCCEEDED).exists(), timeout=60, message=rescuer)
    stop(rescuer)
    execution.refresh_from_db()
    assert execution.state == States.INTERRUPTED and "stopped responding" in execution.error
    assert execution.replaced_by.state == States.SUCCEEDED
    assert TaskExec.objects.count() == 2 and Record.objects.filter(key="rescued").count() == 1


@pytest.mark.django_db(transaction=True, databases=["default", "pooled"])
@pytest.mark.parametrize("mode", MODES)
def test_queue_from_the_web_side(workers, pgbouncers, mode):
    bouncer = pgbouncers(mode)
    with through(bouncer) as pooled:
        # More calls than psycopg's threshold for preparing a statement (5): Django leaves that off.
        for i in range(12):
            tasks_registry["record"].queue(f"web{i}")
        tasks_registry["record"].queue_many([(f"many{i}",) for i in range(5)])
        with contextlib.suppress(RuntimeError), transaction.atomic(using="pooled"):
            tasks_registry["record"].queue("rolled back")
            raise RuntimeError("the view failed")
        assert pooled.connection.info.port == bouncer.port
    proc = workers.start("--tick", "0.5", env_extra=bouncer.worker_env())
    wait_for(lambda: Record.objects.count() == 17, message=proc)
    stop(proc)
    assert TaskExec.objects.filter(state=States.SUCCEEDED).count() == 17
    assert not ran("rolled back")


def test_listen_through_a_transaction_pooler_sends_no_task_notification_to_other_clients(workers, pgbouncers):
    """Through transaction pooling, LISTEN stays on the server connection that ran it, and whichever
    client uses that connection next receives its notifications (psycopg keeps them in memory). With
    one server connection in the pool, every client shares the listener's: none may receive the
    notifications of queued work, as the listener LISTENs to them only once a ping proved it."""
    bouncer = pgbouncers("transaction", pool_size=1)
    proc = workers.start("--tick", "0.5", env_extra=bouncer.worker_env())
    proc.wait_output("receives no notifications")
    params = {**connection.get_connection_params(), "port": bouncer.port}
    with psycopg.connect(**params, autocommit=True) as client:
        for i in range(5):
            with client.transaction():
                client.execute("SELECT 1")  # holds the pool's one server connection...
                tasks_registry["record"].queue(f"stray{i}")  # ...while work is queued (directly)
        client.execute("SELECT 1")
        channels = {n.channel for n in client.notifies(timeout=0.5)}
    assert channels <= {f"toosimpleq_ping_{status_of(proc).pk}"}
    wait_for(lambda: Record.objects.count() == 5, message=proc)  # polled
    stop(proc)


def test_server_side_binding_through_the_transaction_pooler(workers, pgbouncers):
    """``"OPTIONS": {"server_side_binding": True}`` sends parameters apart from the SQL (still no
    prepared statements): every statement of the worker works through transaction pooling."""
    env = {**pgbouncers("transaction").worker_env(), "TOOSIMPLEQ_TEST_SERVER_SIDE_BINDING": "1"}
    proc = workers.start("--tick", "0.5", "--threads", "2", env_extra=env)
    status_of(proc)
    tasks_registry["record"].queue_many([(f"bound{i}",) for i in range(50)])
    tasks_registry["fail"].queue("on purpose")
    tasks_registry["record_with_retries"].queue("retried")
    wait_for(lambda: TaskExec.objects.filter(state__in=States.finished()).count() == 52, message=proc)
    stop(proc)
    assert Record.objects.count() == 51
    assert TaskExec.objects.get(task_name="fail").state == States.FAILED


def test_session_pooler_notifications_start_work_at_once(workers, pgbouncers):
    proc = workers.start("--tick", "600", env_extra=pgbouncers("session").worker_env())
    status = status_of(proc)
    wait_for(lambda: receives(status), message=proc)
    for i in range(3):
        tasks_registry["record"].queue(f"notified{i}")
        # With a 10-minute tick, only a notification can explain a start within the wait.
        wait_for(lambda: ran(f"notified{i}"), timeout=20, message=proc)
    assert receives(status)
    stop(proc)


def test_direct_listen_database_while_the_rest_goes_through_the_transaction_pooler(workers, pgbouncers):
    env = {
        **pgbouncers("transaction").worker_env(),
        "TOOSIMPLEQ_TEST_LISTEN_PORT": str(connection.settings_dict["PORT"] or 5432),
    }
    proc = workers.start("--tick", "600", env_extra=env)
    status = status_of(proc)
    wait_for(lambda: receives(status), message=proc)
    for i in range(3):
        tasks_registry["record"].queue(f"direct{i}")
        wait_for(lambda: ran(f"direct{i}"), timeout=20, message=proc)
    stop(proc)


def test_listen_database_none_polls(workers):
    proc = workers.start("--tick", "0.5", env_extra={"TOOSIMPLEQ_TEST_LISTEN_PORT": "none"})
    status = status_of(proc)
    proc.wait_output("started")
    tasks_registry["record"].queue("polled")
    wait_for(lambda: ran("polled"), message=proc)
    assert not receives(status) and listener_backends(status) == []
    stop(proc)
    assert "LISTEN" not in proc.output and "otifications" not in proc.output


# -- the listener's self-check ---------------------------------------------------------------------


class HoldingProxy:
    """A TCP proxy on loopback in front of PostgreSQL that can hold what the server sends: while held,
    nothing reaches the clients (notifications included); released, it all arrives, in order."""

    def __init__(self, port: int):
        self.target = ("127.0.0.1", port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.released = threading.Event()
        self.released.set()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def hold(self) -> None:
        self.released.clear()

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.released.set()
        for sock in [self.server, *self.sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, holdable: bool) -> None:
        try:
            while data := source.recv(65536):
                if holdable:
                    self.released.wait()
                sink.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def proxy():
    proxy = HoldingProxy(int(connection.settings_dict["PORT"] or 5432))
    yield proxy
    proxy.close()


def test_terminated_listener_reconnects_and_is_trusted_again(workers, proxy):
    proc = workers.start("--tick", "600", env_extra={"TOOSIMPLEQ_TEST_LISTEN_PORT": str(proxy.port)})
    status = status_of(proc)
    wait_for(lambda: receives(status), message=proc)
    [backend] = listener_backends(status)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [backend])
    proc.wait_output("LISTEN connection lost")
    tasks_registry["record"].queue("while reconnecting")
    # A new backend proves itself with a ping; what was queued meanwhile is claimed on reconnection.
    wait_for(lambda: listener_backends(status) not in ([], [backend]), message=proc)
    wait_for(lambda: ran("while reconnecting"), timeout=20, message=proc)
    wait_for(lambda: receives(status), message=proc)
    tasks_registry["record"].queue("after reconnecting")
    wait_for(lambda: ran("after reconnecting"), timeout=20, message=proc)  # a 10-minute tick: notified
    stop(proc)


def test_blocked_listener_is_not_trusted_and_the_worker_polls_until_it_recovers(workers, proxy):
    proc = workers.start("--tick", "0.5", env_extra={"TOOSIMPLEQ_TEST_LISTEN_PORT": str(proxy.port)})
    status = status_of(proc)
    wait_for(lambda: receives(status), message=proc)
    [backend] = listener_backends(status)
    proxy.hold()
    wait_for(lambda: not receives(status), message=proc)  # a ping did not come back
    for i in range(3):
        tasks_registry["record"].queue(f"held{i}")
        wait_for(lambda: ran(f"held{i}"), message=proc)  # polled: the notification is held
    assert not receives(status)
    proxy.release()
    wait_for(lambda: receives(status), message=proc)  # the held pings arrive: trusted again
    assert listener_backends(status) == [backend]  # the same connection, not a new one
    tasks_registry["record"].queue("released")
    wait_for(lambda: ran("released"), message=proc)
    stop(proc)
