"""Workflows (issue #18): chains, groups, fan-in, nesting, failure and cancel rules, retries and rescue
of steps, wait() (PostgreSQL: woken by NOTIFY), against every database with real workers."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest
from django.utils import timezone

from django_toosimple_q.engine import get_engine
from django_toosimple_q.errors import InvalidCall, InvalidWorkflow, UpstreamFailed, WaitTimeout
from django_toosimple_q.models import StepLink, TaskExec, Workflow
from django_toosimple_q.registry import tasks_registry
from django_toosimple_q.workflows import chain, group
from tests.app.models import Record

from .conftest import run_worker_here, wait_for

States = TaskExec.States
T = tasks_registry


def step(name):
    return T[name]


# -- shapes ------------------------------------------------------------------------------------------


def test_a_chain_passes_each_result_to_the_next_step(transactional_db):
    last = chain(step("wf_const").s(3), step("wf_double").s(), step("wf_add").s(10)).queue()
    assert last.state == States.WAITING and last.upstream_left == 1
    run_worker_here()
    final = last.wait(timeout=10)
    assert final.state == States.SUCCEEDED and final.result == 16
    steps = list(TaskExec.objects.filter(workflow_id=last.workflow_id).order_by("pk"))
    assert [s.result for s in steps] == [3, 6, 16]
    # Each step started after the one before it finished.
    assert steps[0].finished <= steps[1].started and steps[1].finished <= steps[2].started


def test_a_step_that_does_not_take_the_result(transactional_db):
    last = (step("wf_const").s(3) | step("wf_const").s("mine").set(pass_result=False) | step("wf_double").s()).queue()
    run_worker_here()
    assert last.wait(timeout=10).result == "minemine"


def test_fan_in_receives_every_result_in_the_groups_order(transactional_db):
    callback = chain(group(step("wf_member").s(i) for i in range(20)), step("wf_collect").s()).queue()
    assert callback.upstream_left == 20
    run_worker_here("--until_done", "--threads", "4")
    final = callback.wait(timeout=10)
    assert final.result == [i * i for i in range(20)]
    members = TaskExec.objects.filter(workflow_id=callback.workflow_id, task_name="wf_member")
    assert max(m.finished for m in members) <= final.started


def test_nested_a_group_inside_a_chain_and_chains_as_members(transactional_db):
    # 2 -> (x2 -> +1, +5, (x2 | +100 ... as a group of one chain)) -> collect
    workflow = chain(
        step("wf_const").s(2),
        group(
            chain(step("wf_double").s(), step("wf_add").s(1)),
            step("wf_add").s(5),
            group(chain(step("wf_double").s(), step("wf_add").s(100))),
        ),
        step("wf_collect").s(),
        step("wf_add").s([0]),
    )
    last = workflow.queue()
    run_worker_here("--until_done", "--threads", "3")
    assert last.wait(timeout=10).result == [5, 7, 104, 0]


def test_group_queue_returns_each_member_and_they_run_in_parallel(transactional_db):
    members = group(step("wf_double").s(i) for i in range(5)).queue()
    assert all(m.state == States.QUEUED for m in members)
    run_worker_here()
    assert [m.wait(timeout=5).result for m in members] == [0, 2, 4, 6, 8]


def test_bad_workflows_are_refused_before_anything_is_written(transactional_db):
    with pytest.raises(InvalidWorkflow, match="at least one step"):
        chain()
    with pytest.raises(InvalidWorkflow, match="item #1 is a int"):
        chain(step("wf_double").s(1), 5)
    with pytest.raises(InvalidWorkflow, match="ends with a group"):
        chain(step("wf_double").s(1), group(step("wf_double").s())).queue()
    with pytest.raises(InvalidWorkflow, match="unknown option"):
        step("wf_double").s(1).set(colour="red")
    with pytest.raises(InvalidCall, match="wf_add"):
        # wf_add(value, amount) receives the result: one more argument is needed.
        chain(step("wf_double").s(1), step("wf_add").s()).queue()
    with pytest.raises(InvalidCall, match="does not receive"):
        step("wf_double").s().queue()
    assert not TaskExec.objects.exists() and not Workflow.objects.exists()


def test_step_options_apply_to_its_execution(transactional_db):
    due = timezone.now() + timezone.timedelta(hours=1)
    last = chain(
        step("wf_const").s(1).set(queue="other", priority=7),
        step("wf_double").s().set(due=due, retries=3, retry_delay=2),
    ).queue()
    first = TaskExec.objects.get(workflow_id=last.workflow_id, task_name="wf_const")
    assert (first.queue, first.priority) == ("other", 7)
    assert (last.retries, last.retry_delay, last.due) == (3, 2, due)
    run_worker_here("--until_done", "--queue", "other")
    last.refresh_from_db()
    assert last.state == States.SLEEPING  # released, but not due yet


# -- failures, retries, cancel, requeue ------------------------------------------------------------


def test_a_failed_step_blocks_what_depends_on_it_and_says_why(transactional_db):
    last = chain(step("wf_const").s(1), step("wf_fail").s(), step("wf_double").s(), step("wf_double").s()).queue()
    run_worker_here()
    failed = TaskExec.objects.get(workflow_id=last.workflow_id, task_name="wf_fail")
    assert failed.state == States.FAILED
    final = last.wait(timeout=5)
    assert final.state == States.BLOCKED
    blocked = TaskExec.objects.filter(workflow_id=last.workflow_id, state=States.BLOCKED)
    assert blocked.count() == 2
    first_blocked = blocked.order_by("pk").first()
    assert first_blocked.error == f"Not run: upstream step wf_fail #{failed.pk} ended FAILED."
    assert f"#{first_blocked.pk} ended BLOCKED" in final.error


def test_a_callback_that_runs_on_failure_receives_the_failures(transactional_db):
    members = [step("wf_member").s(0), step("wf_fail").s(), chain(step("wf_const").s(3), step("wf_fail").s()), step("wf_member").s(2)]
    callback = chain(group(members), step("wf_collect").s().set(run_on_failure=True)).queue()
    run_worker_here()
    final = callback.wait(timeout=5)
    assert final.state == States.SUCCEEDED
    assert final.result == [0, "failed:FAILED", "failed:FAILED", 4]


def test_upstream_failed_is_what_the_function_receives(transactional_db, clean_registry):
    from django_toosimple_q.decorators import register_task

    seen = []

    @register_task(name="wf_inspect")
    def inspect_results(results):
        seen.extend(results)

    callback = chain(group(step("wf_fail").s(), step("wf_double").s(4)), T["wf_inspect"].s().set(run_on_failure=True)).queue()
    run_worker_here()
    callback.wait(timeout=5)
    failure, value = seen
    assert isinstance(failure, UpstreamFailed) and failure.state == States.FAILED and "step failed" in failure.error
    assert value == 8


def test_a_retried_step_is_followed_by_its_dependents_and_by_wait(transactional_db):
    first = step("wf_flaky").s(1, "flaky-once")
    last = chain(first, step("wf_double").s()).queue()
    flaky = TaskExec.objects.get(workflow_id=last.workflow_id, task_name="wf_flaky")
    run_worker_here()
    assert flaky.wait(timeout=5).result == 2  # the retry's result
    flaky.refresh_from_db()
    assert flaky.state == States.FAILED and flaky.replaced_by_id is not None
    assert last.wait(timeout=5).result == 4
    assert StepLink.objects.get(downstream=last).upstream_id == flaky.replaced_by_id


def test_cancelling_a_workflow_cancels_every_step_not_started(transactional_db):
    last = chain(step("wf_const").s(1), group(step("wf_double").s(), step("wf_double").s()), step("wf_collect").s()).queue()
    cancelled = get_engine().cancel_workflow(last.workflow_id, timezone.now())
    assert len(cancelled) == 4
    run_worker_here()
    states = set(TaskExec.objects.filter(workflow_id=last.workflow_id).values_list("state", flat=True))
    assert states == {States.CANCELLED}
    assert last.wait(timeout=1).error == "Cancelled with its workflow."


def test_cancelling_one_waiting_step_blocks_its_dependents(transactional_db):
    last = chain(step("wf_const").s(1), step("wf_double").s(), step("wf_double").s()).queue()
    middle = TaskExec.objects.get(workflow_id=last.workflow_id, upstream_left=1, pk__lt=last.pk)
    assert get_engine().cancel([middle.pk], timezone.now()) == [middle.pk]
    last.refresh_from_db()
    assert last.state == States.BLOCKED and "ended CANCELLED" in last.error
    run_worker_here()
    assert TaskExec.objects.get(workflow_id=last.workflow_id, task_name="wf_const").state == States.SUCCEEDED


def test_requeuing_a_failed_step_lets_its_dependents_run(transactional_db, clean_registry):
    from django_toosimple_q.decorators import register_task

    @register_task(name="wf_fails_once")
    def fails_once(value):
        if not Record.objects.filter(key="failed-once").exists():
            Record.objects.create(key="failed-once", pid=os.getpid())
            raise RuntimeError("first time")
        return value + 1

    last = chain(step("wf_const").s(1), T["wf_fails_once"].s(), step("wf_double").s(), step("wf_double").s()).queue()
    run_worker_here()
    assert last.wait(timeout=5).state == States.BLOCKED
    failed = TaskExec.objects.get(workflow_id=last.workflow_id, task_name="wf_fails_once")
    get_engine().requeue(failed, timezone.now(), retries=0, retry_delay=0, unique=False)
    assert TaskExec.objects.filter(workflow_id=last.workflow_id, state=States.WAITING).count() == 2
    run_worker_here()
    assert last.wait(timeout=5).result == 8


def test_a_step_holds_the_options_of_a_task(transactional_db):
    # The time limit applies to a step (it runs in a child process): sleepy_limited(timeout=1, retries=1).
    last = chain(step("wf_const").s(5), step("sleepy_limited").s(), step("wf_double").s()).queue()
    run_worker_here("--until_done", "--threads", "2")
    final = last.wait(timeout=30)
    assert final.state == States.BLOCKED
    limited = TaskExec.objects.filter(workflow_id=last.workflow_id, task_name="sleepy_limited").order_by("pk")
    assert [e.state for e in limited] == [States.FAILED, States.FAILED]  # its retry too
    assert "TimeLimitExceeded" in (limited[1].exception_class or "")
    assert f"#{limited[1].pk} ended FAILED" in final.error


# -- unique steps ----------------------------------------------------------------------------------


def _runs(value):
    return Record.objects.filter(key=f"unique-{value}").count()


def test_a_unique_root_step_merges_into_the_identical_waiting_call(transactional_db):
    twin = step("wf_unique").queue(4)
    last = chain(step("wf_unique").s(4), step("wf_double").s()).queue()
    merged = TaskExec.objects.get(workflow_id=last.workflow_id, task_name="wf_unique", state=States.CANCELLED)
    assert merged.replaced_by_id == twin.pk and f"Merged into #{twin.pk}" in merged.error
    assert merged.unique_key is None
    # What came after the step waits for the twin, which now takes part in the workflow.
    assert StepLink.objects.get(downstream=last).upstream_id == twin.pk
    twin.refresh_from_db()
    assert twin.workflow_id == last.workflow_id and twin.state == States.QUEUED
    # A single step queued alone returns what will run, as task.queue() does.
    assert step("wf_unique").s(4).queue().pk == twin.pk
    run_worker_here()
    assert last.wait(timeout=10).result == 80
    assert merged.wait(timeout=1).pk == twin.pk
    assert _runs(4) == 1


def test_a_call_queued_while_a_unique_step_waits_merges_into_the_step(transactional_db):
    last = chain(step("wf_unique").s(5), step("wf_double").s()).queue()
    root = TaskExec.objects.get(workflow_id=last.workflow_id, task_name="wf_unique")
    assert root.state == States.QUEUED and root.is_unique and root.unique_key is not None
    assert step("wf_unique").queue(5).pk == root.pk
    assert step("wf_unique").queue(6).pk != root.pk  # another call
    run_worker_here()
    assert last.wait(timeout=10).result == 100
    assert _runs(5) == 1 and _runs(6) == 1


def test_a_released_step_that_receives_merges_into_the_sleeping_twin_moved_earlier(transactional_db):
    # The twin waits for an hour; the step receives 7 from wf_const, so its call is wf_unique(7).
    twin = step("wf_unique").queue(7, due=timezone.now() + timezone.timedelta(hours=1))
    assert twin.state == States.SLEEPING
    last = chain(step("wf_const").s(7), step("wf_unique").s(), step("wf_add").s(1)).queue()
    released = TaskExec.objects.get(workflow_id=last.workflow_id, task_name="wf_unique")
    assert released.state == States.WAITING and released.unique_key is None  # no key before the queue
    run_worker_here()
    assert last.wait(timeout=10).result == 71
    released.refresh_from_db()
    twin.refresh_from_db()
    assert released.state == States.CANCELLED and released.replaced_by_id == twin.pk
    assert twin.state == States.SUCCEEDED and twin.workflow_id == last.workflow_id
    assert _runs(7) == 1


def test_two_workflows_share_one_run_of_an_identical_unique_step(transactional_db):
    first = chain(step("wf_unique").s(8), step("wf_add").s(1)).queue()
    second = chain(step("wf_unique").s(8), step("wf_add").s(2)).queue()
    root = TaskExec.objects.get(workflow_id=first.workflow_id, task_name="wf_unique")
    merged = TaskExec.objects.get(workflow_id=second.workflow_id, task_name="wf_unique")
    assert merged.replaced_by_id == root.pk and merged.state == States.CANCELLED
    root.refresh_from_db()
    assert root.workflow_id == first.workflow_id  # stays in its own workflow; links cross over
    run_worker_here()
    assert first.wait(timeout=10).result == 81 and second.wait(timeout=10).result == 82
    assert _runs(8) == 1


def test_identical_unique_members_of_a_group_run_once_and_fan_in_in_order(transactional_db):
    callback = chain(
        group(step("wf_unique").s(3), step("wf_unique").s(9), step("wf_unique").s(3)), step("wf_collect").s()
    ).queue()
    run_worker_here("--until_done", "--threads", "2")
    assert callback.wait(timeout=10).result == [30, 90, 30]
    assert _runs(3) == 1 and _runs(9) == 1


def test_identical_unique_steps_released_at_once_by_several_workers(workers):
    """30 chains end with the same unique call, released by 2 worker processes x 4 threads as their
    first steps finish: each chain ends SUCCEEDED (the step, or the twin it merged into), nothing is
    left waiting, and the call ran at most once per chain."""
    lasts = [chain(step("wf_member").s(i, 20), step("wf_unique").s(7, "c").set(pass_result=False)).queue() for i in range(30)]
    for _ in range(2):
        workers.start("--threads", "4", "--tick", "0.5")
    finals = [last.wait(timeout=60) for last in lasts]
    assert {final.state for final in finals} == {States.SUCCEEDED}
    assert {final.result for final in finals} == {70}
    runs = Record.objects.filter(key="unique-7c").count()
    merged = TaskExec.objects.filter(task_name="wf_unique", state=States.CANCELLED, replaced_by__isnull=False).count()
    assert 1 <= runs <= 30 and runs + merged == 30
    assert not TaskExec.objects.filter(state__in=[*States.not_started(), States.PROCESSING]).exists()
    print(f"\n{runs} run(s) of the unique call for 30 chains, {merged} step(s) merged")

def test_a_step_that_receives_a_failure_is_not_merged(transactional_db):
    last = chain(step("wf_fail").s(), step("wf_unique").s().set(run_on_failure=True)).queue()
    run_worker_here()
    final = last.wait(timeout=10)
    # It ran (UpstreamFailed * 10 raises in its body): no plain call is identical to it.
    assert final.pk == last.pk and final.state == States.FAILED and "TypeError" in final.exception_class


def test_a_retry_of_a_unique_step_merges_into_a_twin_queued_meanwhile(transactional_db):
    flaky = step("wf_flaky_unique")
    last = chain(flaky.s(2, "flaky"), step("wf_double").s()).queue()
    run_worker_here()
    assert last.wait(timeout=10).result == 6  # no twin: the retry ran, the chain went on with its result
    # Its first run queues a twin for an hour later: the step's retry merges into it (moved earlier).
    last = chain(flaky.s(2, "flaky-twin"), step("wf_double").s()).queue()
    run_worker_here()
    assert last.wait(timeout=10).result == 6
    first = TaskExec.objects.get(workflow_id=last.workflow_id, task_name="wf_flaky_unique", state=States.FAILED)
    retry = TaskExec.objects.get(pk=first.replaced_by_id)
    assert retry.state == States.CANCELLED and "Merged into" in retry.error
    twin = TaskExec.objects.get(pk=retry.replaced_by_id)
    assert twin.state == States.SUCCEEDED and twin.result == 3 and twin.workflow_id == last.workflow_id
    assert StepLink.objects.get(downstream=last).upstream_id == twin.pk


# -- wait() -----------------------------------------------------------------------------------------


def test_wait_raises_on_timeout_and_async_wait(transactional_db):
    execution = step("wf_double").s(21).queue()
    with pytest.raises(WaitTimeout, match="wf_double"):
        execution.wait(timeout=0.2)
    run_worker_here()
    assert asyncio.run(execution.async_wait(timeout=5)).result == 42


def test_async_wait_lets_the_loop_run(transactional_db):
    execution = step("wf_double").s(1).queue()
    ticks = []

    async def main():
        waiter = asyncio.ensure_future(execution.async_wait(timeout=10))
        for _ in range(5):
            await asyncio.sleep(0.05)
            ticks.append(1)
        await asyncio.to_thread(run_worker_then_close)
        return await waiter

    def run_worker_then_close():
        from django.db import connections

        try:
            run_worker_here()
        finally:
            connections.close_all()  # this thread's

    assert asyncio.run(main()).result == 2
    assert len(ticks) == 5


def test_wait_wakes_on_the_commit(transactional_db, vendor):
    """PostgreSQL: woken by NOTIFY toosimpleq_finished; elsewhere by polling. Measured, not asserted
    tightly: the figure is printed (pytest -s)."""
    execution = step("wf_double").s(1).queue()
    woke = []

    def waiter():
        from django.db import connection

        try:
            woke.append((execution.wait(timeout=10), time.perf_counter()))
        finally:
            connection.close()

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.5)  # the waiter is listening (or polling at its longest interval)
    get_engine().cancel([execution.pk], timezone.now())
    committed = time.perf_counter()
    thread.join(timeout=10)
    (final, at), = woke
    assert final.state == States.CANCELLED
    latency = max(at - committed, 0.0)
    print(f"\nwait() woke {latency * 1000:.1f} ms after the commit on {vendor}")
    assert latency < 1.0


# -- wait(): one listening connection per process (PostgreSQL) ----------------------------------------


def _registered_waiters():
    from django_toosimple_q import waiting

    with waiting._lock:
        return sum(len(events) for listener in waiting._listeners.values() for events in listener.waiters.values())


def _listener_ready():
    from django_toosimple_q import waiting

    with waiting._lock:
        return any(listener.listening for listener in waiting._listeners.values())


def _listening_backends():
    """The connections to this test database that wait() opened: (pid, last query)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, query FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'toosimpleq-wait'"
        )
        return cursor.fetchall()


