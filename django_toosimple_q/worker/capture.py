"""Per-execution capture of what a task prints, correct when several tasks run in threads at once.

``sys.stdout``/``sys.stderr`` are replaced once by proxies that write into the buffer of the
execution running in the current context (its task thread, and the event loop thread of an
``async def`` task), and to the real stream everywhere else.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import sys
import threading
from typing import Iterator

# A context variable rather than a thread-local: an ``async def`` task runs its event loop in a helper
# thread (``async_to_sync``) that carries the context of the task thread, so its output is captured too.
_buffer: contextvars.ContextVar[io.StringIO | None] = contextvars.ContextVar("toosimpleq_output", default=None)
_install_lock = threading.Lock()


class _ThreadRoutedStream(io.TextIOBase):
    def __init__(self, fallback):
        self.fallback = fallback

    def _target(self):
        return _buffer.get() or self.fallback

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]  # TextIOBase declares a plain attribute
        return getattr(self.fallback, "encoding", "utf-8")

    def fileno(self) -> int:
        return self.fallback.fileno()


def _install() -> None:
    with _install_lock:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if not isinstance(stream, _ThreadRoutedStream):
                setattr(sys, name, _ThreadRoutedStream(stream))


@contextlib.contextmanager
def capture_output() -> Iterator[io.StringIO]:
    """Collect stdout and stderr written by the current thread into one buffer."""
    _install()
    buffer = io.StringIO()
    token = _buffer.set(buffer)
    try:
        yield buffer
    finally:
        _buffer.reset(token)
