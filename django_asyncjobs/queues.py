"""Pause and resume queues: what the ``asyncjobs`` command, the admin and a shell call.

A paused queue relays nothing new: the scheduler sends none of its jobs (the relay's SQL skips
it, so a pause costs no SQS request), and a worker that receives a message sent before the
pause puts its job back to ``scheduled`` instead of starting it. Running jobs finish. New jobs
are stored as usual and wait. The pause is a row in PostgreSQL (``QueueState``), so it survives
restarts of every process; resuming wakes the scheduler at once.

Every surface that shows a queue shows its pause, and a job that waits because of one says so:
:func:`waiting_note` is that sentence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from django.db import router

from .conf import get_settings, queue_name_error
from .exceptions import UnknownQueue
from .models import Job, QueueState
from .registry import registry
from .status import JobStatus

#: Statuses of a job that waits to be sent or started, and so waits for a paused queue.
WAITING_STATUSES = frozenset({JobStatus.SCHEDULED, JobStatus.QUEUED})


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueChange:
    """What :func:`pause` or :func:`resume` did: ``changed`` is false when the queue was
    already in that state; ``state`` is the queue's row (``None``: never paused)."""

    queue: str
    changed: bool
    state: QueueState | None


def is_known(queue: str, *, using: str | None = None) -> bool:
    """Return whether *queue* is a queue this project uses.

    Known: listed in ``ASYNCJOBS["QUEUES"]``, the ``DEFAULT_QUEUE``, the queue of a registered
    job, the queue of any job row, or paused before. A name none of these know is most likely a
    typo, which a pause would turn into a silent no-op.
    """
    conf = get_settings()
    if queue in conf.queues or queue == conf.default_queue:
        return True
    if any(definition.queue == queue for definition in registry):
        return True
    using = using or router.db_for_read(Job)
    return (
        Job.objects.using(using).filter(queue=queue).exists()
        or QueueState.objects.using(using).filter(name=queue).exists()
    )


def pause(
    queue: str, *, by: str, reason: str = "", force: bool = False, using: str | None = None
) -> QueueChange:
    """Pause *queue*: from the commit on, none of its jobs is sent to or started by a worker.

    Pausing a paused queue changes nothing (``changed`` is false and ``state`` says since when
    and by whom). Raises :class:`ValueError` for a name no queue can have, and
    :class:`~django_asyncjobs.exceptions.UnknownQueue` for a queue nobody uses (see
    :func:`is_known`) unless *force*: jobs enqueued to it later wait.

    Example::

        pause("emails", by="alice", reason="SMTP provider down")
    """
    problem = queue_name_error(queue)
    if problem:
        raise ValueError(problem)
    using = using or router.db_for_write(QueueState)
    if not force and not is_known(queue, using=using):
        raise UnknownQueue(queue)
    manager = QueueState.objects.db_manager(using)
    state = manager.pause(queue, by=by, reason=reason)
    if state is not None:
        return QueueChange(queue=queue, changed=True, state=state)
    return QueueChange(queue=queue, changed=False, state=manager.filter(name=queue).first())


def resume(queue: str, *, by: str, using: str | None = None) -> QueueChange:
    """Resume *queue*: its due jobs are sent at once (the scheduler is woken at commit).

    Resuming a queue that is not paused changes nothing (``changed`` is false). Raises
    :class:`~django_asyncjobs.exceptions.UnknownQueue` for a queue nobody uses, which is most
    likely a typo of the paused one.

    Example::

        resume("emails", by="alice")
    """
    using = using or router.db_for_write(QueueState)
    manager = QueueState.objects.db_manager(using)
    state = manager.resume(queue, by=by)
    if state is not None:
        return QueueChange(queue=queue, changed=True, state=state)
    if not is_known(queue, using=using):
        raise UnknownQueue(queue)
    return QueueChange(queue=queue, changed=False, state=manager.filter(name=queue).first())


def paused_queues(*, using: str | None = None) -> dict[str, QueueState]:
    """Return the paused queues' states by queue name."""
    return QueueState.objects.db_manager(using or router.db_for_read(QueueState)).paused()


def waiting_note(job: Job, paused: Mapping[str, QueueState]) -> str | None:
    """Return why *job* waits if its queue is paused (one of *paused*), else ``None``.

    Only a job that waits to be sent or started (scheduled or queued) waits for its queue; a
    running job finishes, paused queue or not.

    >>> import datetime as dt
    >>> state = QueueState(name="emails", paused=True, paused_by="alice",
    ...     paused_at=dt.datetime(2026, 5, 1, 9, 30, tzinfo=dt.UTC))
    >>> waiting_note(Job(queue="emails", status="scheduled"), {"emails": state})
    "waiting: queue 'emails' is paused since 2026-05-01 09:30:00 UTC by alice"
    >>> waiting_note(Job(queue="emails", status="running"), {"emails": state}) is None
    True
    """
    state = paused.get(job.queue)
    if state is None or job.status not in WAITING_STATUSES:
        return None
    return f"waiting: {state.describe()}"
