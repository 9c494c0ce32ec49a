"""What a running job can know about itself: :func:`current_job`, :func:`report_progress` and
:func:`cancel_requested`.

The worker sets the context around each attempt (per thread for ``def`` jobs, per task for
``async def`` jobs); outside a worker these functions are harmless, so a plain inline call of a
job function behaves the same as before.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.db import DatabaseError, connections, router, transaction

from .exceptions import JobCancelled

if TYPE_CHECKING:
    from .models import Job

logger = logging.getLogger(__name__)

#: A job's progress is written at most this often; the final report (done == total) always is.
PROGRESS_INTERVAL_SECONDS = 0.5


class CancelRequest:
    """An operator's request to cancel one running attempt, as its worker learned it.

    Shared by the worker, which sets it (:meth:`request`, from the heartbeat thread), and the
    job's :class:`JobContext`, which reads it. Set at most once; thread-safe. Callbacks
    registered with :meth:`on_request` (the event loop's cancellation of an ``async def`` job)
    run once, in the thread that sets it, or at once if it is set already.

    >>> request = CancelRequest()
    >>> request.request("alice"), request.request("bob"), request.by
    (True, False, 'alice')
    """

    __slots__ = ("_by", "_callbacks", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by: str | None = None
        self._callbacks: list[Callable[[], object]] = []

    @property
    def requested(self) -> bool:
        """Return whether the cancel was requested."""
        return self._by is not None

    @property
    def by(self) -> str:
        """Return who requested it ("" when nobody did, or the request named nobody)."""
        return self._by or ""

    def request(self, by: str) -> bool:
        """Set the request on behalf of *by*; return whether this call set it."""
        with self._lock:
            if self._by is not None:
                return False
            self._by = by
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()
        return True

    def on_request(self, callback: Callable[[], object]) -> None:
        """Call *callback* once the request is set (now, if it is already)."""
        with self._lock:
            if self._by is None:
                self._callbacks.append(callback)
                return
        callback()


@dataclass(slots=True, kw_only=True)
class JobContext:
    """The job whose code is running in this thread or task.

    Example::

        from django_asyncjobs import current_job, job

        @job
        def export(report_id: int) -> None:
            ctx = current_job()
            if ctx is not None and ctx.attempt > 1:
                logger.info("export %s: retry %d", report_id, ctx.attempt - 1)
    """

    id: uuid.UUID
    name: str
    attempt: int  #: 1 for the first attempt
    queue: str
    worker: str
    lease_token: uuid.UUID = field(repr=False)
    #: Atomic blocks open when the attempt started (``run_jobs()`` runs inside a test's): more
    #: than that, and the job is in a transaction of its own.
    _atomic_depth: int = field(default=0, repr=False)
    _last_progress: float = field(default=float("-inf"), repr=False)
    #: The latest report made inside the job's own transaction, written once it commits.
    _pending_progress: dict[str, Any] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: Set by the worker when an operator asks to cancel this attempt.
    _cancel: CancelRequest = field(default_factory=CancelRequest, repr=False)
    #: Whether the job was told of the cancel request (a check said so, a progress report
    #: raised, its task was cancelled): then the attempt ends cancelled however it ends.
    _cancel_seen: bool = field(default=False, repr=False)

    @classmethod
    def for_job(cls, job: Job, *, cancel: CancelRequest | None = None) -> JobContext:
        """Return the context of the attempt a worker just claimed (*job* holds its lease).

        Called in the thread that runs the attempt (for ``async def`` jobs, the one that starts
        it), whose open atomic blocks are not the job's. *cancel* is the request the worker
        sets when an operator cancels the attempt.
        """
        if job.lease_token is None:
            raise ValueError(f"job {job.id} is not claimed: it has no lease")
        return cls(
            id=job.id,
            name=job.name,
            attempt=job.attempts,
            queue=job.queue,
            worker=job.worker,
            lease_token=job.lease_token,
            _atomic_depth=len(connections[_alias()].atomic_blocks),
            _cancel=cancel or CancelRequest(),
        )

    def cancel_requested(self) -> bool:
        """Return whether an operator asked to cancel this attempt (and its worker learned it).

        Once it returned ``True``, the attempt ends ``cancelled`` however the job then ends:
        returning, raising :class:`~django_asyncjobs.exceptions.JobCancelled`, or anything else.
        """
        if self._cancel.requested:
            self._cancel_seen = True
            return True
        return False

    @property
    def cancel_requested_by(self) -> str:
        """Return who asked to cancel the attempt, or "" while nobody has."""
        return self._cancel.by

    @property
    def cancel_seen(self) -> bool:
        """Return whether the job was told that its cancel was requested."""
        return self._cancel_seen

    def on_cancel_request(self, callback: Callable[[], object]) -> None:
        """Call *callback* (from the worker's thread) once a cancel of this attempt is requested;
        at once if it was already. The worker cancels an ``async def`` job's task this way."""
        self._cancel.on_request(callback)

    def mark_cancel_seen(self) -> None:
        """Record that the job was told of the request another way (its task was cancelled)."""
        self._cancel_seen = True


_current: ContextVar[JobContext | None] = ContextVar("django_asyncjobs_current_job", default=None)


def current_job() -> JobContext | None:
    """Return the :class:`JobContext` of the running job, or ``None`` outside a worker.

    >>> current_job() is None          # a plain call, a shell, a view
    True
    """
    return _current.get()


@contextlib.contextmanager
def running(context: JobContext) -> Iterator[JobContext]:
    """Make *context* the current job for the code run inside the block (used by the worker)."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def cancel_requested() -> bool:
    """Return whether an operator asked to cancel the running job; ``False`` outside a worker.

    A long ``def`` job calls it between steps and stops when it says so: by raising
    :class:`~django_asyncjobs.exceptions.JobCancelled`, or simply by returning. Either way the
    job ends ``cancelled`` (a job that was told never ends ``succeeded``), and it is not
    retried. The worker learns of a request within a fraction of a second (at the latest at the
    next heartbeat); this check reads memory only, so calling it often costs nothing.

    Example, in a job::

        for row in rows:
            if cancel_requested():
                raise JobCancelled()
            import_row(row)
    """
    context = _current.get()
    return context is not None and context.cancel_requested()


def report_progress(done: float, total: float | None = None, message: str = "") -> bool:
    """Store how far the running job is; return whether it was written.

    Stored as ``Job.progress = {"done", "total", "message", "at"}``, shown in the admin and the
    HTTP API. Writes are throttled to one per ``PROGRESS_INTERVAL_SECONDS`` (the last one, where
    *done* reaches *total*, always goes through) and fenced by the attempt's lease, so a worker
    that lost its job changes nothing. Outside a worker it does nothing and returns ``False``.
    From an ``async def`` job, use :func:`areport_progress`.

    Raises :class:`~django_asyncjobs.exceptions.JobCancelled` (before writing anything) once an
    operator asked to cancel the job: a job that reports progress stops there without a check
    of its own.

    Best effort: it never raises a database error. A write that fails (the connection dropped,
    the row is locked) is logged as a warning and returns ``False``, and the job goes on; a
    connection that died is replaced first and the write tried once more. Inside a transaction
    of the job's own, the report is written when that transaction commits (and dropped if it
    rolls back), not within it, and ``False`` is returned: written within it, it would hold
    the job row's lock until the commit, and the worker's heartbeats, which stamp that row,
    would wait as long.

    Example, in a job::

        for i, row in enumerate(rows, 1):
            import_row(row)
            report_progress(i, len(rows), f"row {row.pk}")
    """
    context = _current.get()
    if context is None:
        return False
    if context.cancel_requested():
        raise JobCancelled(by=context.cancel_requested_by)
    final = total is not None and done >= total
    now = time.monotonic()
    with context._lock:
        if not final and now - context._last_progress < PROGRESS_INTERVAL_SECONDS:
            return False
        context._last_progress = now
    progress: dict[str, Any] = {"done": done, "total": total, "message": str(message)}
    alias = _alias()
    if len(connections[alias].atomic_blocks) > context._atomic_depth:
        with context._lock:
            context._pending_progress = progress
        # One callback per report; the first to run writes the latest and the others nothing.
        transaction.on_commit(functools.partial(_write_pending, context, alias), using=alias)
        return False
    return _write(context, alias, progress)


def _alias() -> str:
    from .models import Job

    return router.db_for_write(Job)


def _write(context: JobContext, alias: str, progress: dict[str, Any]) -> bool:
    """Write *progress* now; log a failure and return ``False`` instead of raising it."""
    from .db import close_if_unusable, retry_on_lost_connection
    from .models import Job

    manager = Job.objects.db_manager(alias)

    def write() -> bool:
        return manager.record_progress(context.id, context.lease_token, progress)

    try:
        if connections[alias].in_atomic_block:
            # A test's transaction (run_jobs()): a savepoint keeps a failed write from aborting
            # it under the job's next query.
            with transaction.atomic(using=alias):
                return write()
        return retry_on_lost_connection(write, using=alias)
    except DatabaseError as exc:
        logger.warning("progress not recorded job_id=%s error=%s", context.id, exc)
        # The job's next query must not meet a dead connection: close it, a new one is opened.
        close_if_unusable(alias, after_error=True)
        return False


def _write_pending(context: JobContext, alias: str) -> None:
    with context._lock:
        progress, context._pending_progress = context._pending_progress, None
    if progress is not None:
        _write(context, alias, progress)


async def areport_progress(done: float, total: float | None = None, message: str = "") -> bool:
    """The ``async def`` twin of :func:`report_progress` (it raises
    :class:`~django_asyncjobs.exceptions.JobCancelled` too, though a cancelled ``async def``
    job is normally stopped first, by ``asyncio.CancelledError`` at its current ``await``).

    Example, in an ``async def`` job::

        await areport_progress(3, 10, "fetched page 3")
    """
    # The context variable travels with the call: sync_to_async copies the context.
    return await sync_to_async(report_progress)(done, total, message)
