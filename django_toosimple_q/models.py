"""The database side: executions of tasks and schedules, and worker statuses.

The registry (``registry.py``) says *what* tasks and schedules exist; these models only record
*executions*.
"""

from __future__ import annotations

import datetime
import signal
from typing import TYPE_CHECKING, Any, Callable

from django.db import models
from django.db.models.base import ModelState
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from . import serialization, waiting
from .conf import listen_database, queue_database


class TypedJSONField(models.TextField):
    """Python values stored as typed JSON text (see ``serialization``); never pickle.

    Text rather than a database JSON type so that the stored form (and key order) is identical on
    every database. A stored value that cannot be decoded loads as ``serialization.Undecodable``
    instead of breaking every query that touches the row.
    """

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Any:
        if value is None:
            return None
        try:
            return serialization.loads(value)
        except Exception as exc:  # noqa: BLE001 - any corruption must stay readable
            return serialization.Undecodable(value, exc)

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return serialization.loads(value)
            except ValueError:
                return value
        return value

    def get_prep_value(self, value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, (serialization.Undecodable, EncodedJSON)):
            return value.raw
        # The list/dict holding a call's arguments does not count in the nesting limit of each argument.
        return serialization.dumps(value, self.name, wrapper=self.name in ("args", "kwargs"))

    def value_to_string(self, obj: Any) -> str | None:
        return self.get_prep_value(self.value_from_object(obj))


class EncodedJSON:
    """A value already encoded by ``serialization.dumps``, written as is (encoding it once is enough)."""

    __slots__ = ("raw",)

    def __init__(self, raw: str):
        self.raw = raw


class _VendorIndex(models.Index):
    """An index whose SQL depends on the database: ``_concrete(connection)`` says which Django index
    it is there (partial where the database has partial indexes)."""

    def _concrete(self, connection: Any) -> models.Index:
        raise NotImplementedError

    def create_sql(self, model: Any, schema_editor: Any, using: str = "", **kwargs: Any) -> Any:
        return self._concrete(schema_editor.connection).create_sql(model, schema_editor, using, **kwargs)

    def remove_sql(self, model: Any, schema_editor: Any, **kwargs: Any) -> Any:
        return self._concrete(schema_editor.connection).remove_sql(model, schema_editor, **kwargs)


class StateIndex(_VendorIndex):
    """An index over the rows in one ``state`` only.

    A partial index where the database has them (PostgreSQL, SQLite), so its size follows the number
    of waiting rows, not the history; on MariaDB/MySQL, which have no partial indexes, the closest
    equivalent: the same columns prefixed by ``state``.
    """

    def __init__(self, *, state: str, fields: list[str], name: str):
        self.state = state
        super().__init__(fields=fields, name=name)
        # The columns where the index is not partial (MariaDB): Django's MySQL schema editor reads
        # them when the index is removed, and would otherwise add a stray index for a foreign key
        # it wrongly believes this index served.
        self.fields_orders: list[tuple[str, str]] = [("state", ""), *self.fields_orders]

    def _concrete(self, connection: Any) -> models.Index:
        if connection.features.supports_partial_indexes:
            return models.Index(fields=self.fields, name=self.name, condition=Q(state=self.state))
        return models.Index(fields=["state", *self.fields], name=self.name)

    def deconstruct(self) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        path, _args, kwargs = super().deconstruct()
        return (
            "django_toosimple_q.models.StateIndex",
            (),
            {"state": self.state, "fields": kwargs["fields"], "name": kwargs["name"]},
        )


class SetIndex(_VendorIndex):
    """An index over the rows where ``field`` is set (NOT NULL), partial where the database has them
    (PostgreSQL, SQLite): a column that is NULL on almost every row (``replaced_by``) then costs no
    index entry per row version. On MariaDB/MySQL, a plain index on the column (migration 0026 leaves
    it to the index InnoDB keeps for the foreign key of ``replaced_by``)."""

    def __init__(self, *, field: str, name: str):
        self.field = field
        super().__init__(fields=[field], name=name)

    def _concrete(self, connection: Any) -> models.Index:
        if connection.features.supports_partial_indexes:
            return models.Index(fields=[self.field], name=self.name, condition=Q(**{f"{self.field}__isnull": False}))
        return models.Index(fields=[self.field], name=self.name)

    def deconstruct(self) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        return ("django_toosimple_q.models.SetIndex", (), {"field": self.field, "name": self.name})


