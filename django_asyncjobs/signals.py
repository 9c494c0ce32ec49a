"""Signals sent on every status change of a job.

Each is sent after the transaction that made the change commits, with ``sender=Job`` and the
``job`` as it is after the change. A receiver that raises is logged with the job id and never
breaks the worker, the scheduler or the code that enqueued the job::

    from django.dispatch import receiver
    from django_asyncjobs.signals import job_failed

    @receiver(job_failed)
    def page_someone(sender, job, **kwargs):
        alert(f"{job.name} failed: {job.error}")
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from django.db import transaction
from django.dispatch import Signal

logger = logging.getLogger(__name__)

#: A job row was created (``job``).
job_enqueued = Signal()
#: A worker claimed the job and is about to run it (``job``).
job_started = Signal()
#: The job returned; ``job.result`` holds the value (``job``).
job_succeeded = Signal()
#: The job failed for good: no retries left (``job``).
job_failed = Signal()
#: The attempt failed and the job is scheduled again at ``job.run_at`` (``job``).
job_retrying = Signal()
#: The job was cancelled (``job``): before it ran, or, when an operator cancelled a running job,
#: once its attempt ended (``job.cancel_requested_by`` says who asked).
job_cancelled = Signal()
#: Any status change (``job``, ``old_status`` -- ``None`` for a new job --, ``new_status``).
job_status_changed = Signal()


class SentJob(Protocol):
    """What sending reads of a job (a ``Job`` row); receivers get the row itself.

    A protocol, not the model: the manager that sends these imports this module, and the model
    module imports the manager.
    """

    @property
    def id(self) -> Any: ...
    @property
    def name(self) -> str: ...
    @property
    def status(self) -> str: ...


def has_listeners(*signals: Signal, sender: type[Any]) -> bool:
    """Return whether ``job_status_changed`` or any of *signals* has a receiver for *sender* (the
    job model, ``Job.objects.model``), so callers can skip building payloads.

    The sender is passed in, not imported: see :class:`SentJob`.
    """
    return job_status_changed.has_listeners(sender) or any(s.has_listeners(sender) for s in signals)


def send_after_commit(
    job: SentJob,
    *,
    old_status: str | None,
    signal: Signal | None = None,
    using: str | None = None,
) -> None:
    """Send *signal* and ``job_status_changed`` for *job* once the current transaction commits.

    Outside a transaction they are sent at once. Receiver errors are logged, never raised.
    """
    if not has_listeners(*([signal] if signal else []), sender=type(job)):
        return
    new_status = job.status

    def send() -> None:
        if signal is not None:
            _send(signal, job)
        _send(job_status_changed, job, old_status=old_status, new_status=new_status)

    transaction.on_commit(send, using=using)


def send_many_after_commit(
    jobs: Sequence[SentJob],
    *,
    old_status: str | None,
    signal: Signal | None = None,
    using: str | None = None,
) -> None:
    """:func:`send_after_commit` for many jobs: one check for receivers, one commit hook.

    What a bulk enqueue of 100,000 jobs needs instead of 100,000 of each.
    """
    if not jobs or not has_listeners(*([signal] if signal else []), sender=type(jobs[0])):
        return

    def send() -> None:
        for job in jobs:
            if signal is not None:
                _send(signal, job)
            _send(job_status_changed, job, old_status=old_status, new_status=job.status)

    transaction.on_commit(send, using=using)


def _send(signal: Signal, job: SentJob, **extra: Any) -> None:
    for receiver, response in signal.send_robust(sender=type(job), job=job, **extra):
        if isinstance(response, Exception):
            logger.error(
                "signal receiver failed receiver=%r job_id=%s job_name=%s",
                receiver,
                job.id,
                job.name,
                exc_info=response,
            )
