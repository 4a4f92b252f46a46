import importlib.util

from django.contrib import admin
from django.http import HttpResponse
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]


def traced_queue(request):
    """Queues tasks inside a SERVER span continuing the request's ``traceparent``, as OpenTelemetry's
    Django instrumentation would (tests/test_tracing.py)."""
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind

    from tests.app import spans
    from tests.app.tasks import fail, sleepy_limited, traced_work

    tracer = spans.PROVIDER.get_tracer("tests.urls")
    with tracer.start_as_current_span("GET /traced-queue", context=propagate.extract(request.headers), kind=SpanKind.SERVER):
        ids = [
            traced_work.queue(request.GET["key"]).pk,
            fail.queue("traced failure").pk,
            sleepy_limited.queue(0).pk,  # in the worker's child process
            sleepy_limited.queue(30).pk,  # past its time limit: the child is killed, retried once
        ]
    return HttpResponse(",".join(map(str, ids)))


# The optional extras: mounted when installed (tests/test_observability_absent.py runs without them).
if importlib.util.find_spec("prometheus_client") is not None:
    from django_toosimple_q.metrics.views import metrics

    urlpatterns.append(path("metrics", metrics))
if importlib.util.find_spec("opentelemetry") is not None:
    urlpatterns.append(path("traced-queue", traced_queue))