def _waiting_thread(execution):
    """``execution.wait()`` in a thread of its own, once registered with a listening listener; returns
    the thread and the list that receives ``(final execution, time.perf_counter() when it returned)``."""
    woke = []

    def waiter():
        woke.append((_closing_connections(execution.wait, 30), time.perf_counter()))

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_for(lambda: _registered_waiters() == 1 and _listener_ready(), timeout=10)
    return thread, woke


def _closing_connections(function, *args):
    """Run ``function`` and close the database connections of the thread it ran in."""
    from django.db import connections

    try:
        return function(*args)
    finally:
        connections.close_all()


@pytest.mark.postgresql_only
def test_concurrent_waits_share_one_listening_connection(transactional_db):
    executions = [step("wf_double").s(i).queue() for i in range(20)]
    finals = {}

    def waiter(execution):
        finals[execution.pk] = _closing_connections(execution.wait, 60)

    threads = [threading.Thread(target=waiter, args=(execution,)) for execution in executions]
    for thread in threads:
        thread.start()
    wait_for(
        lambda: _registered_waiters() == 20 and _listener_ready(),
        timeout=20,
        message=lambda: f"{_registered_waiters()} waiters registered",
    )
    backends = _listening_backends()
    run_worker_here()
    for thread in threads:
        thread.join(timeout=30)
    assert len(backends) == 1 and backends[0][1].startswith("LISTEN toosimpleq_finished")
    assert {pk: (final.state, final.result) for pk, final in finals.items()} == {
        execution.pk: (States.SUCCEEDED, 2 * i) for i, execution in enumerate(executions)
    }


