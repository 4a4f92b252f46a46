"""Run the demo's web server and one worker together; one Ctrl-C stops both cleanly."""

import os
import signal
import subprocess
import sys
import time

host_port = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8000"
here = os.path.dirname(os.path.abspath(__file__))
commands = [
    [sys.executable, "manage.py", "worker", "--tick", "1"],
    [sys.executable, "manage.py", "runserver", "--noreload", host_port],
]
# Their own sessions: the terminal's Ctrl-C reaches only us, and we stop each child exactly once.
procs = [subprocess.Popen(c, cwd=here, start_new_session=True) for c in commands]
try:
    while all(p.poll() is None for p in procs):
        time.sleep(0.2)
except KeyboardInterrupt:
    pass
for p in procs:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
for p in procs:
    p.wait()
