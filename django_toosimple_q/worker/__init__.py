"""The worker (``manage.py worker``).

Names are imported on first use: a child process started by the worker imports this package (for
``isolation``) before Django is set up, so nothing here may import models at import time.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Worker", "run_process", "EXIT_OK", "EXIT_CRASHED", "EXIT_USAGE", "EXIT_RELOAD"]


def __getattr__(name: str) -> Any:
    if name == "run_process":
        from .process import run_process

        return run_process
    if name in __all__:
        from . import worker

        return getattr(worker, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
