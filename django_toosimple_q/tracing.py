"""OpenTelemetry traces: a span when a call is queued (PRODUCER) and one per execution (CONSUMER).

The trace context of the queuing code is stored with the execution (``TaskExec.trace_context``, the
W3C ``traceparent``/``tracestate`` as the configured propagator writes them), and the execution's
span takes it as its parent: a trace that starts in a web request continues in the worker that runs
the task, in another process or on another host. See docs/monitoring.md.

Only ``opentelemetry-api`` is used (the ``[opentelemetry]`` extra); your project configures the SDK
and exporters. Without the package, ``ENABLED`` is False and callers skip this module entirely (one
attribute check on the hot paths, no import attempted per call). With the package but no SDK
configured, the API hands out non-recording spans and no context is stored.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

try:
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Span, SpanKind, Status, StatusCode
except ImportError:  # the [opentelemetry] extra is not installed
    ENABLED = False
else:
    ENABLED = True

#: ``messaging.system`` of our spans.
SYSTEM = "django_toosimple_q"
#: Final states whose span has the ERROR status.
ERROR_STATES = frozenset({"FAILED", "INVALID", "INTERRUPTED"})


#: The global provider's tracer: a proxy until the project sets its provider, then the real one's.
_TRACER: Any = trace.get_tracer("django_toosimple_q") if ENABLED else None


def _tracer() -> Any:
    return _TRACER


def active() -> bool:
    """True once the project has set a tracer provider (until then every span would be a no-op one:
    a worker skips making them, which costs about as much as running a short task)."""
    return ENABLED and not isinstance(trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


@contextmanager
def queuing(executions: Sequence[Any]) -> Iterator[Any]:
    """A PRODUCER span around inserting ``executions`` (new calls: attempt 1, no context yet), whose
    context is stored on each of them; yields the span (None when no execution needs one)."""
    fresh = [e for e in executions if e.trace_context is None and e.attempt == 1]
    if not fresh:
        yield None
        return
    first = fresh[0]
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "send",
        "messaging.destination.name": first.queue,
        "toosimpleq.task": first.task_name,
        "toosimpleq.queue": first.queue,
        "toosimpleq.attempt": 1,
    }
    if len(fresh) > 1:
        attributes["messaging.batch.message_count"] = len(fresh)
    with _tracer().start_as_current_span(f"queue {first.task_name}", kind=SpanKind.PRODUCER, attributes=attributes) as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        if carrier:  # nothing when no trace is recording (no SDK, or sampled out without a parent)
            stored = json.dumps(carrier, sort_keys=True)
            for execution in fresh:
                execution.trace_context = stored
        yield span


def queued(span: Any, saved: Sequence[Any]) -> None:
    """After the insert: the id of the execution queued (one call), or of the one it merged into."""
    if span is not None and len(saved) == 1 and saved[0].pk is not None:
        span.set_attribute("toosimpleq.execution_id", saved[0].pk)
        span.set_attribute("messaging.message.id", str(saved[0].pk))


def _parent(execution: Any) -> Any:
    """The context stored with ``execution`` (None: a new trace); a damaged value is ignored."""
    stored = execution.trace_context
    if not stored:
        return None
    try:
        carrier = json.loads(stored)
    except ValueError:
        return None
    return propagate.extract(carrier) if isinstance(carrier, dict) else None


def _run_attributes(execution: Any) -> dict[str, Any]:
    return {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "process",
        "messaging.destination.name": execution.queue,
        "messaging.message.id": str(execution.pk),
        "toosimpleq.task": execution.task_name,
        "toosimpleq.queue": execution.queue,
        "toosimpleq.attempt": execution.attempt,
        "toosimpleq.execution_id": execution.pk,
    }


class Run:
    """The CONSUMER span of one execution, ended by ``running``; ``ended`` records the outcome."""

    def __init__(self, span: Span):
        self.span = span

    def ended(self, state: str, exception: BaseException | None = None, error: str | None = None) -> None:
        _outcome(self.span, state, exception, error)


def _outcome(span: Span, state: str, exception: BaseException | None, error: str | None) -> None:
    span.set_attribute("toosimpleq.outcome", state.lower())
    if exception is not None:
        span.record_exception(exception)
    if state in ERROR_STATES:
        if exception is not None:
            description = f"{type(exception).__name__}: {exception}"
        else:  # the last line of the error text: the exception, as a traceback ends
            lines = (error or "").strip().splitlines()
            description = lines[-1] if lines else state
        span.set_status(Status(StatusCode.ERROR, description[:500]))


@contextmanager
def running(execution: Any) -> Iterator[Run]:
    """The CONSUMER span of one execution, current while the task runs (spans the task makes are its
    children), child of the span that queued it."""
    with _tracer().start_as_current_span(
        f"run {execution.task_name}",
        context=_parent(execution),
        kind=SpanKind.CONSUMER,
        attributes=_run_attributes(execution),
        record_exception=False,  # the executor reports the task's exception; ours propagate as usual
        set_status_on_exception=False,
    ) as span:
        yield Run(span)


def lost_run(execution: Any, exception: BaseException, started: float | None = None) -> None:
    """The span of an execution whose process was stopped (time limit, death): its own span, in the
    child process, never ended; this one stands for it, from ``started`` (a ``time.time()``)."""
    start_ns = int(started * 1e9) if started is not None else time.time_ns()
    span = _tracer().start_span(
        f"run {execution.task_name}",
        context=_parent(execution),
        kind=SpanKind.CONSUMER,
        attributes=_run_attributes(execution),
        start_time=start_ns,
    )
    try:
        _outcome(span, "FAILED", exception, None)
    finally:
        span.end()
