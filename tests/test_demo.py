"""``make demo``'s runner (demo/run.py): a SIGTERM to it, or to its process group, stops the web
server and the worker it started; nothing is left running."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.db import connection

from .conftest import ROOT, Proc, wait_for

DEMO = ROOT / "demo"


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture
def demo_env(tmp_path):
    if connection.vendor != "sqlite":
        pytest.skip("the demo runs on SQLite whatever the test database: once is enough")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "demo.settings", "TOOSIMPLEQ_DEMO_DB": str(tmp_path / "demo.sqlite3")}
    env["PYTHONUNBUFFERED"] = "1"
    subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=DEMO, env=env, check=True, timeout=120)
    return env


@pytest.mark.parametrize("target", ["runner", "process group"])
def test_sigterm_stops_the_demo_web_server_and_worker(demo_env, target):
    port = free_port()
    popen = subprocess.Popen(
        [sys.executable, "run.py", f"127.0.0.1:{port}"],
        cwd=DEMO,
        env=demo_env,
        start_new_session=True,  # a process group of its own, as a shell job or a service has
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    runner = Proc(popen)
    started: set[int] = set()
    try:
        runner.wait_output("started (every queue", timeout=60)
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/admin/login/"), timeout=60, message=runner)
        started = descendants(runner.pid)
        # The web server, the worker and the worker's reloading child (the demo has DEBUG = True).
        assert len(started) >= 3, runner.output

        if target == "runner":
            os.kill(runner.pid, signal.SIGTERM)
        else:
            os.killpg(runner.pid, signal.SIGTERM)

        assert runner.wait(timeout=60) == 0, runner.output
        wait_for(lambda: not any(running(pid) for pid in started), timeout=30, message=runner)
        assert not answers(f"http://127.0.0.1:{port}/admin/login/")
    finally:
        if popen.poll() is None:
            os.killpg(popen.pid, signal.SIGKILL)
        for pid in started | descendants(popen.pid):
            if running(pid):
                os.kill(pid, signal.SIGKILL)
        runner.communicate(timeout=30)