@pytest.mark.postgresql_only
def test_concurrent_async_waits_share_one_listening_connection(transactional_db):
    from concurrent.futures import ThreadPoolExecutor

    executions = [step("wf_double").s(i).queue() for i in range(20)]

    async def main():
        # async_wait() runs in the loop's default executor: make room for all 20 at once.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=24))
        waits = asyncio.gather(*(execution.async_wait(timeout=60) for execution in executions))
        await asyncio.to_thread(wait_for, lambda: _registered_waiters() == 20 and _listener_ready(), 20)
        backends = await asyncio.to_thread(_closing_connections, _listening_backends)
        await asyncio.to_thread(_closing_connections, run_worker_here)
        return backends, await waits

    backends, finals = asyncio.run(main())
    assert len(backends) == 1 and backends[0][1].startswith("LISTEN toosimpleq_finished")
    assert [(final.pk, final.state, final.result) for final in finals] == [
        (execution.pk, States.SUCCEEDED, 2 * i) for i, execution in enumerate(executions)
    ]


@pytest.mark.postgresql_only
def test_a_shared_wait_follows_a_retry_to_its_replacement(transactional_db):
    """The waiter registered for the first run moves to the retry's row when its check names it."""
    execution = step("wf_flaky").s(1, "flaky-shared").queue()
    thread, woke = _waiting_thread(execution)
    run_worker_here()
    finished = time.perf_counter()
    thread.join(timeout=10)
    (final, at), = woke
    assert final.result == 2 and final.pk != execution.pk and at - finished < 2.0


