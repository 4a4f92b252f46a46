"""Workflow statements: inserting the steps of a chain or group with their links, releasing the steps
that waited for a finished one (in the transaction that records its outcome), blocking those whose
upstream failed, following replacements, the unique key (or merge) of a step of a unique task when it
enters the queue, cancelling a workflow, and reading a step's arguments.

Only executions with a ``workflow_id`` take these paths: a plain task costs one attribute test.
"""

from __future__ import annotations

import datetime
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence, TypeVar

from django.db import IntegrityError, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from .. import serialization
from ..errors import UpstreamFailed
from ..models import StepLink, TaskExec, Workflow

States = TaskExec.States
Passes = StepLink.Passes
T = TypeVar("T")

#: Ids per ``IN (...)`` list.
CHUNK = 500


class WorkflowStatements:
    """Mixed into ``Engine``: uses its ``db``, ``objects``, ``retrying``, ``insert_many`` and
    ``announce_finished``."""

    if TYPE_CHECKING:  # provided by Engine
        db: str
        connection: Any

        def objects(self) -> Any: ...
        def retrying(self, operation: Callable[[], T], attempts: int = 50) -> T: ...
        def insert_many(self, executions: Sequence[TaskExec]) -> list[TaskExec]: ...
        def announce_finished(self, ids: Iterable[int]) -> None: ...
        @staticmethod
        def moved_earlier(row: TaskExec, due: datetime.datetime, now: datetime.datetime) -> dict[str, Any]: ...

    def links(self) -> Any:
        return StepLink.objects.using(self.db)

    # -- queuing -----------------------------------------------------------------------------------

    def insert_workflow(
        self, name: str, steps: list[TaskExec], links: list[tuple[int, int, int, str, bool]]
    ) -> list[TaskExec]:
        """Insert a workflow, its steps and their links (``(upstream index, downstream index, position,
        passes, after_failure)``) in one transaction: no worker sees a step before its links."""

        def transact() -> list[TaskExec]:
            with transaction.atomic(using=self.db):
                workflow = Workflow.objects.using(self.db).create(name=name[:255])
                for step in steps:
                    step.workflow_id = workflow.pk
                saved = self.insert_many(steps)
                self._insert_links(
                    [(saved[up].pk, saved[down].pk, position, passes, after) for up, down, position, passes, after in links]
                )
                entering = [step.pk for step in saved if step.is_unique and step.state != States.WAITING]
                if entering:
                    merged = self.settle_unique_steps(entering, timezone.now())
                    saved = [merged.get(step.pk, step) for step in saved]
                return saved

        return self.retrying(transact)

    def _insert_links(self, rows: list[tuple[int, int, int, str, bool]]) -> None:
        """One multi-row INSERT per ``CHUNK`` links (no model instance per link: a fan-in has thousands)."""
        qn = self.connection.ops.quote_name
        table = qn(StepLink._meta.db_table)
        names = ", ".join(qn(c) for c in ("upstream_id", "downstream_id", "position", "passes", "after_failure"))
        with self.connection.cursor() as cursor:
            for start in range(0, len(rows), CHUNK):
                chunk = rows[start : start + CHUNK]
                values = ", ".join(["(%s, %s, %s, %s, %s)"] * len(chunk))
                cursor.execute(f"INSERT INTO {table} ({names}) VALUES {values}", [v for row in chunk for v in row])

    # -- in the transaction recording outcomes -----------------------------------------------------

    def steps_finished(self, finished: list[tuple[int, str]], now: datetime.datetime) -> None:
        """Steps that ended for good (``(id, state)``): each downstream step counts one upstream less
        and is queued by the update that brings its count to 0 (one conditional UPDATE decides, under
        the row's lock: exactly once, however many workers finish its upstream steps at once). A step
        that did not succeed blocks the downstream steps that do not run after failures, and so on down."""
        while finished:
            states = dict(finished)
            rows = list(
                self.links()
                .filter(upstream_id__in=list(states))
                .values_list("upstream_id", "downstream_id", "after_failure", "downstream__is_unique")
            )
            releases: Counter[int] = Counter()
            blocking: dict[int, int] = {}
            unique: set[int] = set()
            for upstream, downstream, after_failure, is_unique in rows:
                if states[upstream] == States.SUCCEEDED or after_failure:
                    releases[downstream] += 1
                    if is_unique:
                        unique.add(downstream)
                else:
                    blocking.setdefault(downstream, upstream)
            self._release(releases, now)
            if unique:
                # Those of them the release queued (their count reached 0) enter the queue as unique calls.
                self.settle_unique_steps(sorted(unique), now)
            finished = self._block(blocking, states, now)

    def _release(self, releases: Counter[int], now: datetime.datetime) -> None:
        by_count: dict[int, list[int]] = defaultdict(list)
        for downstream, count in sorted(releases.items()):
            by_count[count].append(downstream)
        for count, ids in sorted(by_count.items()):
            for start in range(0, len(ids), CHUNK):
                # ``state`` first: MariaDB evaluates the assignments left to right, each seeing the ones
                # before it; PostgreSQL and SQLite read the old values in both.
                self.objects().filter(pk__in=ids[start : start + CHUNK]).update(
                    state=Case(
                        When(
                            state=States.WAITING,
                            upstream_left__lte=count,
                            then=Case(When(due__gt=now, then=Value(States.SLEEPING)), default=Value(States.QUEUED)),
                        ),
                        default=F("state"),
                    ),
                    upstream_left=F("upstream_left") - count,
                )

    def _block(self, blocking: dict[int, int], states: dict[int, str], now: datetime.datetime) -> list[tuple[int, str]]:
        """BLOCK the WAITING steps among ``blocking`` (downstream -> the upstream that failed); returns them."""
        if not blocking:
            return []
        names = dict(self.objects().filter(pk__in=set(blocking.values())).values_list("pk", "task_name"))
        by_upstream: dict[int, list[int]] = defaultdict(list)
        for downstream, upstream in sorted(blocking.items()):
            by_upstream[upstream].append(downstream)
        blocked: list[tuple[int, str]] = []
        for upstream, ids in by_upstream.items():
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start : start + CHUNK]
                locked = list(
                    self.objects().select_for_update().filter(pk__in=chunk, state=States.WAITING).values_list("pk", flat=True)
                )
                if not locked:
                    continue
                self.objects().filter(pk__in=locked, state=States.WAITING).update(
                    state=States.BLOCKED,
                    finished=now,
                    error=f"Not run: upstream step {names.get(upstream, '?')} #{upstream} ended {states[upstream]}.",
                )
                blocked += [(pk, States.BLOCKED) for pk in locked]
        self.announce_finished(pk for pk, _state in blocked)
        return blocked

    def follow_replacement(self, old: int, new: int) -> None:
        """A step was replaced (retry, rescue, requeue): its links now lead to and from the replacement."""
        self.links().filter(upstream_id=old).update(upstream_id=new)
        self.links().filter(downstream_id=old).update(downstream_id=new)

    def replaced_step(self, old: int, new: TaskExec, now: datetime.datetime, revive: bool = False) -> TaskExec:
        """A step was replaced by ``new`` (retry, rescue, requeue; inserted in this transaction without a
        unique key): its links lead to and from ``new``; with ``revive``, the steps it blocked wait
        again; a step of a unique task then takes its key or merges (``settle_unique_steps``). Returns
        the execution that will run: ``new``, or the waiting twin it merged into."""
        self.follow_replacement(old, new.pk)
        if revive:
            self.revive_downstream(new.pk)
        if new.is_unique:
            return self.settle_unique_steps([new.pk], now).get(new.pk, new)
        return new

    def revive_downstream(self, step: int) -> None:
        """A failed step was requeued: the steps it blocked wait again (for it), unless another upstream
        step they need failed too; and so on down."""
        pending = [step]
        while pending:
            current = pending.pop()
            for downstream in list(
                self.links()
                .filter(upstream_id=current, downstream__state=States.BLOCKED)
                .values_list("downstream_id", flat=True)
            ):
                still_failed = (
                    self.links()
                    .filter(downstream_id=downstream, after_failure=False)
                    .exclude(upstream_id=current)
                    .filter(upstream__state__in=[s for s in States.finished() if s != States.SUCCEEDED])
                    .exists()
                )
                if still_failed:
                    continue
                if self.objects().filter(pk=downstream, state=States.BLOCKED).update(
                    state=States.WAITING, finished=None, error=None
                ):
                    pending.append(downstream)

    # -- unique steps ------------------------------------------------------------------------------

    def settle_unique_steps(self, ids: Sequence[int], now: datetime.datetime) -> dict[int, TaskExec]:
        """Steps of unique tasks that have just entered the queue in this transaction (among ``ids``: the
        rows waiting without a key): each takes the unique key of its call, as a plain call does, so an
        identical call queued later merges into it. If an identical call already waits, the step merges
        into it instead: it ends ``CANCELLED``, replaced by that execution, and the steps after it wait
        for that execution (see docs/workflows.md). Returns ``{merged step id: the execution it merged
        into}``."""
        merged: dict[int, TaskExec] = {}
        for start in range(0, len(ids), CHUNK):
            rows = self.objects().filter(
                pk__in=ids[start : start + CHUNK], is_unique=True, unique_key__isnull=True, state__in=States.waiting()
            )
            for step in rows.order_by("pk"):
                key = self.step_fingerprint(step)
                twin = self._take_key(step, key) if key is not None else None
                if twin is not None:
                    self._merge_step(step, twin, now)
                    merged[step.pk] = twin
        return merged

    def step_fingerprint(self, execution: TaskExec) -> str | None:
        """The unique key of a call (``call_fingerprint``); for a step that receives what its upstream
        steps pass: its task, the positional arguments it will run with (what it receives, then its
        own) and its keyword arguments, so a step that receives 7 is the same call as
        ``task.queue(7)``. None when it receives a failure (an ``UpstreamFailed`` is no call's
        argument) or its upstream rows are gone."""
        if not execution.receives:
            return execution.call_fingerprint()
        try:
            args = self.step_arguments(execution)
        except LookupError:
            return None
        received = args[0] if isinstance(args[0], list) else [args[0]]
        if any(isinstance(value, UpstreamFailed) for value in received):
            return None
        return serialization.call_fingerprint(execution.task_name, args, execution.kwargs)

    def _take_key(self, step: TaskExec, key: str) -> TaskExec | None:
        """Give ``step`` its unique key; if an identical call already holds it, return that one (locked)."""
        for _attempt in range(5):
            try:
                with transaction.atomic(using=self.db):
                    self.objects().filter(pk=step.pk).update(unique_key=key)
                return None
            except IntegrityError:
                twin = self.objects().select_for_update().filter(unique_key=key, state__in=States.waiting()).first()
                if twin is not None:
                    return twin
                # Its twin was claimed between the two statements: the key may be free now.
        return None  # twins keep being claimed under our feet: this one runs as well, without a key

    def _merge_step(self, step: TaskExec, twin: TaskExec, now: datetime.datetime) -> None:
        """``step`` merges into ``twin``, an identical waiting call: the steps after it wait for ``twin``."""
        self.objects().filter(pk=step.pk).update(
            state=States.CANCELLED,
            finished=now,
            replaced_by_id=twin.pk,
            error=f"Merged into #{twin.pk}, the identical call of this unique task already waiting: "
            "the steps after this one wait for it.",
        )
        self.links().filter(upstream_id=step.pk).update(upstream_id=twin.pk)
        changes: dict[str, Any] = {}
        if twin.workflow_id is None:
            # Its outcome must release the steps now linked after it.
            changes["workflow_id"] = twin.workflow_id = step.workflow_id
        if step.due < twin.due:
            changes.update(self.moved_earlier(twin, step.due, now))
        if changes:
            self.objects().filter(pk=twin.pk).update(**changes)
        self.announce_finished([step.pk])

    # -- from outside the worker -------------------------------------------------------------------

    def cancel_workflow(self, workflow_id: int, now: datetime.datetime) -> list[int]:
        """Cancel every step of the workflow that has not started; returns their ids. Steps running now
        finish; what waits for them is cancelled already."""

        def transact() -> list[int]:
            with transaction.atomic(using=self.db):
                ids = list(
                    self.objects()
                    .select_for_update()
                    .filter(workflow_id=workflow_id, state__in=States.not_started())
                    .order_by("pk")
                    .values_list("pk", flat=True)
                )
                for start in range(0, len(ids), CHUNK):
                    self.objects().filter(pk__in=ids[start : start + CHUNK], state__in=States.not_started()).update(
                        state=States.CANCELLED, finished=now, unique_key=None, error="Cancelled with its workflow."
                    )
                self.announce_finished(ids)
                return ids

        return self.retrying(transact)

    # -- reading -----------------------------------------------------------------------------------

    def step_arguments(self, execution: TaskExec) -> list[Any]:
        """The positional arguments a step runs with: what its upstream steps pass (their result, or the
        list of their results in order; an ``UpstreamFailed`` for one that did not succeed), then its own."""
        links = self.links().filter(downstream_id=execution.pk).exclude(passes=Passes.NONE)
        # One join, in order (a fan-in callback reads thousands of results).
        rows = list(
            links.order_by("position", "pk").values_list(
                "passes", "upstream_id", "upstream__task_name", "upstream__state", "upstream__result", "upstream__error"
            )
        )
        if not rows:
            if links.exists():
                raise LookupError("its upstream steps no longer exist (deleted or pruned)")
            return list(execution.args)
        expected = links.count() if len(rows) > 1 or rows[0][0] != Passes.VALUE else 1
        if len(rows) != expected:
            raise LookupError(f"{expected - len(rows)} of its upstream steps no longer exist (deleted or pruned)")
        values = [
            result if state == States.SUCCEEDED else UpstreamFailed(pk, task_name, state, error)
            for _passes, pk, task_name, state, result, error in rows
        ]
        passed = values[0] if rows[0][0] == Passes.VALUE else values
        return [passed, *execution.args]
