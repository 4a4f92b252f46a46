"""OpenTelemetry in the tests' processes (the [opentelemetry] extra's tests, tests/test_tracing.py).

``TOOSIMPLEQ_TEST_SPANS_FILE``: worker subprocesses (and their children for time-limited tasks), set
up by ``TestAppConfig.ready``, export every span they end to that file, one JSON object a line; the
test reads them back. The test process itself records to memory (``PROVIDER``, set by the test).
"""

from __future__ import annotations

import json
import os
from typing import Any

#: The test process's provider, used by the traced view of tests/urls.py (set by tests/test_tracing.py).
PROVIDER: Any = None


def span_record(span: Any) -> dict[str, Any]:
    """What the tests compare of a finished span, identical for memory and file."""
    context = span.get_span_context()
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
        "parent_span_id": format(span.parent.span_id, "016x") if span.parent is not None else None,
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
        "events": [{"name": event.name, "attributes": dict(event.attributes or {})} for event in span.events],
        "pid": os.getpid(),
    }


def install_from_environment() -> None:
    path = os.environ.get("TOOSIMPLEQ_TEST_SPANS_FILE")
    if not path:
        return
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class JsonLinesExporter(SpanExporter):
        def export(self, spans):
            text = "".join(json.dumps(span_record(span)) + "\n" for span in spans)
            # One append per batch: lines of several processes never interleave.
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter()))
    trace.set_tracer_provider(provider)


def read_file(path: str) -> list[dict[str, Any]]:
    try:
        with open(path) as lines:
            return [json.loads(line) for line in lines if line.strip()]
    except FileNotFoundError:
        return []