class UniqueWhenSet(models.UniqueConstraint):
    """``field`` is unique among the rows where it is set: a partial unique index (``WHERE field IS NOT
    NULL``) where the database has them, so the rows where it is NULL (nearly all) have no entry;
    on MariaDB/MySQL a plain unique index (NULLs never collide there either)."""

    def __init__(self, *, field: str, name: str):
        self.field = field
        super().__init__(fields=[field], name=name)

    def _concrete(self, connection: Any) -> models.UniqueConstraint:
        if connection.features.supports_partial_indexes:
            return models.UniqueConstraint(
                fields=[self.field], name=self.name, condition=Q(**{f"{self.field}__isnull": False})
            )
        return models.UniqueConstraint(fields=[self.field], name=self.name)

    def constraint_sql(self, model: Any, schema_editor: Any) -> Any:
        return self._concrete(schema_editor.connection).constraint_sql(model, schema_editor)

    def create_sql(self, model: Any, schema_editor: Any) -> Any:
        return self._concrete(schema_editor.connection).create_sql(model, schema_editor)

    def remove_sql(self, model: Any, schema_editor: Any) -> Any:
        return self._concrete(schema_editor.connection).remove_sql(model, schema_editor)

    def deconstruct(self) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        return ("django_toosimple_q.models.UniqueWhenSet", (), {"field": self.field, "name": self.name})

    def __eq__(self, other: object) -> bool:
        if isinstance(other, UniqueWhenSet):
            return (self.field, self.name) == (other.field, other.name)
        return super().__eq__(other)


if TYPE_CHECKING:

    class _Member(str):
        """What a type checker sees of a ``TextChoices`` member: a str with a label."""

        label: str


class QueueManager(models.Manager):
    """Queries go to the queue's database (``conf.queue_database()``: ``TOOSIMPLEQ_DATABASE``, even
    without the router, else the routers' database for writing), so the library, the admin and your
    code read the queue where it is written, never from a replica that lags."""

    def get_queryset(self) -> models.QuerySet:
        return super().get_queryset().using(queue_database())


