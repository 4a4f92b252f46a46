"""Workflows: steps (``task.s(...)``), ``chain()`` and ``group()``, compiled into executions and links
that the engine inserts in one transaction (see docs/workflows.md).

- ``task.s(*args, **kwargs)`` is a step: a call not queued yet. ``.set(queue=..., priority=..., due=...,
  retries=..., retry_delay=..., pass_result=False, run_on_failure=True)`` returns a copy with options.
- ``chain(a, b, c)``: b runs after a succeeds, receiving a's result as its first argument (unless
  ``pass_result=False``), and so on. ``chain(...).queue()`` returns the execution of the last step.
- ``group(a, b, c)``: they run in parallel. In a chain, a group is followed by a fan-in: the next step
  runs once when every member has finished, and receives the list of their results in the group's order.
  ``group(...).queue()`` returns the executions of its members.

Chains and groups nest: a group inside a chain, a chain (or group) as a group member; what a group
passes on is the flat list of what its members end with.
"""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Union

from django.utils import timezone

from . import validation
from .engine import get_engine
from .errors import InvalidCall, InvalidWorkflow
from .models import StepLink, TaskExec

if TYPE_CHECKING:
    from .registry import Task

States = TaskExec.States
Passes = StepLink.Passes

#: What ``Signature.set()`` accepts.
OPTIONS = ("queue", "priority", "due", "retries", "retry_delay", "pass_result", "run_on_failure")


