"""Without the [prometheus] and [opentelemetry] extras (both packages blocked in a subprocess and in
every process it starts, by a ``sitecustomize``), the library imports, queues and runs tasks, imports
neither package, and the metrics view says which extra it needs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import ROOT, WorkerProcesses

BLOCK = """
import sys
for name in ("opentelemetry", "prometheus_client"):
    sys.modules[name] = None  # any import of them raises ImportError
"""

SCRIPT = """
import json, sys
import django
django.setup()
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django_toosimple_q import tracing
from django_toosimple_q.models import TaskExec
from tests.app.tasks import add, sleepy_limited

ids = [add.queue(1, 2).pk, *(e.pk for e in add.queue_many([(3, 4), (5, 6)])), sleepy_limited.queue(0).pk]
call_command("worker", "--until_done", verbosity=0)
try:
    import django_toosimple_q.metrics.views
    view = "imported"
except ImproperlyConfigured as exc:
    view = str(exc)
rows = TaskExec.objects.filter(pk__in=ids)
print(json.dumps({
    "enabled": tracing.ENABLED,
    "states": sorted(rows.values_list("state", flat=True)),
    "contexts": sorted({str(c) for c in rows.values_list("trace_context", flat=True)}),
    "imported": sorted(m for m, module in sys.modules.items() if module is not None and m.startswith(("opentelemetry", "prometheus_client"))),
    "view": view,
}))
"""


@pytest.mark.django_db(transaction=True)
def test_works_without_the_extras(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCK)
    env = WorkerProcesses().env()
    env["PYTHONPATH"] = f"{tmp_path}:{env['PYTHONPATH']}"
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["enabled"] is False
    assert result["states"] == ["SUCCEEDED"] * 4, "run in the worker and in its child process"
    assert result["contexts"] == ["None"]
    assert result["imported"] == []
    assert "pip install 'django-toosimple-q[prometheus]'" in result["view"]


def test_without_the_extra_the_hot_paths_skip_tracing(monkeypatch, run_worker):
    """``tracing.ENABLED`` False (the package absent): queuing and running never enter ``tracing``."""
    from django_toosimple_q import tracing
    from django_toosimple_q.models import TaskExec
    from tests.app.tasks import add

    def never(*args, **kwargs):
        raise AssertionError("tracing entered while disabled")

    monkeypatch.setattr(tracing, "ENABLED", False)
    for name in ("queuing", "queued", "running", "lost_run"):
        monkeypatch.setattr(tracing, name, never)
    ids = [add.queue(1, 2).pk, *(e.pk for e in add.queue_many([(3, 4), (5, 6)]))]
    run_worker()
    assert list(TaskExec.objects.filter(pk__in=ids).values_list("state", flat=True)) == ["SUCCEEDED"] * 3
