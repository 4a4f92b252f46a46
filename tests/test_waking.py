"""How the worker's main thread sleeps (``worker/waking.py``), and how, on PostgreSQL, it reads a new
task's notification from the LISTEN connection itself (``Listener.take_notifications``) instead of
being woken by the listener thread.

The listener-level tests open the LISTEN connection as the listener thread does but start no thread:
the test thread, standing for the worker's main thread, is then the only reader, so what it reads
and in which thread the worker's callbacks run are certain.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from types import SimpleNamespace

import pytest
from django.db import connection

from django_toosimple_q import conf
from django_toosimple_q.engine import get_engine
from django_toosimple_q.registry import tasks_registry
from django_toosimple_q.worker.waking import Waker
from django_toosimple_q.worker.worker import Worker

#: Far longer than any of these sleeps should last: a sleep still running then was not woken.
LONG = 30.0


def slept(wait) -> float:
    started = time.monotonic()
    wait()
    return time.monotonic() - started


# -- the waker ---------------------------------------------------------------------------------------


def test_a_set_from_another_thread_ends_the_sleep():
    waker = Waker()
    threading.Timer(0.2, waker.set).start()
    assert slept(lambda: waker.wait(LONG)) < LONG / 3
    assert not waker.is_set()


def test_a_set_before_the_sleep_ends_it_at_once_and_only_once():
    waker = Waker()
    waker.set()
    waker.set()
    assert slept(lambda: waker.wait(LONG)) < LONG / 3
    # Cleared by that wait: the next one sleeps its whole time.
    assert slept(lambda: waker.wait(0.2)) >= 0.2


def test_the_timeout_ends_the_sleep_and_reports_no_data():
    waker = Waker()
    reader, writer = socket.socketpair()
    with reader, writer:
        assert waker.wait(0.1, reader.fileno()) is False


def test_data_on_the_socket_ends_the_sleep_and_is_reported():
    waker = Waker()
    reader, writer = socket.socketpair()
    with reader, writer:
        threading.Timer(0.2, writer.send, (b"x",)).start()
        started = time.monotonic()
        assert waker.wait(LONG, reader.fileno()) is True
        assert time.monotonic() - started < LONG / 3


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals reach the main thread")
def test_a_signal_handler_that_sets_ends_the_sleep_of_the_main_thread():
    """A stop asked by SIGTERM (``stopping.install_signal_handlers``) sets the waker from a handler."""
    waker = Waker()
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: waker.set())
    try:
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        assert slept(lambda: waker.wait(LONG)) < LONG / 3
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_a_set_racing_with_the_end_of_a_sleep_ends_the_next_sleep_or_this_one():
    """However a set() from another thread falls around the end of a sleep, it is never lost for a
    sleep that begins after it: the flag is cleared before the byte is drained."""
    waker = Waker()
    for _ in range(300):
        setter = threading.Thread(target=waker.set)
        setter.start()
        waker.wait(0.001)
        setter.join()
        # The set() happened before this sleep began: if the previous sleep did not take it, this one must.
        if waker.is_set():
            assert slept(lambda: waker.wait(LONG)) < LONG / 3
        assert not waker.is_set()


# -- the main thread reading the LISTEN connection (PostgreSQL) --------------------------------------


@pytest.fixture
def opened_listener(transactional_db):
    """A worker's Listener whose connection is open and LISTENing to its ping channel, with no thread:
    ``(listener, woken)``, ``woken`` collecting ``(sleeping, thread)`` for each wake-up it asks for."""
    if connection.vendor != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL only")
    woken: list[tuple[bool, threading.Thread]] = []
    worker = SimpleNamespace(pk=987_654)
    listener = get_engine().listener(worker, 1.0, lambda queue: True, lambda sleeping: woken.append((sleeping, threading.current_thread())))
    assert listener is not None, conf.listen_database()
    conn = listener._connect()
    listener._open(conn)
    woken.clear()  # the wake-up asked for by the opening itself (the worker's duties run then)
    yield listener, woken, worker
    conn.close()
    # No thread was started, so nothing else closes the listener's socket pairs.
    for end in (listener._stop_r, listener._stop_w, listener._kick_r, listener._kick_w):
        end.close()


def prove(listener, worker) -> None:
    """Send a ping as a tick does and read it here; then do what the kicked listener thread does."""
    waker = Waker()
    seq = listener.ping_due(time.monotonic())
    get_engine().send_ping(worker, seq)  # autocommit: delivered now
    listener.ping_sent(seq, time.monotonic())
    assert waker.wait(LONG, listener.fileno()) is True
    listener.take_notifications()
    # The first ping calls for a LISTEN to the work channel, a round trip the main thread never waits
    # for: it kicks the listener thread instead, and the connection is not trusted yet.
    assert listener._kick_r.recv(8) == b"!"
    assert not listener.trusted(time.monotonic())
    with listener._io:
        listener._read(listener._conn)  # the kicked listener thread's turn
    assert listener.trusted(time.monotonic())


def test_the_main_thread_reads_a_new_task_notification_itself(opened_listener):
    listener, woken, worker = opened_listener
    prove(listener, worker)
    woken.clear()
    waker = Waker()
    tasks_registry["record"].queue("read by the main thread")
    assert waker.wait(LONG, listener.fileno()) is True
    listener.take_notifications()
    assert woken == [(False, threading.current_thread())]


def test_a_worker_sleeping_on_the_connection_reads_the_notification_in_its_own_thread(opened_listener):
    listener, woken, worker = opened_listener
    prove(listener, worker)
    sleeper = Worker(tick=LONG)
    sleeper._listener = listener
    sleeper._maybe_work.clear()
    listener.wake = sleeper._notified
    tasks_registry["record"].queue("wakes the worker")
    assert slept(lambda: sleeper.wait(LONG)) < LONG / 3
    assert sleeper._maybe_work.is_set()
    assert not sleeper._wake.is_set()  # the byte its own read wrote is drained: the next sleep is whole


def test_a_connection_broken_under_the_main_thread_is_left_to_the_listener_thread(opened_listener):
    listener, woken, worker = opened_listener
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [listener._conn.info.backend_pid])
    # The server's farewell, then the end of the stream, read as data; libpq may take a read for each.
    for _ in range(3):
        fd = listener.fileno()
        if fd is None:
            break
        assert Waker().wait(LONG, fd) is True
        listener.take_notifications()  # raises nothing
    assert listener.fileno() is None  # the main thread stops sleeping on it; the listener thread reopens it
    assert woken == []


# -- sleeping after a claim ---------------------------------------------------------------------------


def test_after_a_claim_that_took_every_waiting_execution_the_main_thread_sleeps_until_an_outcome(transactional_db):
    """A pass that claimed less than it could (the queue is empty) ends in a sleep, which the outcome
    ends; it does not go round again at once, holding the interpreter while a task thread starts."""
    worker = Worker(tick=LONG, threads=2)  # room for two: one waiting execution is a partial claim
    worker.status = worker._register_when_possible()
    worker.duties.registered(worker.status, worker.status.started)
    worker.pool.start()
    try:
        tasks_registry["sleep_then_record"].queue("claimed alone", 1.0)
        worker._pass()  # the first pass runs the duties and claims it
        assert list(worker._in_flight) and worker.pool.has_finished()  # returned only once it had run
    finally:
        worker.pool.stop()
