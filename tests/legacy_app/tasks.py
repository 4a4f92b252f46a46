"""The tasks of the 1.x project, from the fixture's own ``tasks.py``, run unchanged: after the
upgrade the same names must be registered. Each call appends a JSON line to ``$LEGACY_OUT/<task>``."""

import importlib.util
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "legacy-1.2.1"

_spec = importlib.util.spec_from_file_location("tests.legacy_app.fixture_tasks", FIXTURE / "tasks.py")
fixture_tasks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fixture_tasks)
