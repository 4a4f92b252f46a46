#!/usr/bin/env python
"""What checking and encoding arguments costs per call, without a database: ``python bench/encoding.py``.

For a few argument shapes, the time of ``serialization.dumps()`` (what the ``args`` column stores) and
of ``Task.check_call()`` + ``dumps()`` (what ``queue()`` does before its INSERT). ``--ref main`` also
times the ``serialization.py`` of that git revision (loaded from ``git show``), to see what a change
costs. Best of 5 rounds; microseconds per call.
"""

from __future__ import annotations

import argparse
import datetime
import decimal
import importlib.util
import os
import subprocess
import sys
import tempfile
import timeit
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

import django  # noqa: E402

django.setup()

from django_toosimple_q import serialization  # noqa: E402
from django_toosimple_q.registry import Task  # noqa: E402

NOW = datetime.datetime(2024, 5, 1, 12, tzinfo=datetime.timezone.utc)


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


PAYLOADS = {
    "(path, 123): bench's append_line": ["/tmp/bench/lines.txt", 123],
    "dict of 50 mixed values": [
        {f"key{i}": [i, f"text {i}", NOW, decimal.Decimal(i), uuid.UUID(int=i)][i % 5] for i in range(50)}
    ],
    "list of 10,000 ints": [list(range(10_000))],
    "1 MB of ASCII text": ["x" * 1_000_000],
    "1 MB of non-ASCII text": ["é€" * 250_000],
    "100 KB of text, lone surrogates": ["a\udcff" * 50_000],
    "lists nested 100 levels deep": [nested(100)],
}


def load_serialization(ref: str):
    """The serialization module of git revision ``ref``, loaded under another name."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{ref}:django_toosimple_q/serialization.py"],
        check=True, capture_output=True, text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / f"serialization_{ref}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"serialization_{ref}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def per_call_us(function, number: int) -> float:
    return min(timeit.repeat(function, number=number, repeat=5)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref", help="also time serialization.py of this git revision (e.g. main)")
    options = parser.parse_args()
    old = load_serialization(options.ref) if options.ref else None
    task = Task(func=lambda *args: None, name="bench")
    header = f"{'arguments':<34} {'dumps':>10} {'check+dumps':>12}"
    if old:
        header += f" {'dumps@' + options.ref:>14}"
    print(header + "   (microseconds per call, best of 5)")
    for label, args in PAYLOADS.items():
        size = len(serialization.dumps(args, "args", wrapper=True))
        number = max(1, min(20_000, 2_000_000 // max(size, 1)))
        line = f"{label:<34} {per_call_us(lambda: serialization.dumps(args, 'args', wrapper=True), number):>10.1f}"
        line += f" {per_call_us(lambda: (task.check_call(tuple(args), {}), serialization.dumps(args, 'args', wrapper=True)), number):>12.1f}"
        if old:
            try:
                line += f" {per_call_us(lambda: old.dumps(args, 'args'), number):>14.1f}"
            except Exception as exc:  # noqa: BLE001 - a shape the old version refuses
                line += f" {type(exc).__name__:>14}"
        print(line)


if __name__ == "__main__":
    main()
