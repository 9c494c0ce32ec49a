"""What a running job can know about itself: :func:`current_job` and :func:`report_progress`.

The worker sets the context around each attempt (per thread for ``def`` jobs, per task for
``async def`` jobs); outside a worker both functions are harmless, so a plain inline call of a
job function behaves the same as before.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async

if TYPE_CHECKING:
    from .models import Job

#: A job's progress is written at most this often; the final report (done == total) always is.
PROGRESS_INTERVAL_SECONDS = 0.5


@dataclass(slots=True, kw_only=True)
class JobContext:
    """The job whose code is running in this thread or task.

    >>> from django_asyncjobs import current_job, job
    >>> @job
    ... def export(report_id: int) -> None:
    ...     ctx = current_job()
    ...     if ctx is not None and ctx.attempt > 1:
    ...         logger.info("export %s: retry %d", report_id, ctx.attempt - 1)
    """

    id: uuid.UUID
    name: str
    attempt: int  #: 1 for the first attempt
    queue: str
    worker: str
    lease_token: uuid.UUID = field(repr=False)
    _last_progress: float = field(default=float("-inf"), repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def for_job(cls, job: Job) -> JobContext:
        """Return the context of the attempt a worker just claimed (*job* holds its lease)."""
        if job.lease_token is None:
            raise ValueError(f"job {job.id} is not claimed: it has no lease")
        return cls(
            id=job.id,
            name=job.name,
            attempt=job.attempts,
            queue=job.queue,
            worker=job.worker,
            lease_token=job.lease_token,
        )


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


def report_progress(done: float, total: float | None = None, message: str = "") -> bool:
    """Store how far the running job is; return whether it was written.

    Stored as ``Job.progress = {"done", "total", "message", "at"}``, shown in the admin and the
    HTTP API. Writes are throttled to one per ``PROGRESS_INTERVAL_SECONDS`` (the last one, where
    *done* reaches *total*, always goes through) and fenced by the attempt's lease, so a worker
    that lost its job changes nothing. Outside a worker it does nothing and returns ``False``.
    From an ``async def`` job, use :func:`areport_progress`.

    >>> for i, row in enumerate(rows, 1):        # doctest: +SKIP
    ...     import_row(row)
    ...     report_progress(i, len(rows), f"row {row.pk}")
    """
    context = _current.get()
    if context is None:
        return False
    final = total is not None and done >= total
    now = time.monotonic()
    with context._lock:
        if not final and now - context._last_progress < PROGRESS_INTERVAL_SECONDS:
            return False
        context._last_progress = now
    from .models import Job

    progress: dict[str, Any] = {"done": done, "total": total, "message": str(message)}
    return Job.objects.record_progress(context.id, context.lease_token, progress)


async def areport_progress(done: float, total: float | None = None, message: str = "") -> bool:
    """The ``async def`` twin of :func:`report_progress`.

    >>> await areport_progress(3, 10, "fetched page 3")   # doctest: +SKIP
    """
    # The context variable travels with the call: sync_to_async copies the context.
    return await sync_to_async(report_progress)(done, total, message)