@pytest.mark.postgresql_only
def test_a_killed_listening_connection_is_replaced_and_wakes_its_waiters(transactional_db, monkeypatch):
    """The finish falls while the listener is disconnected (its notification is lost): the wake-all
    after the new LISTEN returns the waiter, well before the safety re-check."""
    from django.db import connection

    from django_toosimple_q import waiting

    monkeypatch.setattr(waiting, "IDLE_CLOSE", 30.0)  # keep the new connection open to see it
    monkeypatch.setattr(waiting, "FIRST_RECONNECT", 0.5)
    execution = step("wf_double").s(1).queue()
    thread, woke = _waiting_thread(execution)
    (killed, _query), = _listening_backends()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [killed])
    wait_for(lambda: not _listener_ready(), timeout=5, message="the listener did not notice")
    get_engine().cancel([execution.pk], timezone.now())
    finished = time.perf_counter()
    thread.join(timeout=10)
    (final, at), = woke
    assert final.state == States.CANCELLED
    assert at - finished < 2.0 < waiting.SAFETY_CHECK
    (replacement, _query), = _listening_backends()
    assert replacement != killed


@pytest.mark.postgresql_only
def test_no_listening_connection_outlives_the_last_wait(transactional_db):
    """By default (``IDLE_CLOSE = 0``) the last waiter closes the shared connection before it returns:
    a test database can be dropped right after a wait, as when each wait had its own connection."""
    from django_toosimple_q import waiting

    execution = step("wf_double").s(5).queue()
    thread, woke = _waiting_thread(execution)
    assert len(_listening_backends()) == 1
    run_worker_here()
    thread.join(timeout=10)
    assert woke[0][0].result == 10
    assert not waiting._listeners
    # The server forgets a closed backend within a moment (the client closed it before returning).
    wait_for(lambda: not _listening_backends(), timeout=2, message="a listening connection outlived the wait")

