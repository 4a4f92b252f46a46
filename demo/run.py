"""Run the demo's web server and one worker together. One Ctrl-C, or a SIGTERM/SIGHUP sent to this
process or to its process group, stops both cleanly: nothing is left running."""

import os
import signal
import subprocess
import sys
import threading

host_port = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8000"
here = os.path.dirname(os.path.abspath(__file__))
commands = [
    [sys.executable, "manage.py", "worker", "--tick", "1", "--grace", "5"],
    [sys.executable, "manage.py", "runserver", "--noreload", host_port],
]

stop = threading.Event()
# Installed before the children start, so that no signal can leave them orphaned.
for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(signum, lambda *_: stop.set())

# Their own sessions: a signal sent to the terminal or to our process group reaches only us, and we
# stop each child exactly once.
procs = [subprocess.Popen(c, cwd=here, start_new_session=True) for c in commands]
while not stop.is_set() and all(p.poll() is None for p in procs):
    stop.wait(0.2)
for p in procs:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
for p in procs:
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # its whole session: the reloading worker's child too
        p.wait()
sys.exit(0 if all(p.returncode in (0, -signal.SIGTERM) for p in procs) else 1)