@dataclass(frozen=True)
class Signature:
    """One call of a task, as a step of a workflow (``task.s(*args, **kwargs)``)."""

    task: Task
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue_name: str | None = None
    priority: int | None = None
    due: datetime.datetime | None = None
    retries: int | None = None
    retry_delay: float | None = None
    #: Receive what the steps before pass (their result, or the list of a group's results).
    pass_result: bool = True
    #: Run even when an upstream step failed for good, receiving an ``UpstreamFailed`` in its place.
    run_on_failure: bool = False

    def set(self, **options: Any) -> Signature:
        """A copy with these options: ``queue``, ``priority``, ``due``, ``retries``, ``retry_delay`` (as for
        the task, for this step only), ``pass_result`` and ``run_on_failure``."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise InvalidWorkflow(
                f"Step {self.task.name!r}: unknown option(s) {', '.join(unknown)}; give some of {', '.join(OPTIONS)}"
            )
        if "queue" in options:
            options["queue_name"] = options.pop("queue")
        checked = dataclasses.replace(self, **options)
        validation.check_task(
            self.task.name,
            priority=checked.priority if checked.priority is not None else self.task.priority,
            queue=checked.queue_name if checked.queue_name is not None else self.task.queue_name,
            retries=checked.retries if checked.retries is not None else self.task.retries,
            retry_delay=checked.retry_delay if checked.retry_delay is not None else self.task.retry_delay,
            timeout=self.task.timeout,
        )
        if checked.due is not None:
            validation.due_for_db(self.task.name, checked.due)
        return checked

    def queue(self) -> TaskExec:
        """Queue this step alone, as a workflow of one step."""
        return chain(self).queue()

    def __or__(self, other: Node) -> Chain:
        return chain(self, other)

    def __repr__(self) -> str:
        return f"{self.task.name}.s(*{self.args!r}, **{self.kwargs!r})"


Node = Union[Signature, "Chain", "Group"]


class Chain:
    """Steps run one after the other (see the module's docstring)."""

    def __init__(self, *steps: Node | Iterable[Node]):
        self.steps = _nodes(steps, "chain")

    def queue(self) -> TaskExec:
        """Queue every step (one transaction) and return the execution of the last one: its ``wait()``
        returns when the chain has ended."""
        return _Builder().queue(self, single=True)[0]

    def __or__(self, other: Node) -> Chain:
        return Chain(*self.steps, other)

    def __repr__(self) -> str:
        return f"chain({', '.join(map(repr, self.steps))})"


class Group:
    """Steps run in parallel (see the module's docstring)."""

    def __init__(self, *members: Node | Iterable[Node]):
        self.members = _nodes(members, "group")

    def queue(self) -> list[TaskExec]:
        """Queue every member (one transaction); returns the executions of what each member ends with."""
        return _Builder().queue(self)

    def __or__(self, other: Node) -> Chain:
        return chain(self, other)

    def __repr__(self) -> str:
        return f"group({', '.join(map(repr, self.members))})"


def chain(*steps: Node | Iterable[Node]) -> Chain:
    """``chain(fetch.s(url), parse.s(), index.s())``: each step runs after the previous one succeeded."""
    return Chain(*steps)


def group(*members: Node | Iterable[Node]) -> Group:
    """``group(resize.s(i) for i in images)``: the members run in parallel."""
    return Group(*members)


def _nodes(given: tuple[Node | Iterable[Node], ...], kind: str) -> list[Node]:
    """The steps given one by one, or as one iterable (a generator expression)."""
    if len(given) == 1 and not isinstance(given[0], (Signature, Chain, Group)):
        given = tuple(given[0])
    nodes: list[Node] = []
    for index, node in enumerate(given):
        if not isinstance(node, (Signature, Chain, Group)):
            raise InvalidWorkflow(
                f"{kind}(): item #{index} is a {type(node).__name__}; give steps made with task.s(...), "
                "chains or groups"
            )
        nodes.append(node)
    if not nodes:
        raise InvalidWorkflow(f"{kind}() needs at least one step")
    return nodes


class _Builder:
    """Compiles a chain/group into steps (unsaved executions) and links, checked before any is written."""

    def __init__(self) -> None:
        self.signatures: list[Signature] = []
        self.receives: list[bool] = []
        self.links: list[tuple[int, int, int, str, bool]] = []

    def queue(self, node: Node, single: bool = False) -> list[TaskExec]:
        """Insert the workflow; returns the executions of the steps it ends with (``single``: one step,
        else ``InvalidWorkflow``)."""
        ends, one = self.add(node, [], Passes.NONE)
        if single and not one:
            raise InvalidWorkflow(
                "This chain ends with a group: add the step that receives the group's results after it, or "
                "queue it with group(...).queue() to get each member's execution"
            )
        now = timezone.now()
        upstream_count = [0] * len(self.signatures)
        for _up, down, _position, _passes, _after in self.links:
            upstream_count[down] += 1
        steps = [
            self.execution(signature, receives, upstream_count[index], now)
            for index, (signature, receives) in enumerate(zip(self.signatures, self.receives))
        ]
        saved = get_engine().insert_workflow(_describe(node), steps, self.links)
        return [saved[index] for index in ends]

    def add(self, node: Node, upstream: list[int], passes: str) -> tuple[list[int], bool]:
        """Add ``node`` after the steps ``upstream``; returns the steps it ends with, and whether it
        passes one value (a step, or a chain ending with one) rather than a list."""
        if isinstance(node, Signature):
            index = len(self.signatures)
            mode = passes if node.pass_result and upstream else Passes.NONE
            self.signatures.append(node)
            self.receives.append(mode != Passes.NONE)
            for position, up in enumerate(upstream):
                self.links.append((up, index, position, mode, node.run_on_failure))
            return [index], True
        if isinstance(node, Chain):
            single = True
            for step in node.steps:
                upstream, single = self.add(step, upstream, passes)
                passes = Passes.VALUE if single else Passes.LIST
            return upstream, single
        ends: list[int] = []
        for member in node.members:
            member_ends, _single = self.add(member, upstream, passes)
            ends += member_ends
        return ends, False

    def execution(self, signature: Signature, receives: bool, upstream: int, now: datetime.datetime) -> TaskExec:
        task = signature.task
        try:
            encoded = task.check_call(signature.args, signature.kwargs, received=1 if receives else 0)
        except InvalidCall as exc:
            raise InvalidCall(f"{exc} (as a step that {'receives' if receives else 'does not receive'} the "
                              "result of the steps before it)") from None
        options: dict[str, Any] = {}
        for name, attribute in (("queue", "queue_name"), ("priority", "priority"), ("retries", "retries"),
                                ("retry_delay", "retry_delay")):
            value = getattr(signature, attribute)
            if value is not None:
                options[name] = value
        execution = task.new_exec(signature.args, signature.kwargs, signature.due, encoded=encoded, now=now, **options)
        # A step of a unique task takes its key when it enters the queue, after its links are written
        # (the engine's ``settle_unique_steps``): it may merge into an identical waiting call.
        execution.unique_key = None
        execution.receives = receives
        if upstream:
            execution.state, execution.upstream_left = States.WAITING, upstream
        return execution


def _describe(node: Node) -> str:
    text = repr(node)
    return text if len(text) <= 200 else text[:199] + "…"