@pytest.mark.postgresql_only
def test_the_idle_listener_closes_its_connection_and_a_later_wait_opens_one(transactional_db, monkeypatch):
    from django_toosimple_q import waiting

    monkeypatch.setattr(waiting, "IDLE_CLOSE", 0.3)

    def wait_while_the_worker_runs(execution):
        thread, woke = _waiting_thread(execution)
        (backend, _query), = _listening_backends()
        run_worker_here()
        thread.join(timeout=10)
        return woke[0][0], backend

    first, backend = wait_while_the_worker_runs(step("wf_double").s(1).queue())
    assert first.result == 2
    wait_for(lambda: not (_listening_backends() or waiting._listeners), timeout=5, message="still listening")
    second, other = wait_while_the_worker_runs(step("wf_double").s(2).queue())
    assert second.result == 4 and other != backend


def test_a_forked_child_does_not_share_its_parents_listener(monkeypatch):
    """No database: a listener whose connect() blocks stays in the registry, so the registry itself
    shows which listener a wait would join."""
    from django_toosimple_q import waiting

    release = threading.Event()

    def connect():
        release.wait(10)
        return object()  # no ``pgconn``: the listener gives up, its waiters poll

    event = threading.Event()
    parent, listening = waiting._join("fork-test", connect, event, 1)
    try:
        assert listening is False and waiting._listeners["fork-test"] is parent
        pid = os.fork()
        if pid == 0:  # the child: the fork hook forgot the parent's listener
            try:
                child, _ = waiting._join("fork-test", connect, threading.Event(), 1)
                os._exit(0 if child is not parent and child.thread.is_alive() else 1)
            finally:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # Without the hook (a fork it did not see), the changed pid is enough.
        monkeypatch.setattr(waiting, "_pid", -1)
        other, _ = waiting._join("fork-test", connect, threading.Event(), 1)
        assert other is not parent and waiting._listeners == {"fork-test": other}
    finally:
        release.set()
        parent.thread.join(5)


