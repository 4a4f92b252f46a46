"""Prometheus metrics (the [prometheus] extra): totals that survive pruning, the view's access rules,
and a real Prometheus scraping a real server process while a real worker runs tasks.

Prometheus is Debian's package (`make test` and CI install it); without it the end-to-end test skips,
unless ``TOOSIMPLEQ_REQUIRE_PROMETHEUS=1`` (CI).
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client")

from django.test import override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from django_toosimple_q import monitoring  # noqa: E402
from django_toosimple_q.engine import get_engine  # noqa: E402
from django_toosimple_q.engine.totals import BUCKETS  # noqa: E402
from django_toosimple_q.models import ExecutionTotal, TaskExec, WorkerStatus  # noqa: E402
from tests.app.tasks import add, fail  # noqa: E402

from .conftest import ROOT, free_port, wait_for  # noqa: E402

States = TaskExec.States
TOKEN = "tests-metrics-token"


def finished(task, state, ago, run=0.2, wait=1.0, **fields):
    """A finished execution that ended ``ago`` ago after running ``run`` seconds, ``wait`` after due."""
    end = timezone.now() - ago
    start = end - datetime.timedelta(seconds=run)
    return TaskExec.objects.create(
        task_name=task, state=state, due=start - datetime.timedelta(seconds=wait), started=start, finished=end, **fields
    )


def figures() -> dict[tuple[str, str], tuple[int, int, float, list[int]]]:
    return {
        (a.task_name, a.state): (a.executions, a.started, round(a.run_seconds, 3), a.run_buckets)
        for a in monitoring.finished_totals()
    }


def scrape(client, **headers) -> dict[str, dict[tuple, float]]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


AUTH = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}


@pytest.mark.django_db(transaction=True)
def test_totals_never_go_down_when_history_is_pruned():
    day = datetime.timedelta(days=1)
    for _ in range(3):
        finished("add", States.SUCCEEDED, 40 * day, run=0.2)
    finished("add", States.FAILED, 40 * day, run=3)
    finished("add", States.SUCCEEDED, datetime.timedelta(seconds=1), run=0.004)
    TaskExec.objects.create(task_name="add", state=States.CANCELLED, finished=timezone.now() - 40 * day)
    before = figures()
    bucket = BUCKETS.index(0.25)
    assert before[("add", States.SUCCEEDED)][:3] == (4, 4, 0.604)
    assert before[("add", States.SUCCEEDED)][3][0] == 1 and before[("add", States.SUCCEEDED)][3][bucket] == 4
    assert before[("add", States.FAILED)][3][BUCKETS.index(2.5)] == 0
    assert before[("add", States.FAILED)][3][BUCKETS.index(5.0)] == 1
    assert before[("add", States.CANCELLED)][:2] == (1, 0), "never started: in the count, not the histograms"

    engine = get_engine()
    # Retention of 30 days: the first prune counts what it deletes into the totals first.
    deleted = 0
    while batch := engine.prune(timezone.now() - 30 * day, batch=2):
        deleted += batch
    assert deleted == 5 and TaskExec.objects.count() == 1
    assert figures() == before
    assert engine.fold_totals(timezone.now() - datetime.timedelta(minutes=5)) is True
    assert engine.fold_totals(timezone.now() - datetime.timedelta(minutes=6)) is False, "the mark only moves on"
    assert figures() == before

    # Folding moved the mark: executions finished since are counted from the table, the older ones
    # from the totals; pruning everything (as `toosimpleq_prune` may) folds up to now first.
    finished("add", States.SUCCEEDED, datetime.timedelta(seconds=0))
    after = figures()
    assert after[("add", States.SUCCEEDED)][0] == 5
    while engine.prune(timezone.now() + day):
        pass
    assert TaskExec.objects.count() == 0
    assert figures() == after
    (mark,) = ExecutionTotal.objects.filter(task_name="", state="")
    assert mark.folded_until is not None and mark.folded_until <= timezone.now()


@pytest.mark.django_db(transaction=True)
def test_the_view_serves_every_metric(client):
    now = timezone.now()
    WorkerStatus.objects.create(label="fresh", timeout=60)
    WorkerStatus.objects.create(label="silent", timeout=60, last_seen=now - datetime.timedelta(minutes=5))
    WorkerStatus.objects.create(label="gone", timeout=60, stopped=now)
    TaskExec.objects.create(task_name="add", queue="slow", state=States.QUEUED, due=now - datetime.timedelta(seconds=90))
    TaskExec.objects.create(task_name="add", queue="slow", state=States.SLEEPING, due=now + datetime.timedelta(hours=1))
    TaskExec.objects.create(task_name="add", queue="slow", state=States.PROCESSING, started=now)
    finished("fail", States.FAILED, datetime.timedelta(seconds=5), run=0.03, wait=0.7)
    finished("fail", States.FAILED, datetime.timedelta(seconds=5), run=0.03, wait=0.7)

    samples = scrape(client, **AUTH)

    def value(name, **labels):
        return samples[name][tuple(sorted(labels.items()))]

    assert value("toosimpleq_executions", queue="slow", state="queued") == 1
    assert value("toosimpleq_executions", queue="slow", state="sleeping") == 1
    assert value("toosimpleq_executions", queue="slow", state="processing") == 1
    assert value("toosimpleq_executions", queue="default", state="queued") == 0, "registered tasks' queues show at 0"
    assert value("toosimpleq_ready_executions", queue="slow") == 1
    assert 89 <= value("toosimpleq_oldest_ready_age_seconds", queue="slow") < 3600
    assert value("toosimpleq_executions_finished_total", task="fail", outcome="failed") == 2
    assert value("toosimpleq_execution_run_seconds_count", task="fail") == 2
    assert value("toosimpleq_execution_run_seconds_bucket", task="fail", le="0.025") == 0
    assert value("toosimpleq_execution_run_seconds_bucket", task="fail", le="0.05") == 2
    assert value("toosimpleq_execution_run_seconds_bucket", task="fail", le="+Inf") == 2
    assert value("toosimpleq_execution_run_seconds_sum", task="fail") == pytest.approx(0.06, abs=0.002)
    assert value("toosimpleq_execution_pickup_seconds_bucket", task="fail", le="0.5") == 0
    assert value("toosimpleq_execution_pickup_seconds_bucket", task="fail", le="1.0") == 2
    assert value("toosimpleq_workers", state="online") == 1
    assert value("toosimpleq_workers", state="timedout") == 1
    assert "toosimpleq_metrics_collect_seconds" in samples


@pytest.mark.django_db(transaction=True)
def test_schedule_lag(client, clean_registry):
    from django_toosimple_q.decorators import register_task, schedule_task
    from django_toosimple_q.models import ScheduleExec

    @schedule_task(cron="* * * * *", name="every_minute_metrics")
    @register_task(name="every_minute_task")
    def every_minute():
        pass

    ScheduleExec.objects.create(name="every_minute_metrics", last_due=timezone.now() - datetime.timedelta(minutes=10))
    lag = scrape(client, **AUTH)["toosimpleq_schedule_lag_seconds"][(("schedule", "every_minute_metrics"),)]
    assert 8 * 60 < lag < 10 * 60


@pytest.mark.django_db
def test_access_rules(client):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong")["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Basic {TOKEN}").status_code == 401
    assert client.get("/metrics", **AUTH).status_code == 200
    assert client.post("/metrics", **AUTH).status_code == 405
    assert "no-cache" in client.get("/metrics", **AUTH)["Cache-Control"]
    with override_settings(TOOSIMPLEQ_METRICS_TOKEN=None):
        assert client.get("/metrics").status_code == 200
    with override_settings():
        from django.conf import settings

        del settings.TOOSIMPLEQ_METRICS_TOKEN
        refused = client.get("/metrics", **AUTH)
        assert refused.status_code == 403 and b"TOOSIMPLEQ_METRICS_TOKEN" in refused.content


# -- a real Prometheus --------------------------------------------------------------------------------


def prometheus_path() -> str | None:
    return shutil.which("prometheus")


@pytest.fixture
def prometheus_binary():
    path = prometheus_path()
    if path is None:
        reason = "prometheus is not installed (Debian: apt-get install prometheus; `make test` installs it as root)"
        if os.environ.get("TOOSIMPLEQ_REQUIRE_PROMETHEUS") == "1":
            pytest.fail(reason + ", and TOOSIMPLEQ_REQUIRE_PROMETHEUS=1")
        pytest.skip(reason)
    return path


class Server:
    """``manage.py runserver`` on a free loopback port, on the test database."""

    def __init__(self, workers):
        self.port = free_port()
        self.log = tempfile.TemporaryFile()
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "django", "runserver", "--noreload", f"127.0.0.1:{self.port}"],
            env=workers.env(),
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self.answers, timeout=120, message=self.output)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def answers(self) -> bool:
        if self.popen.poll() is not None:
            pytest.fail(f"runserver exited: {self.output()}")
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)
        self.log.close()


class Prometheus:
    """A real Prometheus on a free loopback port, scraping ``target`` every second, data in a temp dir."""

    def __init__(self, binary: str, target: str):
        self.dir = Path(tempfile.mkdtemp(prefix="toosimpleq-prometheus-"))
        self.port = free_port()
        (self.dir / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n"
            "  - job_name: toosimpleq\n"
            "    metrics_path: /metrics\n"
            f"    authorization:\n      type: Bearer\n      credentials: {TOKEN}\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.log = open(self.dir / "prometheus.log", "wb")
        self.popen = subprocess.Popen(
            [
                binary,
                f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self.ready, timeout=120, message=lambda: (self.dir / "prometheus.log").read_text()[-3000:])

    def ready(self) -> bool:
        if self.popen.poll() is not None:
            pytest.fail(f"prometheus exited: {(self.dir / 'prometheus.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    def query(self, promql: str) -> list[dict]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def value(self, promql: str) -> float | None:
        """The single value of ``promql`` now (None: no series)."""
        result = self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def wait_value(self, promql: str, expected: float, timeout: float = 120) -> None:
        seen = []

        def check() -> bool:
            seen.append(self.value(promql))
            return seen[-1] == expected

        wait_for(check, timeout=timeout, interval=0.5, message=lambda: f"{promql} == {expected}; last seen {seen[-3:]}")

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def test_prometheus_scrapes_the_queue(workers, prometheus_binary):
    parked = add.new_exec((1, 1), {}, queue="parked", due=timezone.now() - datetime.timedelta(seconds=30))
    get_engine().insert(parked)
    worker = workers.start("--exclude_queue", "parked", "--tick", "0.5")
    for i in range(3):
        add.queue(i, i)
    for _ in range(2):
        fail.queue("scraped")
    wait_for(
        lambda: TaskExec.objects.filter(state__in=States.finished()).count() == 5, timeout=120, message=worker
    )
    server = Server(workers)
    prometheus = None
    try:
        prometheus = Prometheus(prometheus_binary, f"127.0.0.1:{server.port}")
        prometheus.wait_value('up{job="toosimpleq"}', 1)
        prometheus.wait_value('toosimpleq_executions_finished_total{task="add",outcome="succeeded"}', 3)
        prometheus.wait_value('toosimpleq_executions_finished_total{task="fail",outcome="failed"}', 2)
        prometheus.wait_value('toosimpleq_execution_run_seconds_count{task="add"}', 3)
        prometheus.wait_value('toosimpleq_execution_pickup_seconds_bucket{task="fail",le="+Inf"}', 2)
        prometheus.wait_value('toosimpleq_workers{state="online"}', 1)
        prometheus.wait_value('toosimpleq_ready_executions{queue="parked"}', 1)
        prometheus.wait_value('toosimpleq_executions{queue="parked",state="queued"}', 1)
        assert prometheus.value('toosimpleq_oldest_ready_age_seconds{queue="parked"}') >= 30
        # The sample alert of docs/monitoring.md fires for the parked queue once it has waited long enough.
        assert prometheus.query("toosimpleq_oldest_ready_age_seconds > 20")[0]["metric"]["queue"] == "parked"

        # Deleting the history (retention) leaves the counters where they were: no reset seen.
        engine = get_engine()
        while engine.prune(timezone.now() + datetime.timedelta(days=1)):
            pass
        assert TaskExec.objects.filter(state__in=States.finished()).count() == 0
        pruned_at = timezone.now().timestamp()
        wait_for(
            lambda: float(prometheus.query('toosimpleq_executions_finished_total{task="add"}')[0]["value"][0]) > pruned_at + 1,
            timeout=60,
            interval=0.5,
            message="a scrape after the prune",
        )
        assert prometheus.value('toosimpleq_executions_finished_total{task="add",outcome="succeeded"}') == 3
        assert prometheus.value('resets(toosimpleq_executions_finished_total{task="add"}[5m])') == 0
        # And new work adds to them.
        add.queue(10, 10)
        prometheus.wait_value('toosimpleq_executions_finished_total{task="add",outcome="succeeded"}', 4)
        prometheus.wait_value('toosimpleq_execution_run_seconds_count{task="add"}', 4)
    finally:
        if prometheus is not None:
            prometheus.stop()
        server.stop()
