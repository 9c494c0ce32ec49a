"""Run enqueued jobs inside your own tests: :func:`run_jobs`.

A test calls code that enqueues jobs (``my_job.delay(...)``), then :func:`run_jobs` runs every due
job in the calling thread, on the caller's database connection: no SQS, no scheduler or worker
process. It therefore works inside the transaction that pytest-django's ``db`` fixture and
Django's ``TestCase`` wrap each test in, where no other connection can see the rows.

Each job goes through the transitions of production, with the same queries the scheduler and
the worker use: relayed (``scheduled`` -> ``queued``, a dispatch token), claimed (``running``,
an attempt opened, a lease), run with its :class:`~django_asyncjobs.context.JobContext`, then
recorded (``succeeded``, or a retry per the job's backoff, or ``failed``), so rows, attempt
history, results, errors and tracebacks read as they would after a real worker.

Signals are sent on commit, as in production. Inside a test transaction nothing commits, so
their receivers run only where the test captures commit callbacks:
``with self.captureOnCommitCallbacks(execute=True):`` in a ``TestCase``, or pytest-django's
``django_capture_on_commit_callbacks(execute=True)``.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import fnmatch
import functools
import logging
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg
from asgiref.sync import async_to_sync
from django.db import DatabaseError, connections, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Exists, OuterRef

from . import execution, retry
from .conf import get_settings
from .context import JobContext
from .exceptions import AsyncJobsError, JobNotRegistered
from .models import Job, QueueState
from .queries import ClaimOutcome, DatabaseNow, DueJob, JobQuerySet
from .registry import JobDefinition, registry
from .status import JobStatus

__all__ = ["WORKER_ID", "JobFailed", "TooManyJobs", "run_jobs"]

logger = logging.getLogger(__name__)

#: The ``worker`` recorded on the rows (and in ``current_job().worker``) of jobs run here.
WORKER_ID = "run_jobs"

JobSelector = str | JobDefinition[Any, Any] | type


class TooManyJobs(AsyncJobsError):
    """:func:`run_jobs` ran ``max_jobs`` jobs and more were still due."""


class JobFailed(AsyncJobsError):
    """A job failed under ``run_jobs(raise_errors=True)`` without an exception of its own.

    Raised when the failure did not come from the job's code, e.g. a result that is not JSON;
    ``job`` is the row as recorded.
    """

    def __init__(self, job: Job) -> None:
        self.job = job
        super().__init__(
            f"job {job.name} ({job.id}) failed on attempt {job.total_attempts}: {job.error}"
        )


def run_jobs(
    *,
    names: Iterable[JobSelector] | None = None,
    queues: Sequence[str] | None = None,
    include_delayed: bool = False,
    max_jobs: int = 1000,
    raise_errors: bool = False,
    using: str | None = None,
) -> list[Job]:
    """Run every due job here and now, until none is due; return the rows it ran, in order.

    Loops until nothing is due: jobs enqueued by the jobs it ran, and jobs whose dependencies
    it completed, run in the same call; dependents of a job that failed are cancelled (and not
    returned). The order is the worker's: queue by queue as ``ASYNCJOBS["QUEUES"]`` lists them
    (or as *queues* does), higher ``priority`` first, then earlier ``run_at``. The list holds
    one row per attempt, as stored after it: ``succeeded``, ``failed``, or ``scheduled`` for a
    retry. A job whose name is not registered is failed at once, with the error a worker
    records (a worker hands its message back a few times first).

    - *names*: only jobs with these names (names, ``@job`` functions or classes).
    - *queues*: only these queues, highest priority first; glob patterns as in ``runworker``.
    - *include_delayed*: also run jobs whose ``run_at`` is in the future, retries included, as
      if due now (their ``run_at`` is set to now): a job with retries left is then run until it
      succeeds or fails for good. Otherwise a failed attempt is rescheduled per the job's
      backoff, as in production, and not run again by this call.
    - *max_jobs*: raise :class:`TooManyJobs` rather than start one more job after this many,
      which stops a job that enqueues itself forever.
    - *raise_errors*: after recording the first failed attempt, raise the job's exception
      (with a note naming the job), or :class:`JobFailed` / :class:`JobNotRegistered` when the
      failure was not an exception of the job's code.
    - *using*: the database alias, by default the router's choice for ``Job``.

    Inside a transaction PostgreSQL's ``now()`` stands still at the transaction's start, so a
    job delayed even by a second is not due until *include_delayed* says so. Signals are sent
    on commit, as in production: in a test's transaction only under
    ``captureOnCommitCallbacks(execute=True)`` (pytest-django:
    ``django_capture_on_commit_callbacks``). Unlike a worker, it does not enforce timeouts: a
    job runs to its end. Cron occurrences are not enqueued (call ``my_job.delay()`` instead).
    Jobs of a paused queue are not run, as the scheduler does not send them.

    If a job leaves the test's transaction broken (a database error it did not contain in
    ``atomic()``), its writes are rolled back to a savepoint and the failure recorded, so the
    test can go on. A ``KeyboardInterrupt`` from a job stops the run and hands the job back as a
    stopping worker does (``at_most_once`` jobs fail).

    Example::

        def test_signup_sends_welcome_mail(db, mailoutbox):
            signup("ada@example.com")          # calls send_welcome.delay(...)
            ran = run_jobs()
            assert [j.status for j in ran] == ["succeeded"]
            assert len(mailoutbox) == 1
    """
    if isinstance(max_jobs, bool) or not isinstance(max_jobs, int) or max_jobs < 1:
        raise ValueError(f"max_jobs must be an int of 1 or more, not {max_jobs!r}")
    if isinstance(queues, str):
        raise TypeError(f"queues must be a list of queue names, not the string {queues!r}")
    return _Run(
        names=_job_names(names),
        queue_specs=list(queues) if queues is not None else None,
        include_delayed=include_delayed,
        max_jobs=max_jobs,
        raise_errors=raise_errors,
        using=using or router.db_for_write(Job),
    ).run()


def _job_names(selectors: Iterable[JobSelector] | None) -> frozenset[str] | None:
    if selectors is None:
        return None
    if isinstance(selectors, str):
        raise TypeError(f"names must be a list of job names, not the string {selectors!r}")
    names = set()
    for selector in selectors:
        definition = getattr(selector, "job_definition", selector)  # a class-based job
        if isinstance(definition, JobDefinition):
            names.add(definition.name)
        elif isinstance(definition, str):
            if definition not in registry:
                raise ValueError(f"names: no job named {definition!r} is registered")
            names.add(definition)
        else:
            raise TypeError(f"names takes job names, @job functions or classes, not {selector!r}")
    return frozenset(names)


class _Run:
    """One call of :func:`run_jobs`: its options and the attempts it made."""

    def __init__(
        self,
        *,
        names: frozenset[str] | None,
        queue_specs: list[str] | None,
        include_delayed: bool,
        max_jobs: int,
        raise_errors: bool,
        using: str,
    ) -> None:
        self.names = names
        self.queue_specs = queue_specs
        self.include_delayed = include_delayed
        self.max_jobs = max_jobs
        self.raise_errors = raise_errors
        self.using = using
        self.manager = Job.objects.db_manager(using)
        self.ran: list[Job] = []
        #: Jobs whose attempt here failed with retries left. Inside a transaction ``now()`` stands
        #: still, so their retry is never due; outside one it may become due while we run, and
        #: must not be run again all the same, or the outcome would depend on timing.
        self.retrying: set[uuid.UUID] = set()

    def run(self) -> list[Job]:
        while True:
            # What the scheduler does before each relay: unblock dependents of succeeded jobs,
            # cancel those of failed or cancelled ones.
            self.manager.release_ready()
            self.manager.cancel_orphans()
            if self.include_delayed:
                self._make_delayed_due()
            queue = self._next_queue()
            if queue is None:
                return self.ran
            if len(self.ran) >= self.max_jobs:
                raise TooManyJobs(self._too_many(queue))
            self._run_one(self._relay(queue))

    def _make_delayed_due(self) -> None:
        # Not a status change (the job stays scheduled), so not one of the manager's
        # transitions; relay_due then takes these jobs like any due one.
        delayed = self.manager.get_queryset().filter(
            status=JobStatus.SCHEDULED, blocked=False, run_at__gt=DatabaseNow()
        )
        self._in_scope(delayed).update(run_at=DatabaseNow())

    # -- choosing ---------------------------------------------------------------------------------

    def _rank(self, queue: str) -> tuple[int, str] | None:
        """Return where *queue* comes in the worker's order, or ``None`` if not run here."""
        if self.queue_specs is not None:
            for index, spec in enumerate(self.queue_specs):
                if fnmatch.fnmatchcase(queue, spec):
                    return index, queue
            return None
        order = get_settings().queues
        return (order.index(queue) if queue in order else len(order)), queue

    def _in_scope(self, jobs: JobQuerySet) -> JobQuerySet:
        if self.names is not None:
            jobs = jobs.filter(name__in=self.names)
        if self.queue_specs is not None:
            present = jobs.order_by().values_list("queue", flat=True).distinct()
            jobs = jobs.filter(queue__in=[q for q in present if self._rank(q) is not None])
        return jobs

    def _due(self) -> JobQuerySet:
        # A paused queue's jobs wait, as they do for the scheduler (whose relay skips them).
        paused = QueueState.objects.filter(name=OuterRef("queue"), paused=True)
        return self.manager.get_queryset().filter(
            ~Exists(paused), status=JobStatus.SCHEDULED, blocked=False, run_at__lte=DatabaseNow()
        )

    def _candidates(self) -> JobQuerySet:
        jobs = self._in_scope(self._due())
        if self.retrying and not self.include_delayed:
            jobs = jobs.exclude(id__in=self.retrying)
        return jobs

    def _wanted(self, due: DueJob) -> bool:
        if self.names is not None and due.name not in self.names:
            return False
        return self.include_delayed or due.id not in self.retrying

    def _next_queue(self) -> str | None:
        present = self._candidates().order_by().values_list("queue", flat=True).distinct()
        ranked = [(rank, q) for q in present if (rank := self._rank(q)) is not None]
        return min(ranked)[1] if ranked else None

    def _relay(self, queue: str) -> DueJob:
        """Relay the next wanted job of *queue* exactly as the scheduler would, minus SQS."""
        chosen: list[DueJob] = []

        def send(due: list[DueJob]) -> set[uuid.UUID]:
            # ``due`` comes highest priority first. Refused jobs are put back to scheduled by
            # relay_due, untouched: how the scheduler treats jobs SQS did not take.
            for candidate in due:
                if not chosen and self._wanted(candidate):
                    chosen.append(candidate)
            return {d.id for d in due if d not in chosen}

        filtered = self.names is not None or (bool(self.retrying) and not self.include_delayed)
        # relay_due takes the queue's jobs in order; when some are not wanted, take them all so
        # that the first wanted one is among them.
        limit = self._due().filter(queue=queue).count() if filtered else 1
        self.manager.relay_due(queue=queue, limit=max(1, limit), send=send)
        if not chosen:
            raise AsyncJobsError(
                f"run_jobs() found due jobs in queue {queue!r} but could not take one: another "
                "transaction holds them (is a scheduler running against this database?)"
            )
        return chosen[0]

    def _too_many(self, queue: str) -> str:
        most = ", ".join(
            f"{name} x{count}"
            for name, count in collections.Counter(j.name for j in self.ran).most_common(3)
        )
        return (
            f"run_jobs() ran max_jobs={self.max_jobs} jobs and jobs are still due in queue "
            f"{queue!r} (most run: {most}). Does a job enqueue itself forever? If the test "
            "needs more, pass a larger max_jobs."
        )

    # -- running ----------------------------------------------------------------------------------

    def _run_one(self, due: DueJob) -> None:
        claim = self.manager.claim(
            job_id=due.id,
            dispatch_token=due.dispatch_token,
            worker=WORKER_ID,
            registered_names=registry.names(),
            lock_timeout_seconds=get_settings().claim_lock_timeout_seconds,
        )
        if claim.outcome is ClaimOutcome.NOT_REGISTERED:
            self._fail_unregistered(due, claim.reason)
        elif claim.outcome is ClaimOutcome.CLAIMED:
            assert claim.job is not None
            self._attempt(claim.job)
        else:
            raise AsyncJobsError(f"run_jobs() could not claim job {due.id}: {claim.reason}")

    def _fail_unregistered(self, due: DueJob, reason: str) -> None:
        error = (
            f"{reason} ({WORKER_ID}); is its module a jobs.py of an installed app, or imported "
            "at start-up?"
        )
        stored = self.manager.fail_unregistered(
            job_id=due.id, dispatch_token=due.dispatch_token, error=error
        )
        assert stored is not None  # we hold the row and its token since the relay
        logger.error("job failed id=%s error=%s", due.id, error)
        self.ran.append(stored)
        if self.raise_errors:
            raise JobNotRegistered(error)

    def _attempt(self, job: Job) -> None:
        definition = registry.get(job.name)
        assert job.lease_token is not None
        caught: list[BaseException] = []
        logger.info("job started name=%s id=%s attempt=%d", job.name, job.id, job.total_attempts)
        try:
            with _contained(connections[self.using]):
                outcome = self._execute(_capturing(definition, caught), job)
            if caught and isinstance(caught[0], KeyboardInterrupt):
                raise caught[0]
        except BaseException:
            self._hand_back(job)
            raise
        stored = self._record(job, definition, outcome)
        self.ran.append(stored)
        if stored.status == JobStatus.SCHEDULED:
            self.retrying.add(job.id)
        if not outcome.ok and self.raise_errors:
            if not caught:
                raise JobFailed(stored)
            error = caught[0]
            error.add_note(
                f"raised by job {job.name} ({job.id}), attempt {job.total_attempts}, in "
                f"run_jobs(raise_errors=True); the job is now {stored.status}"
            )
            raise error

    @staticmethod
    def _execute(definition: JobDefinition[Any, Any], job: Job) -> execution.Outcome:
        context = JobContext.for_job(job)
        if definition.is_async:
            # async_to_sync runs the event loop in another thread but serves the job's
            # thread-sensitive sync_to_async calls (the ORM's included) on this thread, so they
            # use this connection and see the test's transaction. No timeout: see run_jobs.
            return async_to_sync(execution.run_async)(
                definition, job.args, job.kwargs, timeout_seconds=None, context=context
            )
        return execution.run_sync(definition, job.args, job.kwargs, context=context)

    def _record(
        self, job: Job, definition: JobDefinition[Any, Any], outcome: execution.Outcome
    ) -> Job:
        """Record *outcome* with the worker's queries and retry policy; return the stored row."""
        assert job.lease_token is not None
        if outcome.ok:
            stored = self.manager.record_success(
                job_id=job.id, lease_token=job.lease_token, result=outcome.result
            )
        else:
            stored = self.manager.end_attempt(
                job=job,
                lease_token=job.lease_token,
                decide=functools.partial(
                    retry.decide, ending=retry.Ending.FAILED, backoff=definition.resolve_backoff()
                ),
                error=outcome.error,
                traceback=outcome.traceback,
            )
        if stored is None:
            # Only a job that changed its own row can get here; show the row as it is.
            logger.warning("lease lost; outcome discarded name=%s id=%s", job.name, job.id)
            return self.manager.get(pk=job.id)
        log = logger.info if outcome.ok else logger.warning
        log(
            "job %s name=%s id=%s attempt=%d%s",
            stored.status,
            job.name,
            job.id,
            job.total_attempts,
            "" if outcome.ok else f" error={outcome.error}",
        )
        return stored

    def _hand_back(self, job: Job) -> None:
        """Give back a job whose run was cut short, as a worker does when it is stopped."""
        assert job.lease_token is not None
        try:
            self.manager.end_attempt(
                job=job,
                lease_token=job.lease_token,
                decide=functools.partial(retry.decide, ending=retry.Ending.INTERRUPTED),
                error=f"interrupted: run_jobs() was stopped during attempt {job.total_attempts}",
            )
        except DatabaseError as exc:
            # The exception on its way out matters more; the row stays running.
            logger.error("cannot hand back id=%s error=%s", job.id, exc)