# -- under real workers, one of them killed --------------------------------------------------------


FAN_IN = 1000


def test_fan_in_of_1000_under_three_workers_one_killed(workers, vendor):
    callback = chain(
        group(step("wf_member").s(i, 25) for i in range(FAN_IN)), step("wf_collect").s(label="big")
    ).queue()
    env = {"TOOSIMPLEQ_TEST_MAX_CRASHES": "1000"}
    args = ["--threads", "4", "--tick", "0.5", "--timeout", "3", "--grace", "1"]
    running = [workers.start(*args, env_extra=env) for _ in range(3)]
    members = TaskExec.objects.filter(workflow_id=callback.workflow_id, task_name="wf_member")
    wait_for(lambda: Record.objects.filter(key__startswith="member-").count() > FAN_IN // 4, timeout=120)
    victim = running.pop(0)
    victim.send_signal(signal.SIGKILL)
    running.append(workers.start(*args, env_extra=env))

    final = callback.wait(timeout=300)
    assert final.state == States.SUCCEEDED
    assert final.result == [i * i for i in range(FAN_IN)]
    # Every member reached a final state; each call ended SUCCEEDED (an execution held by the killed
    # worker was INTERRUPTED and replaced).
    assert not members.filter(state__in=[*States.not_started(), States.PROCESSING]).exists()
    ends = members.filter(replaced_by__isnull=True)
    assert ends.count() == FAN_IN and set(ends.values_list("state", flat=True)) == {States.SUCCEEDED}
    # The callback ran exactly once, after the last member.
    assert TaskExec.objects.filter(workflow_id=callback.workflow_id, task_name="wf_collect").count() == 1
    assert Record.objects.filter(key="callback-big").count() == 1
    last_member = Record.objects.filter(key__startswith="member-").order_by("-pk").first()
    assert Record.objects.get(key="callback-big").pk > last_member.pk
    assert max(ends.values_list("finished", flat=True)) <= final.started
    interrupted = members.filter(state=States.INTERRUPTED).count()
    print(f"\n{vendor}: {interrupted} member execution(s) interrupted by the kill and run again")



def test_the_rescue_of_a_unique_step_merges_into_a_twin_queued_meanwhile(workers):
    last = chain(step("wf_unique_hangs").s(4, "hangs"), step("wf_double").s()).queue()
    args = ["--tick", "0.5", "--timeout", "3"]
    victim = workers.start(*args)
    # Its first run has queued the twin (after recording itself: wait for the twin, not the record).
    wait_for(lambda: TaskExec.objects.filter(task_name="wf_unique_hangs", state=States.SLEEPING).exists(), timeout=60)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    workers.start(*args)
    assert last.wait(timeout=60).result == 10
    first = TaskExec.objects.get(workflow_id=last.workflow_id, task_name="wf_unique_hangs", state=States.INTERRUPTED)
    replacement = TaskExec.objects.get(pk=first.replaced_by_id)
    assert replacement.state == States.CANCELLED and "Merged into" in replacement.error
    twin = TaskExec.objects.get(pk=replacement.replaced_by_id)
    assert twin.state == States.SUCCEEDED and StepLink.objects.get(downstream=last).upstream_id == twin.pk

# -- admin ------------------------------------------------------------------------------------------


def test_admin_workflow_page_draws_the_steps_and_links_from_each_step(transactional_db, admin_client):
    last = chain(step("wf_const").s(1), group(step("wf_double").s(), step("wf_fail").s()), step("wf_collect").s()).queue()
    run_worker_here()
    workflow = last.workflow_id
    page = admin_client.get(f"/admin/toosimpleq/workflow/{workflow}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<svg" in html and html.count('class="toosimpleq-step') == 4
    assert "toosimpleq-state-blocked" in html and "toosimpleq-state-failed" in html
    assert f"/admin/toosimpleq/taskexec/{last.pk}/change/" in html
    assert "Requeue failed steps" in html and "Cancel workflow" not in html  # nothing left to cancel
    step_page = admin_client.get(f"/admin/toosimpleq/taskexec/{last.pk}/change/").content.decode()
    assert f"/admin/toosimpleq/workflow/{workflow}/change/" in step_page
    assert admin_client.get("/admin/toosimpleq/workflow/").status_code == 200
    assert admin_client.get(f"/admin/toosimpleq/taskexec/?workflow={workflow}&state=BLOCKED").status_code == 200


def test_admin_a_large_column_is_drawn_as_counts(transactional_db, admin_client):
    last = chain(group(step("wf_double").s(i) for i in range(100)), step("wf_collect").s()).queue()
    html = admin_client.get(f"/admin/toosimpleq/workflow/{last.workflow_id}/change/").content.decode()
    assert html.count('class="toosimpleq-step') == 2 and "100 × wf_double" in html


def test_admin_requeue_failed_steps_then_dependents_run(transactional_db, login, clean_registry):
    from django_toosimple_q.decorators import register_task

    @register_task(name="wf_fails_first")
    def fails_first(value):
        if not Record.objects.filter(key="admin-failed-once").exists():
            Record.objects.create(key="admin-failed-once", pid=os.getpid())
            raise RuntimeError("first time")
        return value * 10

    last = chain(step("wf_const").s(2), T["wf_fails_first"].s(), step("wf_double").s()).queue()
    run_worker_here()
    assert last.wait(timeout=5).state == States.BLOCKED
    failed = TaskExec.objects.get(workflow_id=last.workflow_id, task_name="wf_fails_first")
    client = login("view_workflow", "view_taskexec", "requeue_taskexec")
    response = client.post(
        "/admin/toosimpleq/taskexec/", {"action": "action_requeue", "_selected_action": [failed.pk], "index": 0}
    )
    assert response.status_code == 302
    run_worker_here()
    assert last.wait(timeout=5).result == 40


def test_admin_cancel_workflow_needs_its_permission(transactional_db, login):
    last = chain(step("wf_const").s(1), step("wf_double").s()).queue()
    url = f"/admin/toosimpleq/workflow/{last.workflow_id}/change/"
    viewer = login("view_workflow")
    assert "Cancel workflow" not in viewer.get(url).content.decode()
    viewer.post("/admin/toosimpleq/workflow/", {"action": "action_cancel_workflow", "_selected_action": [last.workflow_id], "index": 0})
    assert not TaskExec.objects.filter(workflow_id=last.workflow_id, state=States.CANCELLED).exists()
    canceller = login("view_workflow", "cancel_workflow")
    assert "Cancel workflow" in canceller.get(url).content.decode()
    response = canceller.post(
        "/admin/toosimpleq/workflow/", {"action": "action_cancel_workflow", "_selected_action": [last.workflow_id], "index": 0}
    )
    assert response.status_code == 302
    assert set(TaskExec.objects.filter(workflow_id=last.workflow_id).values_list("state", flat=True)) == {States.CANCELLED}


def test_prune_keeps_a_step_whose_result_is_still_needed(transactional_db):
    engine = get_engine()
    last = chain(group(step("wf_const").s(1), step("wf_const").s(2).set(queue="later")), step("wf_collect").s()).queue()
    run_worker_here("--until_done", "--queue", "default")
    future = timezone.now() + timezone.timedelta(days=1)
    engine.prune(future)
    # The member that ran stays: the callback, not run yet, reads its result.
    assert TaskExec.objects.filter(workflow_id=last.workflow_id).count() == 3
    run_worker_here("--until_done", "--queue", "later")
    run_worker_here()
    assert last.wait(timeout=5).result == [1, 2]
    while engine.prune(future):
        pass
    assert not TaskExec.objects.filter(workflow_id=last.workflow_id).exists()
    assert not StepLink.objects.exists() and not Workflow.objects.exists()


def test_waiting_steps_in_status_and_metrics(transactional_db):
    from django_toosimple_q import monitoring

    chain(step("wf_const").s(1), step("wf_double").s(), step("wf_double").s()).queue()
    (stats,) = monitoring.queue_stats()
    assert (stats.queued, stats.waiting, stats.ready) == (1, 2, 1)
    assert monitoring.state_counts()[States.WAITING] == 2
    pytest.importorskip("prometheus_client")
    from django_toosimple_q.metrics.collector import QueueCollector

    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for metric in QueueCollector().collect() for s in metric.samples
    }
    assert samples[("toosimpleq_executions", (("queue", "default"), ("state", "waiting")))] == 2


# -- any shape: what each step receives matches a reference evaluation --------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_tags = iter(range(10**9))


def _nest(inner):
    return st.tuples(st.sampled_from(["chain", "group"]), st.lists(inner, min_size=1, max_size=3))


def _shapes():
    return st.recursive(st.just(("step",)), _nest, max_leaves=8)


def _build(shape):
    """The workflow of ``shape``, and the same shape with each step's tag, for the reference."""
    if shape[0] == "step":
        tag = f"t{next(_tags)}"
        return step("wf_tag").s(tag=tag), ("step", tag)
    built = [_build(child) for child in shape[1]]
    nodes, refs = [b[0] for b in built], [b[1] for b in built]
    return (chain(*nodes) if shape[0] == "chain" else group(*nodes)), (shape[0], refs)


def _expected(ref, received, has_input):
    """(the values ``ref`` ends with, whether it passes one value rather than a list)."""
    if ref[0] == "step":
        return [[ref[1], received if has_input else None]], True
    if ref[0] == "chain":
        out, single = None, True
        for index, child in enumerate(ref[1]):
            out, single = _expected(child, received, has_input)
            received, has_input = (out[0] if single else out), True
        return out, single
    outs = []
    for child in ref[1]:
        out, _single = _expected(child, received, has_input)
        outs += out
    return outs, False


# The database fixture is shared by the examples: each one starts by emptying the tables it uses.
@settings(max_examples=12, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=_shapes())
def test_any_shape_passes_what_a_reference_evaluation_says(transactional_db, shape):
    StepLink.objects.all().delete()
    TaskExec.objects.all().delete()
    node, ref = _build(("group", [shape]))
    ends = node.queue()
    run_worker_here()
    expected, _single = _expected(ref, None, False)
    assert [end.wait(timeout=10).result for end in ends] == expected



# Any storable value (tests/test_properties.py's strategy, without what must be refused).
def _storable():
    from tests.test_properties import expected_problem, values

    return values.filter(lambda value: expected_problem(value) is None)


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much, HealthCheck.too_slow],
)
@given(value=_storable(), tag=st.text(max_size=4))
def test_a_unique_step_receiving_any_value_is_the_call_queued_with_it(transactional_db, value, tag):
    """What a step receives counts in its call: it merges into ``task.queue(value)`` waiting."""
    StepLink.objects.all().delete()
    TaskExec.objects.all().delete()
    twin = T["wf_unique"].queue(value, tag=tag, due=timezone.now() + timezone.timedelta(hours=1))
    last = chain(step("wf_const").s(value), step("wf_unique").s(tag=tag)).queue()
    run_worker_here()
    last.refresh_from_db()
    assert last.state == States.CANCELLED and last.replaced_by_id == twin.pk

