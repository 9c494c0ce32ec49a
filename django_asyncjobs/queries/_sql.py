"""What the statements of every caller share: names from ``_meta``, a few SQL fragments, the
database's "now", and :class:`Ledger`, the manager base each caller's queries build on.

Table and column names come from the models' ``_meta``, never from literals. The attempt table
is reached through the job model's ``attempt_history`` relation, so this package never imports
:mod:`django_asyncjobs.models`, which imports it for the manager.

The managers here are generic in their model (:data:`JobT`), as Django's own ``Manager`` is, and
never name ``django_asyncjobs.models.Job``, not even for the type checker: the models module
imports this package for its manager, so an import back, even one under ``TYPE_CHECKING``, would
be a dependency running the wrong way. ``Job.objects`` is a ``JobManager[Job]`` to its callers.
What the Python code here reads of a row is :class:`JobRow`.

One notion of "now": PostgreSQL's ``now()``, the start of the current transaction. Every statement
here writes and compares times with it, and :class:`DatabaseNow` is the same value for ORM
queries (Django's ``Now()`` is ``statement_timestamp()`` on PostgreSQL, later inside a
transaction, so a job it calls due might not yet be due for the relay).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import uuid
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar, cast

import psycopg
from django.db import connections, models, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.postgresql.psycopg_any import register_tzloader
from django.dispatch import Signal
from psycopg.pq import Format, TransactionStatus

from .. import signals
from ..conf import get_settings
from ..fields import BoundedDateTimeField
from ..retry import AttemptRow
from ..status import JobStatus
from ..timebounds import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, clamp_sql

#: LISTEN/NOTIFY channel that wakes the scheduler when jobs are written.
NOTIFY_CHANNEL = "asyncjobs"
#: LISTEN/NOTIFY channel that tells workers an operator asked to cancel a running job (the
#: payload is the job's id); their heartbeat reads the request back from the row.
CANCEL_CHANNEL = "asyncjobs_cancel"
#: Statuses of a job that holds its unique key.
ACTIVE_STATUSES = (JobStatus.SCHEDULED.value, JobStatus.QUEUED.value, JobStatus.RUNNING.value)
#: ``ACTIVE_STATUSES`` as an SQL list; it must match the unique index's condition literally.
ACTIVE_SQL = ", ".join(f"'{status}'" for status in ACTIVE_STATUSES)
#: The relation from a job to its attempt history (``JobAttempt.job``'s ``related_name``).
ATTEMPT_RELATION = "attempt_history"
#: The model, in the job model's app, that holds each queue's pause.
QUEUE_STATE_MODEL = "QueueState"


#: The model of a manager here: ``django_asyncjobs.models.Job``.
JobT = TypeVar("JobT", bound=models.Model)


class JobRow(AttemptRow, Protocol):
    """The values of a job row that the Python code of this package reads (``Job`` has them):
    those the retry decision reads (:class:`~django_asyncjobs.retry.AttemptRow`), and these."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def name(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def args(self) -> Any: ...
    @property
    def kwargs(self) -> Any: ...
    @property
    def queue(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def timeout(self) -> float | None: ...
    @property
    def task_backend(self) -> str: ...
    @property
    def unique_key(self) -> str | None: ...
    @property
    def concurrency_key(self) -> str | None: ...
    @property
    def concurrency_limit(self) -> int | None: ...


def row(job: models.Model) -> JobRow:
    """Return *job*, a row of a manager's model, as the :class:`JobRow` it is.

    The one place where the model is taken to have the job's columns: a type checker cannot
    bound :data:`JobT` by "a Model with these columns", and every statement here names them.
    """
    return cast(JobRow, job)


class DatabaseNow(models.Func):
    """PostgreSQL's ``now()`` as an ORM expression: the time every statement here uses."""

    template = "now()"
    output_field = models.DateTimeField()


def database_now(using: str) -> dt.datetime:
    """Return the database's ``now()`` on connection *using*."""
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT now()")
        (now,) = cursor.fetchone()
    return now


def table(model: type[models.Model]) -> str:
    """Return the quoted table name of *model*, from its ``_meta``."""
    return connections[router.db_for_write(model)].ops.quote_name(model._meta.db_table)


def attempt_table(model: type[models.Model]) -> str:
    """Return the quoted table name of the attempt history of the job *model*.

    Resolved through the relation at call time, once the app registry is ready, so that no
    module-level import of the attempt model (which lives beside the job model) is needed.
    """
    related = model._meta.get_field(ATTEMPT_RELATION).related_model
    assert isinstance(related, type)
    return table(related)


def queue_state_table(model: type[models.Model]) -> str:
    """Return the quoted table name of the queue states beside the job *model* (its app's
    ``QueueState``).

    Looked up by name at call time, as :func:`attempt_table` is through its relation: a queue
    is a name, not a foreign key, so no relation leads there.
    """
    return table(model._meta.apps.get_model(model._meta.app_label, QUEUE_STATE_MODEL))


def paused_sql(model: type[models.Model], *, queue: str) -> str:
    """SQL that is true while the queue named by the SQL expression *queue* is paused.

    One primary-key probe of the small queue state table: cheap enough for every row a relay
    or a claim looks at.
    """
    return (
        f"EXISTS (SELECT 1 FROM {queue_state_table(model)} AS qs "
        f"WHERE qs.name = {queue} AND qs.paused)"
    )


def columns(model: type[models.Model], *, prefix: str = "") -> str:
    """Return the select list of every column of *model*, for raw() statements.

    ``run_at`` is clamped as :class:`~django_asyncjobs.fields.BoundedDateTimeField` clamps it
    for the ORM, so cancelling or retrying a row stored outside the range still works.
    """
    return ", ".join(
        f"{clamp_sql(f'{prefix}{f.column}')} AS {f.column}"
        if isinstance(f, BoundedDateTimeField)
        else f"{prefix}{f.column}"
        for f in model._meta.concrete_fields
    )


#: True while one of the job ids in ``{depends_on}`` has not succeeded, or has no row at all (it
#: was deleted): a missing dependency must never count as a succeeded one. Parameter:
#: ``succeeded``, the succeeded status.
UNMET_DEPENDENCY_SQL = """EXISTS (
    SELECT 1 FROM unnest({depends_on}) AS dep(id) WHERE NOT EXISTS (
        SELECT 1 FROM {table} AS d WHERE d.id = dep.id AND d.status = %(succeeded)s))"""


def wake_dependents_sql(model: type[models.Model]) -> str:
    """SQL for a select list over ``changed`` rows: NOTIFY the scheduler (parameter ``channel``)
    only when a changed job has blocked dependents, which its next pass releases or cancels.
    Finishing jobs without dependents wakes nobody."""
    return f"""(SELECT pg_notify(%(channel)s, '') WHERE EXISTS (
        SELECT 1 FROM {table(model)} AS dependent
        WHERE dependent.blocked AND dependent.depends_on @> ARRAY[changed.id]))"""


#: No delay is longer than this: from any storable time it ends past the latest one.
LONGEST_DELAY_SECONDS = (LATEST_TIMESTAMP - EARLIEST_TIMESTAMP).total_seconds()


def storable_delay_seconds(seconds: float) -> float:
    """Return *seconds* as a delay PostgreSQL can add to ``now()``: NaN and negatives are 0,
    and anything longer than the whole storable range is cut to that range.

    Multiplying an interval by 1e300 fails ("interval out of range") before a ``LEAST()``
    around the sum could cap it, so the cap is applied here as well.

    >>> storable_delay_seconds(float("inf")) == LONGEST_DELAY_SECONDS
    True
    >>> storable_delay_seconds(float("nan"))
    0.0
    """
    if not seconds > 0:  # also NaN
        return 0.0
    return min(float(seconds), LONGEST_DELAY_SECONDS)


@dataclasses.dataclass(frozen=True, slots=True)
class _RowLoader:
    """How to build model instances from the rows of one column list (see :func:`_row_loader`)."""

    #: Positions of the model's columns in a row, in ``concrete_fields`` order.
    positions: tuple[int, ...]
    #: ``Model.from_db``'s attribute names, in the same order.
    attnames: list[str]
    #: ``(position in the loaded values, field, from_db_value)`` of the fields that convert.
    converters: tuple[tuple[int, Any, Any], ...]
    #: ``(position in the row, name)`` of the columns that are no field: set as attributes, as
    #: ``raw()`` sets its annotations.
    extras: tuple[tuple[int, str], ...]

    def load(self, model: type[Any], alias: str, row: Sequence[Any], connection: Any) -> Any:
        values = [row[position] for position in self.positions]
        for index, field, convert in self.converters:
            values[index] = convert(values[index], field, connection)
        instance = model.from_db(alias, self.attnames, values)
        for position, name in self.extras:
            setattr(instance, name, row[position])
        return instance


@functools.lru_cache(maxsize=256)
def _row_loader(model: type[models.Model], names: tuple[str, ...]) -> _RowLoader:
    """The loader of rows that return *names*: every concrete column of *model*, perhaps more.

    PostgreSQL needs no backend converters (its ``DatabaseOperations`` has none), so a field's
    own ``from_db_value`` is all that ``raw()`` would apply.
    """
    where = {name: position for position, name in enumerate(names)}
    fields = model._meta.concrete_fields
    columns = [str(field.column) for field in fields]
    missing = [column for column in columns if column not in where]
    if missing:
        raise ValueError(f"a row of {model._meta.label} without {', '.join(missing)}")
    return _RowLoader(
        positions=tuple(where[column] for column in columns),
        attnames=[field.attname for field in fields],
        converters=tuple(
            (index, field, field.from_db_value)
            for index, field in enumerate(fields)
            if hasattr(field, "from_db_value")
        ),
        extras=tuple((where[name], name) for name in names if name not in columns),
    )


#: psycopg's ``prepare_threshold`` on the connections this module prepares on, where Django left
#: it ``None`` (which prepares nothing, even on request): only statements asked for explicitly.
_EXPLICIT_ONLY = 2**31 - 1
_TIMESTAMPTZ_OID = psycopg.adapters.types["timestamptz"].oid
#: psycopg connections already told to use generic plans (see :func:`_preparing_cursor`).
_GENERIC_PLANS: weakref.WeakSet[Any] = weakref.WeakSet()


class _PreparingCursor(psycopg.Cursor[Any]):
    """A server-side binding cursor that prepares each statement it runs, once per connection."""

    def execute(
        self, query: Any, params: Any = None, *, prepare: bool | None = None, binary: Any = None
    ) -> Any:
        return super().execute(query, params, prepare=True, binary=binary)


def _preparing_cursor(connection: BaseDatabaseWrapper) -> Any:
    """Return a Django cursor over a :class:`_PreparingCursor` (``PREPARED_STATEMENTS``).

    PostgreSQL then parses and plans the statement once per connection, not on every call: most
    of a claim's or an outcome's CPU in PostgreSQL (see docs/explanation/performance.md). The
    session uses generic plans: these statements take arrays of ids whose length PostgreSQL
    cannot know, prices them at ten rows, and would re-plan every call otherwise. Set once, in
    autocommit, outside any transaction, so that no rollback takes it back.
    """
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    raw = connection.connection
    with connection.wrap_database_errors:
        if raw.prepare_threshold is None:
            raw.prepare_threshold = _EXPLICIT_ONLY
        if (
            raw not in _GENERIC_PLANS
            # A project that prepares its own statements (its own prepare_threshold) keeps
            # PostgreSQL's choice of plans for them, and so for ours.
            and raw.prepare_threshold == _EXPLICIT_ONLY
            and raw.autocommit
            and raw.info.transaction_status == TransactionStatus.IDLE
        ):
            raw.execute("SET plan_cache_mode = force_generic_plan")
            _GENERIC_PLANS.add(raw)
        cursor = _PreparingCursor(raw)
        # As Django's own cursors: times in the current time zone, should it differ from the
        # one the connection was opened with (override_settings(TIME_ZONE=...)).
        timezone = connection.timezone
        loader = raw.adapters.get_loader(_TIMESTAMPTZ_OID, Format.TEXT)
        if timezone != getattr(loader, "timezone", timezone):
            register_tzloader(timezone, cursor)
        return connection._prepare_cursor(cursor)  # type: ignore[attr-defined]


class Ledger(models.Manager[JobT]):
    """The base of every caller's queries: the database alias and raw statements on it."""

    @property
    def _db_alias(self) -> str:
        return self._db or router.db_for_write(self.model)

    def _cursor(self, *, prepared: bool) -> Any:
        """A cursor on this manager's database; a preparing one for a hot statement (*prepared*)
        when ``PREPARED_STATEMENTS`` is on."""
        connection = connections[self._db_alias]
        # While Django records queries (DEBUG, debug toolbars, assertNumQueries) it needs each
        # statement's text, which psycopg keeps only for statements it did not prepare.
        if prepared and get_settings().prepared_statements and not connection.queries_logged:
            return _preparing_cursor(connection)
        return connection.cursor()

    def _execute(
        self, sql: str, params: Mapping[str, Any], *, prepared: bool = False
    ) -> tuple[int, list[tuple[Any, ...]]]:
        """Run *sql* on this manager's database; return its rowcount and rows (none: ``[]``).

        *prepared*: a statement on the hot path of every job, prepared once per connection when
        ``PREPARED_STATEMENTS`` is on.
        """
        with self._cursor(prepared=prepared) as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall() if cursor.description else []
            return int(cursor.rowcount), rows

    def database_now(self) -> dt.datetime:
        """Return the database's ``now()``: the time the statements of this manager use."""
        return database_now(self._db_alias)

    def _returning(self, sql: str, params: Mapping[str, Any]) -> JobT | None:
        """Run a statement ending in ``RETURNING <all columns>`` and return the row."""
        rows = self._returning_many(sql, params)
        return rows[0] if rows else None

    def _returning_many(
        self, sql: str, params: Mapping[str, Any], *, prepared: bool = False
    ) -> list[JobT]:
        """Run a statement ending in ``RETURNING <all columns>`` and return the rows.

        What ``Model.objects.raw()`` does for such a statement, without its per-call work
        (column lookups, init order, converter lists), which was a fifth of a worker's CPU per
        job: the loader for a column list is built once (:func:`_row_loader`). *prepared* as for
        :meth:`_execute`.
        """
        alias = self._db_alias
        connection = connections[alias]
        with self._cursor(prepared=prepared) as cursor:
            cursor.execute(sql, params)
            names = tuple(column.name for column in cursor.description)
            rows = cursor.fetchall()
        loader = _row_loader(self.model, names)
        return [loader.load(self.model, alias, row, connection) for row in rows]

    def _announce(self, job: JobT, *, old_status: str | None, signal: Signal | None = None) -> None:
        """Send *signal* and ``job_status_changed`` for *job* once the transaction commits."""
        signals.send_after_commit(
            row(job), old_status=old_status, signal=signal, using=self._db_alias
        )