class TaskExec(models.Model):
    """One planned or past call of a registered task."""

    class States(models.TextChoices):
        if TYPE_CHECKING:  # without Django's type stubs, a checker would see (value, label) tuples
            SLEEPING: _Member
            QUEUED: _Member
            PROCESSING: _Member
            SUCCEEDED: _Member
            FAILED: _Member
            INTERRUPTED: _Member
            INVALID: _Member
            CANCELLED: _Member
            WAITING: _Member
            BLOCKED: _Member
        else:
            SLEEPING = "SLEEPING", _("Sleeping")
            QUEUED = "QUEUED", _("Queued")
            PROCESSING = "PROCESSING", _("Processing")
            SUCCEEDED = "SUCCEEDED", _("Succeeded")
            FAILED = "FAILED", _("Failed")
            INTERRUPTED = "INTERRUPTED", _("Interrupted")
            INVALID = "INVALID", _("Invalid")
            CANCELLED = "CANCELLED", _("Cancelled")
            #: A workflow step whose upstream steps have not all finished: never claimed.
            WAITING = "WAITING", _("Waiting for upstream steps")
            #: A workflow step that will not run: an upstream step failed for good (``error`` says which).
            BLOCKED = "BLOCKED", _("Blocked by an upstream step")

        @classmethod
        def waiting(cls) -> list[str]:
            """Waiting to be claimed (not due yet, or due)."""
            return [cls.SLEEPING, cls.QUEUED]

        @classmethod
        def not_started(cls) -> list[str]:
            """Not started and still able to run: waiting, or a workflow step waiting for its upstream."""
            return [cls.SLEEPING, cls.QUEUED, cls.WAITING]

        @classmethod
        def finished(cls) -> list[str]:
            return [cls.SUCCEEDED, cls.FAILED, cls.INTERRUPTED, cls.INVALID, cls.CANCELLED, cls.BLOCKED]

    objects = QueueManager()

    id = models.BigAutoField(primary_key=True)
    task_name = models.CharField(_("task name"), max_length=255)
    args = TypedJSONField(_("positional arguments"), default=list)
    kwargs = TypedJSONField(_("keyword arguments"), default=dict)
    queue = models.CharField(_("queue"), max_length=255, default="default")
    priority = models.IntegerField(_("priority"), default=0, help_text=_("Higher runs first."))
    due = models.DateTimeField(_("due"), default=timezone.now)
    created = models.DateTimeField(_("created"), default=timezone.now)
    started = models.DateTimeField(_("started"), null=True, blank=True)
    finished = models.DateTimeField(_("finished"), null=True, blank=True)
    state = models.CharField(_("state"), max_length=32, choices=States.choices, default=States.QUEUED)
    result = TypedJSONField(_("result"), null=True, blank=True)
    error = models.TextField(_("error"), null=True, blank=True)
    exception_class = models.CharField(
        _("exception class"),
        max_length=255,
        null=True,
        blank=True,
        help_text=_("The dotted path of the exception class a failed run raised."),
    )
    output = models.TextField(_("output"), blank=True, default="", help_text=_("What the task printed."))
    attempt = models.IntegerField(_("attempt"), default=1, help_text=_("1 for the first execution of a call, +1 per replacement."))
    crashes = models.IntegerField(
        _("worker crashes"),
        default=0,
        help_text=_(
            "How many times a worker died while holding this call (kept by replacements). From the first, "
            "the call runs in a child process; at TOOSIMPLEQ_MAX_CRASHES it is FAILED instead of replaced."
        ),
    )
    retries = models.IntegerField(_("retries left"), default=0)
    retry_delay = models.FloatField(_("retry delay (seconds)"), default=0)
    replaced_by = models.ForeignKey(
        "self",
        verbose_name=_("replaced by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="replaces",
        db_index=False,  # toosimpleq_replaced_by_idx: only the rows that were replaced
    )
    worker = models.ForeignKey(
        "WorkerStatus",
        verbose_name=_("worker"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="executions",
    )
    #: Whether the task was ``unique`` when this call was queued: a worker that does not have the task
    #: registered (rolling deploys) still knows how to release or replace the execution.
    is_unique = models.BooleanField(_("unique"), default=False)
    # Set only while a unique task's execution waits; NULLs never collide, so the database itself
    # guarantees at most one waiting execution per identical call (toosimpleq_unique_key_uniq).
    unique_key = models.CharField(max_length=64, null=True, blank=True, editable=False)
    #: The trace context of the code that queued this call (W3C ``traceparent``/``tracestate`` as JSON),
    #: so that its execution continues the trace, in another process or on another host (see
    #: docs/monitoring.md). None without OpenTelemetry, or outside of a trace. Replacements keep it.
    trace_context = models.TextField(_("trace context"), null=True, blank=True, editable=False)
    #: For a task with a per-key limit (``@register_task(concurrency_key=...)``): the key of this call,
    #: computed from its arguments when it is queued; None otherwise. Replacements keep it.
    concurrency_key = models.CharField(_("concurrency key"), max_length=255, null=True, blank=True, editable=False)
    #: The workflow this execution is a step of (see docs/workflows.md); None for a plain task, which
    #: then never takes the workflow path of the engine.
    workflow = models.ForeignKey(
        "Workflow",
        verbose_name=_("workflow"),
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="steps",
        db_index=False,  # toosimpleq_workflow_idx: only the rows that are steps
    )
    #: A WAITING step: how many of its upstream steps have not finished yet (decremented by the engine
    #: in the transaction that records each upstream outcome; 0 queues it).
    upstream_left = models.IntegerField(_("upstream steps left"), default=0)
    #: A step whose first argument is what its upstream steps pass (read when it starts).
    receives = models.BooleanField(_("receives upstream results"), default=False)

    class Meta:
        verbose_name = _("task execution")
        verbose_name_plural = _("task executions")
        indexes = [
            StateIndex(state="QUEUED", fields=["-priority", "due", "id"], name="toosimpleq_claim_idx"),
            StateIndex(state="SLEEPING", fields=["due"], name="toosimpleq_sleeping_idx"),
            StateIndex(state="PROCESSING", fields=["worker"], name="toosimpleq_processing_idx"),
            # For the admin and monitoring: counts per state, failures and throughput over a time
            # window (index-only range scans instead of reading the whole history).
            models.Index(fields=["state", "finished"], name="toosimpleq_state_finished_idx"),
            # The admin list: newest-first order and its date hierarchy (ordered lookups on ``created``).
            models.Index(fields=["created"], name="toosimpleq_created_idx"),
            # Deleting an execution (retention) sets its replacements' link to NULL: found here.
            SetIndex(field="replaced_by", name="toosimpleq_replaced_by_idx"),
            SetIndex(field="workflow", name="toosimpleq_workflow_idx"),
        ]
        # Partial where the database has them: an execution's row versions add no entry here (see
        # docs/architecture.md, "Storage and the claim").
        constraints = [UniqueWhenSet(field="unique_key", name="toosimpleq_unique_key_uniq")]
        # Each admin action has its own permission (see docs/admin.md).
        permissions = [
            ("requeue_taskexec", _("Can requeue task executions")),
            ("cancel_taskexec", _("Can cancel waiting task executions")),
        ]

    def __str__(self) -> str:
        return f"{self.task_name} #{self.pk} [{self.state}]"

    @property
    def duration(self) -> datetime.timedelta | None:
        if self.started and self.finished:
            return self.finished - self.started
        return None

    def make_replacement(
        self, due: datetime.datetime, retries: int, retry_delay: float, crashes: int | None = None
    ) -> TaskExec:
        """An unsaved execution of the same call, to be linked from this one by ``replaced_by``."""
        now = timezone.now()
        return TaskExec(
            task_name=self.task_name,
            args=self.args,
            kwargs=self.kwargs,
            queue=self.queue,
            priority=self.priority,
            due=due,
            created=now,
            state=self.States.SLEEPING if due > now else self.States.QUEUED,
            attempt=self.attempt + 1,
            crashes=self.crashes if crashes is None else crashes,
            retries=retries,
            retry_delay=retry_delay,
            is_unique=self.is_unique,
            # A step's replacement takes its key once its links lead to it (the engine's ``replaced_step``).
            unique_key=self.call_fingerprint() if self.is_unique and self.workflow_id is None else None,
            trace_context=self.trace_context,
            concurrency_key=self.concurrency_key,
            workflow_id=self.workflow_id,
            receives=self.receives,
        )

    @classmethod
    def build(cls, db: str | None = None, encoded: dict[str, str] | None = None, **values: Any) -> TaskExec:
        """An execution with these field values (the others at their defaults), made without
        ``Model.__init__``, which costs more than inserting the row (20-35 us per instance): the queue's
        hot paths (``queue_many()``, the claim) build many. Every concrete field is set, so the instance
        is complete; Django's ``pre_init``/``post_init`` signals are not sent for them. ``db``: the
        database the row was read from (None: a new, unsaved execution). ``encoded``: the stored text
        of ``args``/``kwargs`` when the caller already has it (written as is)."""
        execution = cls.__new__(cls)
        fields = execution.__dict__
        fields.update(_defaults(values))
        state = ModelState()
        if db is not None:
            state.adding, state.db = False, db
        fields["_state"] = state
        if encoded:
            fields["_encoded"] = encoded
        return execution

    def apply(self, outcome: Any) -> None:
        """Set the fields an ``engine.outcome.Outcome`` writes on this in-memory execution."""
        for name, value in outcome.fields().items():
            setattr(self, name, value)

    def call_fingerprint(self) -> str:
        """What identifies this call among waiting executions of a ``unique`` task."""
        return serialization.call_fingerprint(self.task_name, self.args, self.kwargs)

    # -- waiting for the outcome -----------------------------------------------------------------

    def final(self) -> TaskExec | None:
        """The execution that ends this call, read afresh (following ``replaced_by`` through retries and
        rescues), if it has finished; None while it has not."""
        return self._final()[0]

    def _final(self) -> tuple[TaskExec | None, int]:
        """``final()``, and the id of the latest execution of the call (the one to wait for)."""
        objects = TaskExec.objects.using(self._state.db or queue_database())
        current = objects.get(pk=self.pk)
        for _hop in range(10_000):  # guards against a replaced_by loop edited by hand
            if current.replaced_by_id is None:
                return (current if current.state in self.States.finished() else None), current.pk
            current = objects.get(pk=current.replaced_by_id)
        return None, current.pk

    def wait(self, timeout: float | None = None) -> TaskExec:
        """Block until this call has finished and return its final execution (following retries and
        rescues: an execution that is replaced is followed to its replacement). For the last step of a
        chain, that is the end of the chain. Raises ``errors.WaitTimeout`` after ``timeout`` seconds.

        On PostgreSQL it sleeps until the engine notifies that an execution finished (within milliseconds
        of the commit), woken by the process's one listening connection (shared by every wait, see
        ``waiting``); elsewhere (or with ``TOOSIMPLEQ_LISTEN_DATABASE = None``) it polls, every 10 ms at
        first, then less and less often (up to every 0.5 s)."""
        from django.db import connections

        alias = self._state.db or queue_database()
        listen = listen_database() if connections[alias].vendor == "postgresql" else None
        connect = key = None
        if listen is not None:
            wrapper = connections[listen]
            params = {**wrapper.get_connection_params(), "application_name": "toosimpleq-wait"}
            connect = lambda: wrapper.Database.connect(**params)  # noqa: E731
            # One listener per alias and target (a test database replaces NAME, for one).
            key = (listen, *(str(wrapper.settings_dict.get(k)) for k in ("HOST", "PORT", "NAME", "USER")))
        return waiting.wait_until(self._final, timeout, connect, f"{self.task_name} #{self.pk}", key)

    async def async_wait(self, timeout: float | None = None) -> TaskExec:
        """``wait()`` for async code (an async view): the wait runs in a thread of its own, so the event
        loop keeps serving other requests meanwhile; that thread's database connections are closed after."""
        from asgiref.sync import sync_to_async
        from django.db import connections

        def wait_then_close() -> TaskExec:
            try:
                return self.wait(timeout)
            finally:
                connections.close_all()  # this thread's own: it may never run Django code again

        return await sync_to_async(wait_then_close, thread_sensitive=False)()


class Workflow(models.Model):
    """Steps queued together by ``chain()``/``group()`` (see docs/workflows.md): their executions point
    here, and ``StepLink`` rows say which step waits for which."""

    objects = QueueManager()

    id = models.BigAutoField(primary_key=True)
    name = models.CharField(_("name"), max_length=255, blank=True, default="")
    created = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        verbose_name = _("workflow")
        verbose_name_plural = _("workflows")
        permissions = [("cancel_workflow", _("Can cancel workflows"))]

    def __str__(self) -> str:
        return f"{self.name or 'workflow'} #{self.pk}"


class StepLink(models.Model):
    """``downstream`` runs after ``upstream`` has finished. ``passes`` says what it receives: ``value``
    (the upstream's result as its first argument), ``list`` (the results of all its ``list`` upstreams,
    in ``position`` order, as one list), ``none``. ``after_failure``: it runs even if the upstream
    failed for good (and then receives an ``UpstreamFailed`` in its place). When a step is replaced (a
    retry, a rescue, a requeue), the engine moves its links to the replacement."""

    class Passes(models.TextChoices):
        if TYPE_CHECKING:
            VALUE: _Member
            LIST: _Member
            NONE: _Member
        else:
            VALUE = "value", _("its result")
            LIST = "list", _("a list of results")
            NONE = "none", _("nothing")

    objects = QueueManager()

    id = models.BigAutoField(primary_key=True)
    # No database constraint and DO_NOTHING: deleting executions (retention) stays one fast DELETE; the
    # engine deletes the links of the steps it prunes.
    upstream = models.ForeignKey(
        TaskExec, on_delete=models.DO_NOTHING, db_constraint=False, related_name="downstream_links"
    )
    downstream = models.ForeignKey(
        TaskExec, on_delete=models.DO_NOTHING, db_constraint=False, related_name="upstream_links"
    )
    position = models.IntegerField(default=0)
    passes = models.CharField(max_length=8, choices=Passes.choices, default=Passes.VALUE)
    after_failure = models.BooleanField(default=False)

    class Meta:
        verbose_name = _("step link")
        verbose_name_plural = _("step links")


class ScheduleExec(models.Model):
    """The state of one schedule: the last due occurrence it handled and what it created."""

    class States(models.TextChoices):
        if TYPE_CHECKING:  # without Django's type stubs, a checker would see (value, label) tuples
            ACTIVE: _Member
            INVALID: _Member
        else:
            ACTIVE = "ACTIVE", _("Active")
            INVALID = "INVALID", _("Invalid")

    objects = QueueManager()

    id = models.BigAutoField(primary_key=True)
    name = models.CharField(_("name"), max_length=255, unique=True)
    last_due = models.DateTimeField(_("last due"), null=True, blank=True)
    last_task = models.ForeignKey(
        TaskExec, verbose_name=_("last task"), null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    state = models.CharField(_("state"), max_length=32, choices=States.choices, default=States.ACTIVE)

    class Meta:
        # The admin lists schedules through these rows (codenames keep the model's name: view_scheduleexec...).
        verbose_name = _("schedule")
        verbose_name_plural = _("schedules")
        # The admin's "run now" action (see docs/admin.md).
        permissions = [("force_run_scheduleexec", _("Can run schedules now"))]

    def __str__(self) -> str:
        return self.name


class ExecutionTotal(models.Model):
    """Monotonic totals of finished executions, per task and final state, for the metrics.

    Finished rows are counted here once they finished before ``folded_until``, the mark kept on the
    row with empty ``task_name`` and ``state``; the metrics add the rows finished since then, read
    from the ``(state, finished)`` index. Pruning deletes only rows that finished before the mark, so
    the totals never go down when old executions are deleted (see docs/monitoring.md). Written by
    the engine only (``Engine.fold_totals``).
    """

    objects = QueueManager()

    id = models.BigAutoField(primary_key=True)
    task_name = models.CharField(_("task name"), max_length=255)
    state = models.CharField(_("state"), max_length=32)
    executions = models.BigIntegerField(_("executions"), default=0)
    #: Executions that started (run time and pick-up latency observed), and the sums of both.
    started = models.BigIntegerField(_("started"), default=0)
    run_seconds = models.FloatField(_("run time (seconds, sum)"), default=0)
    wait_seconds = models.FloatField(_("pick-up latency (seconds, sum)"), default=0)
    #: Cumulative counts per bucket (``monitoring.BUCKETS``), as JSON lists of integers.
    run_buckets = models.TextField(_("run time buckets"), default="[]")
    wait_buckets = models.TextField(_("pick-up latency buckets"), default="[]")
    #: On the mark row only: every execution finished before this time is counted in the totals.
    folded_until = models.DateTimeField(_("folded until"), null=True, blank=True)

    class Meta:
        verbose_name = _("execution total")
        verbose_name_plural = _("execution totals")
        constraints = [models.UniqueConstraint(fields=["task_name", "state"], name="toosimpleq_total_unique")]

    def __str__(self) -> str:
        return f"{self.task_name or '(mark)'} {self.state}: {self.executions}"


class WorkerStatus(models.Model):
    """One row per worker process run; its state is derived from the heartbeat and the exit."""

    class States(models.TextChoices):
        if TYPE_CHECKING:  # without Django's type stubs, a checker would see (value, label) tuples
            ONLINE: _Member
            TIMEDOUT: _Member
            STOPPED: _Member
            TERMINATED: _Member
            CRASHED: _Member
        else:
            ONLINE = "ONLINE", _("Online")
            TIMEDOUT = "TIMEDOUT", _("Timed out")
            STOPPED = "STOPPED", _("Stopped")
            TERMINATED = "TERMINATED", _("Terminated")
            CRASHED = "CRASHED", _("Crashed")

    objects = QueueManager()

    id = models.BigAutoField(primary_key=True)
    label = models.CharField(_("label"), max_length=255)
    host = models.CharField(_("host"), max_length=255, blank=True, default="")
    pid = models.IntegerField(_("pid"), null=True, blank=True)
    queues = TypedJSONField(_("queues"), default=list, help_text=_("Empty means every queue."))
    excluded_queues = TypedJSONField(_("excluded queues"), default=list)
    tasks = TypedJSONField(_("registered tasks"), default=list)
    schedules = TypedJSONField(_("registered schedules"), default=list)
    timeout = models.FloatField(_("timeout (seconds)"))
    started = models.DateTimeField(_("started"), default=timezone.now)
    last_seen = models.DateTimeField(_("last heartbeat"), default=timezone.now)
    stopped = models.DateTimeField(_("stopped"), null=True, blank=True)
    exit_code = models.IntegerField(_("exit code"), null=True, blank=True)
    exit_signal = models.IntegerField(_("exit signal"), null=True, blank=True)
    exit_log = models.TextField(_("exit log"), blank=True, default="")
    receives_notifications = models.BooleanField(
        _("receives notifications"),
        default=False,
        help_text=_(
            "True while the worker's LISTEN connection proves it receives notifications (new work starts at "
            "once); False: the worker polls every tick."
        ),
    )

    class Meta:
        verbose_name = _("worker")
        verbose_name_plural = _("workers")
        indexes = [models.Index(fields=["stopped", "last_seen"], name="toosimpleq_worker_live_idx")]

    def __str__(self) -> str:
        return f"{self.label} ({self.host}:{self.pid})"

    @classmethod
    def online(cls, now: datetime.datetime | None = None, using: str | None = None) -> models.QuerySet[WorkerStatus]:
        """Workers that have not stopped and whose heartbeat is younger than their own timeout."""
        now = now or timezone.now()
        # Filter coarsely in SQL (not stopped) and exactly in Python: the timeout is per row.
        live = cls.objects.using(using).filter(stopped__isnull=True)
        return live.filter(pk__in=[w.pk for w in live if w.is_fresh(now)])

    def is_fresh(self, now: datetime.datetime | None = None) -> bool:
        now = now or timezone.now()
        return now - self.last_seen <= datetime.timedelta(seconds=self.timeout)

    @property
    def state(self) -> str:
        """ONLINE or TIMEDOUT while running; once ended, STOPPED when it quit by itself or by Ctrl-C
        (SIGINT: someone chose to stop it, as 1.x recorded it), TERMINATED by another signal (SIGTERM
        from a process manager...), CRASHED when the worker itself failed."""
        if self.stopped is None:
            return self.States.ONLINE if self.is_fresh() else self.States.TIMEDOUT
        if self.exit_signal is not None and self.exit_signal != signal.SIGINT:
            return self.States.TERMINATED
        if self.exit_code == 0:
            return self.States.STOPPED
        return self.States.CRASHED

    def serves(self, queue: str) -> bool:
        if self.queues:
            return queue in self.queues
        return queue not in (self.excluded_queues or [])


#: TaskExec's fields by attribute name: those with a constant default (or none), with a callable one.
_DEFAULTS: dict[str, Any] = {}
_CALLED_DEFAULTS: dict[str, Callable[[], Any]] = {}


def _defaults(values: dict[str, Any]) -> dict[str, Any]:
    """Every concrete field of TaskExec by attribute name: from ``values``, else its default (callables
    such as ``timezone.now``, ``list`` and ``dict`` called for each execution)."""
    if not _DEFAULTS:
        for field in TaskExec._meta.concrete_fields:
            default = field.default if field.has_default() else None
            if callable(default):
                _CALLED_DEFAULTS[field.attname] = default
            else:
                _DEFAULTS[field.attname] = default
    fields = {**_DEFAULTS, **values}
    for name, default in _CALLED_DEFAULTS.items():
        if name not in values:
            fields[name] = default()
    return fields


def describe(value: Any, limit: int = 80) -> str:
    """A short one-line preview of a stored value, for logs and lists."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class FlowScope(models.Model):
    """One row per queue or task with a limit, or per queue paused at least once (``scope``:
    ``"queue:<name>"`` or ``"task:<name>"``). Claims of limited work lock the rows of their scopes, which
    serialises them (only them); ``paused`` is read by every worker each tick (see ``engine.flow``)."""

    id = models.BigAutoField(primary_key=True)
    scope = models.CharField(_("scope"), max_length=270, unique=True)
    paused = models.BooleanField(_("paused"), default=False)
    paused_at = models.DateTimeField(_("paused at"), null=True, blank=True)

    class Meta:
        verbose_name = _("flow scope")
        verbose_name_plural = _("flow scopes")
        permissions = [("pause_queue", _("Can pause and resume queues"))]

    def __str__(self) -> str:
        return f"{self.scope}{' (paused)' if self.paused else ''}"


class FlowStart(models.Model):
    """The start time (database clock) of each execution claimed under a rate limit, kept for one
    period: a claim counts those of its scope (and key) to know how many more may start."""

    id = models.BigAutoField(primary_key=True)
    scope = models.CharField(max_length=270)
    key = models.CharField(max_length=255, default="")
    at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["scope", "key", "at"], name="toosimpleq_flowstart_idx")]