@pytest.mark.postgresql_only
def test_recording_outcomes_notifies_their_ids(transactional_db):
    """The worker's batch of outcomes announces its ids in its own statement (what wait() listens to)."""
    from django.db import connection

    from django_toosimple_q.waiting import FINISHED_CHANNEL

    listener = connection.Database.connect(**connection.get_connection_params(), autocommit=True)
    try:
        listener.execute(f"LISTEN {FINISHED_CHANNEL}")
        executions = step("wf_double").s(1).queue(), step("wf_fail").s().queue(), step("wf_flaky").s(1, "k").queue()
        run_worker_here()
        listener.execute("SELECT 1")  # reads the notifications that arrived meanwhile
        named = {int(pk) for n in listener.notifies(timeout=0.5, stop_after=100) for pk in n.payload.split(",")}
    finally:
        listener.close()
    flaky_retry = TaskExec.objects.get(pk=executions[2].pk).replaced_by_id
    assert {e.pk for e in executions} | {flaky_retry} <= named


@pytest.mark.postgresql_only
def test_ready_table_holds_a_step_once_released_only(transactional_db):
    """Migration 0027's triggers: a WAITING row has no ready row; the release (WAITING -> QUEUED)
    adds one through the update trigger, which the claim then takes."""
    from django.db import connection

    def ready_ids():
        with connection.cursor() as cursor:
            cursor.execute("SELECT id FROM toosimpleq_ready")
            return {row[0] for row in cursor.fetchall()}

    last = chain(step("wf_const").s(1), step("wf_double").s()).queue()
    first = TaskExec.objects.get(workflow_id=last.workflow_id, task_name="wf_const")
    assert ready_ids() == {first.pk}
    get_engine().steps_finished([(first.pk, States.SUCCEEDED)], timezone.now())
    last.refresh_from_db()
    assert last.state == States.QUEUED and ready_ids() == {first.pk, last.pk}
