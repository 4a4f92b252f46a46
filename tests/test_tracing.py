"""OpenTelemetry (the [opentelemetry] extra): a trace started in a web request continues, through the
trace context stored with each execution, into the worker process that runs it.

The test process records its spans in memory (a provider of its own, given to ``tracing`` for the
test); the worker subprocess, set up by ``tests.app.spans`` from ``TOOSIMPLEQ_TEST_SPANS_FILE``,
writes its spans to a file, one JSON object a line, and so do its children for time-limited tasks.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import propagate  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from django_toosimple_q import tracing  # noqa: E402
from django_toosimple_q.models import TaskExec  # noqa: E402
from tests.app import spans as test_spans  # noqa: E402
from tests.app.tasks import add, record  # noqa: E402


States = TaskExec.States


@pytest.fixture
def recorded(monkeypatch):
    """Spans of this process, in memory: ``tracing`` and the traced test view use this provider."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", lambda: provider.get_tracer("django_toosimple_q"))
    monkeypatch.setattr(test_spans, "PROVIDER", provider)
    yield exporter
    provider.shutdown()


def by_name(records, name):
    found = [r for r in records if r["name"] == name]
    assert found, f"no span {name!r} among {[r['name'] for r in records]}"
    return found


def test_trace_continues_from_a_request_into_the_worker(recorded, workers, client, tmp_path):
    assert tracing.ENABLED
    root_tracer = test_spans.PROVIDER.get_tracer("tests")
    with root_tracer.start_as_current_span("test client") as root:
        headers: dict[str, str] = {}
        propagate.inject(headers)
    response = client.get("/traced-queue", {"key": "traced"}, HTTP_TRACEPARENT=headers["traceparent"])
    assert response.status_code == 200, response.content
    traced_id, fail_id, child_id, killed_id = map(int, response.content.decode().split(","))

    here = [test_spans.span_record(span) for span in recorded.get_finished_spans()]
    trace_id = format(root.get_span_context().trace_id, "032x")
    (server,) = by_name(here, "GET /traced-queue")
    assert server["trace_id"] == trace_id and server["parent_span_id"] == format(root.get_span_context().span_id, "016x")
    producers = {r["attributes"]["toosimpleq.execution_id"]: r for r in here if r["kind"] == "PRODUCER"}
    assert set(producers) == {traced_id, fail_id, child_id, killed_id}
    for producer in producers.values():
        assert producer["trace_id"] == trace_id and producer["parent_span_id"] == server["span_id"]
        assert producer["attributes"]["toosimpleq.queue"] == "default"
        assert producer["attributes"]["messaging.operation.type"] == "send"
    assert producers[traced_id]["name"] == "queue traced_work"
    # The context is stored with the execution: the producer span is its parent.
    stored = json.loads(TaskExec.objects.get(pk=traced_id).trace_context)
    assert stored["traceparent"].startswith(f"00-{trace_id}-{producers[traced_id]['span_id']}-")

    spans_file = tmp_path / "worker-spans.jsonl"
    done = workers.run("--until_done", env_extra={"TOOSIMPLEQ_TEST_SPANS_FILE": str(spans_file)}, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    # Both attempts of the killed task have run (the retry is due at once, the worker ran it too).
    assert TaskExec.objects.filter(state=States.FAILED, task_name="sleepy_limited").count() == 2

    there = test_spans.read_file(str(spans_file))
    consumers = {}
    for r in there:
        if r["kind"] == "CONSUMER":
            consumers.setdefault(r["attributes"]["toosimpleq.execution_id"], []).append(r)

    def consumer_of(pk):
        (span,) = consumers[pk]
        assert span["trace_id"] == trace_id
        assert span["parent_span_id"] == producers[pk]["span_id"], "the execution's span continues the queuing one"
        return span

    ran = consumer_of(traced_id)
    assert ran["name"] == "run traced_work" and ran["status"] == "UNSET"
    assert ran["attributes"]["toosimpleq.task"] == "traced_work"
    assert ran["attributes"]["toosimpleq.queue"] == "default"
    assert ran["attributes"]["toosimpleq.attempt"] == 1
    assert ran["attributes"]["toosimpleq.outcome"] == "succeeded"
    (inside,) = by_name(there, "inside the task")
    assert inside["parent_span_id"] == ran["span_id"] and inside["trace_id"] == trace_id

    failed = consumer_of(fail_id)
    assert failed["status"] == "ERROR" and failed["attributes"]["toosimpleq.outcome"] == "failed"
    (exception,) = [e for e in failed["events"] if e["name"] == "exception"]
    assert exception["attributes"]["exception.type"] == "ValueError"
    assert exception["attributes"]["exception.message"] == "traced failure"

    in_child = consumer_of(child_id)
    assert in_child["attributes"]["toosimpleq.outcome"] == "succeeded"
    assert in_child["pid"] != ran["pid"], "a time-limited task runs (and is traced) in the worker's child process"

    killed = consumer_of(killed_id)
    assert killed["status"] == "ERROR" and killed["attributes"]["toosimpleq.outcome"] == "failed"
    assert [e["attributes"]["exception.type"] for e in killed["events"]] == [
        "django_toosimple_q.errors.TimeLimitExceeded"
    ]
    # Its retry is another attempt of the same call: a child of the same queuing span.
    retry = TaskExec.objects.get(pk=killed_id).replaced_by
    (second,) = consumers[retry.pk]
    assert second["attributes"]["toosimpleq.attempt"] == 2
    assert second["parent_span_id"] == producers[killed_id]["span_id"]
    retried = [r for r in there if r["kind"] == "PRODUCER" and r["attributes"]["toosimpleq.task"] == "sleepy_limited"]
    assert not retried, "a retry is no new call: no queuing span"


@pytest.mark.django_db(transaction=True)
def test_queue_many_is_one_span_and_outside_a_trace_starts_one(recorded):
    executions = add.queue_many([(1, 2), (3, 4), (5, 6)])
    (batch,) = [test_spans.span_record(s) for s in recorded.get_finished_spans()]
    assert batch["name"] == "queue add" and batch["parent_span_id"] is None
    assert batch["attributes"]["messaging.batch.message_count"] == 3
    stored = {e.trace_context for e in TaskExec.objects.filter(pk__in=[e.pk for e in executions])}
    assert len(stored) == 1 and batch["span_id"] in stored.pop()


@pytest.mark.django_db(transaction=True)
def test_without_a_recording_tracer_nothing_is_stored(monkeypatch):
    # The API without an SDK: non-recording spans, so no context to store.
    from opentelemetry.trace import NoOpTracer

    monkeypatch.setattr(tracing, "_tracer", NoOpTracer)
    assert TaskExec.objects.get(pk=record.queue("untraced").pk).trace_context is None
