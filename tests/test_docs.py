"""Every Python sample of the documentation (``docs/*.md`` and ``README.md``) runs here.

The convention, for fenced code blocks (the words after the language are options):

- ```` ```python ````: run. The blocks of one page run in order in one module (``docs_<page>``),
  so a later block uses what an earlier one defined, as a reader pasting them into one file would.
  They run against the test database, with a clean task registry (``clean_registry``); a sample
  may run a worker in-process with ``call_command("worker", "--until_done")``.
- ```` ```python django>=6.0 ````: run only on that Django version or later (skipped otherwise).
- ```` ```python norun REASON ````: shown but not run; the reason is mandatory.
- ```` ```python xfail REASON ````: run and expected to raise, for a sample whose behaviour is being
  changed elsewhere; once it works, this test fails so that the marker is removed.
- Other languages (``shell``, ``text``...) and MyST directives (```` ```{toctree} ````) are not run.

Besides running, every name a sample uses must be defined by the page itself (or be a builtin),
also inside functions that the sample never calls.
"""

from __future__ import annotations

import ast
import builtins
import logging
import re
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import django
import pytest
from django.test import override_settings

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
OPTIONS = {"norun", "xfail"}


@dataclass
class Sample:
    path: Path
    line: int  # of the first line of code, 1-based
    code: str
    options: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def runs_here(self) -> bool:
        for option in self.options:
            if option.startswith("django>="):
                wanted = tuple(int(part) for part in option.removeprefix("django>=").split("."))
                if django.VERSION[: len(wanted)] < wanted:
                    return False
        return "norun" not in self.options


def python_samples(path: Path) -> list[Sample]:
    text = path.read_text()
    samples = []
    for match in FENCE.finditer(text):
        info = match.group(1).split()
        if not info or info[0] != "python":
            continue
        line = text.count("\n", 0, match.start(2)) + 1
        samples.append(Sample(path, line, match.group(2), info[1:]))
    return samples


def module_name(path: Path) -> str:
    return "docs_" + re.sub(r"\W", "_", path.stem.lower())


def compile_sample(sample: Sample):
    # Blank lines first, so that tracebacks give the line numbers of the Markdown file.
    return compile("\n" * (sample.line - 1) + sample.code, str(sample.path), "exec")


def bound_names(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
    return names


def used_names(tree: ast.AST) -> set[str]:
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}


def pages_with_samples() -> list[Path]:
    return [path for path in PAGES if python_samples(path)]


def page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --- the convention itself -------------------------------------------------------------------


def test_the_docs_have_python_samples():
    assert len(pages_with_samples()) >= 8, "docs/*.md or README.md lost their samples, or the parser broke"


@pytest.mark.parametrize("path", PAGES, ids=page_id)
def test_sample_options_are_known_and_explained(path):
    for sample in python_samples(path):
        for option in sample.options:
            if option in OPTIONS or option.startswith("django>="):
                continue
            # The words after norun/xfail are the reason.
            if OPTIONS & set(sample.options[: sample.options.index(option)]):
                continue
            pytest.fail(f"{sample.where}: unknown option {option!r} after ```python (see tests/test_docs.py)")
        for option in OPTIONS & set(sample.options):
            reason = sample.options[sample.options.index(option) + 1 :]
            assert reason, f"{sample.where}: ```python {option} needs a reason after it"


@pytest.mark.parametrize("path", pages_with_samples(), ids=page_id)
def test_samples_use_only_names_they_define(path):
    trees = [ast.parse(sample.code, str(sample.path)) for sample in python_samples(path) if "norun" not in sample.options]
    defined = set(dir(builtins)) | {"__name__", "__file__"}
    for tree in trees:
        defined |= bound_names(tree)
    undefined = set().union(*(used_names(tree) for tree in trees)) - defined if trees else set()
    assert not undefined, f"{page_id(path)}: samples use names they never define: {sorted(undefined)}"


# --- running the samples -----------------------------------------------------------------------


@pytest.fixture
def quiet_library_logger():
    """A sample's in-process worker adds a handler to the library's logger: take it away afterwards."""
    logger = logging.getLogger("django_toosimple_q")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


def django_tasks_settings():
    """The docs' queue names (e.g. "emails") are not those of the test settings: allow any queue."""
    if django.VERSION < (6, 0):
        return override_settings()
    return override_settings(TASKS={"default": {"BACKEND": "django_toosimple_q.backends.QueueBackend", "QUEUES": []}})


@pytest.mark.parametrize("path", pages_with_samples(), ids=page_id)
def test_samples_run(path, transactional_db, clean_registry, quiet_library_logger):
    samples = [sample for sample in python_samples(path) if sample.runs_here]
    if not samples:
        pytest.skip(f"no sample of {page_id(path)} runs on Django {django.get_version()}")
    module = types.ModuleType(module_name(path))
    module.__file__ = str(path)
    sys.modules[module.__name__] = module
    try:
        with django_tasks_settings():
            for sample in samples:
                code = compile_sample(sample)
                if "xfail" in sample.options:
                    with pytest.raises(Exception):  # noqa: B017 - any error: the sample is known not to work
                        exec(code, module.__dict__)
                    continue
                exec(code, module.__dict__)
    finally:
        del sys.modules[module.__name__]