def _capturing(
    definition: JobDefinition[Any, Any], caught: list[BaseException]
) -> JobDefinition[Any, Any]:
    """Return a copy of *definition* that keeps the exception its code raises in *caught*.

    The execution module turns a job's exception into text (an Outcome), as the worker needs;
    ``raise_errors`` wants the exception object, so that pytest shows the job's own frames and
    ``pytest.raises`` can match it. The registry's definition is not touched.
    """

    def invoke(*args: Any, **kwargs: Any) -> Any:
        if definition.is_class:
            return definition.target(*args, **kwargs).handle()
        return definition.target(*args, **kwargs)

    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return invoke(*args, **kwargs)
        except BaseException as exc:
            caught.append(exc)
            raise

    async def acall(*args: Any, **kwargs: Any) -> Any:
        try:
            return await invoke(*args, **kwargs)
        except BaseException as exc:
            caught.append(exc)
            raise

    shim = copy.copy(definition)
    shim.is_class = False
    shim.target = acall if definition.is_async else call
    return shim


@contextlib.contextmanager
def _contained(connection: BaseDatabaseWrapper) -> Iterator[None]:
    """Inside a transaction, run the block in a savepoint, rolled back if it broke the
    transaction.

    In production a job runs in autocommit, where a failed statement spoils nothing. Inside a
    test's transaction it would abort the whole transaction, and recording the failure, and the
    rest of the test, would fail with "current transaction is aborted". A bare savepoint, not
    ``atomic()``: the job's own ``atomic(durable=True)`` must still work in a TestCase.
    """
    if not connection.in_atomic_block:
        yield
        return
    savepoint = transaction.savepoint(using=connection.alias)
    try:
        yield
    finally:
        if connection.needs_rollback or _aborted(connection):
            # Clear the flag first: Django refuses every statement while it is set, the
            # rollback to the savepoint included.
            transaction.set_rollback(False, using=connection.alias)
            transaction.savepoint_rollback(savepoint, using=connection.alias)
        else:
            transaction.savepoint_commit(savepoint, using=connection.alias)


def _aborted(connection: BaseDatabaseWrapper) -> bool:
    info = getattr(connection.connection, "info", None)  # psycopg 3's ConnectionInfo
    return info is not None and info.transaction_status == psycopg.pq.TransactionStatus.INERROR
