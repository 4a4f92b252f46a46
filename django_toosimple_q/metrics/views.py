"""``metrics``: the queue's metrics in Prometheus' text format, to mount in your ``urls.py``::

    from django_toosimple_q.metrics.views import metrics

    urlpatterns = [..., path("toosimpleq/metrics", metrics)]

Access: ``TOOSIMPLEQ_METRICS_TOKEN = "..."`` (Prometheus sends it as a bearer token), or ``None`` to
answer every request (protect the URL yourself: middleware, a network rule). Without the setting the
view refuses every request and says so. See docs/monitoring.md.
"""

from __future__ import annotations

import hmac

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.utils.cache import add_never_cache_headers

try:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
except ImportError as exc:  # pragma: no cover - exercised by tests/test_observability_absent.py
    raise ImproperlyConfigured(
        "The metrics view needs prometheus-client: pip install 'django-toosimple-q[prometheus]'"
    ) from exc

from .. import conf
from .collector import registry


def refusal(request: HttpRequest) -> HttpResponse | None:
    """Why ``request`` may not read the metrics (a response to send), or None."""
    token = conf.metrics_token()
    if token is conf.NOT_SET:
        return HttpResponse(
            "Forbidden: set TOOSIMPLEQ_METRICS_TOKEN to a secret that Prometheus sends as a bearer token, "
            "or to None to let every request through (then protect this URL yourself).\n",
            status=403,
            content_type="text/plain; charset=utf-8",
        )
    if token is None:
        return None
    assert isinstance(token, str)
    given = request.headers.get("Authorization", "")
    scheme, _, credentials = given.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), token.encode()):
        return None
    response = HttpResponse("Unauthorized: a bearer token is required.\n", status=401, content_type="text/plain")
    response["WWW-Authenticate"] = 'Bearer realm="toosimpleq metrics"'
    return response


def metrics(request: HttpRequest) -> HttpResponse:
    """The queue's metrics, read from the queue's database now (GET or HEAD; never cached)."""
    if request.method not in ("GET", "HEAD"):
        return HttpResponseNotAllowed(["GET", "HEAD"])
    response = refusal(request) or HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)
    add_never_cache_headers(response)
    return response
