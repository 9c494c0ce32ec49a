"""A production backend for Django's Tasks API (``django.tasks``, or the ``django-tasks`` backport).

::

    TASKS = {
        "default": {
            "BACKEND": "django_asyncjobs.tasks_backend.AsyncJobsBackend",
            "QUEUES": ["default", "high"],
            "OPTIONS": {"max_retries": 3, "timeout": 60},      # defaults for every task
        }
    }

    from django.tasks import task

    @task(priority=10, max_retries=5, timeout=30)      # extra options: Django 6.1+ / backport
    def send_welcome(user_id: int) -> None: ...

    result = send_welcome.enqueue(42)      # the same Job row that delay() writes
    result.refresh(); result.status        # READY, RUNNING, SUCCESSFUL or FAILED

Each ``@task`` is registered as a job named by its module path when its module is imported (the
app autodiscovers ``tasks.py`` modules when this backend is configured), so a worker runs only
``Task`` objects it knows; it never imports a path read from a row.
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
import functools
import inspect
import logging
import re
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.db import router, transaction
from django.dispatch import Signal
from django.utils import timezone

from . import exceptions, signals
from .conf import queue_name_error
from .context import current_job
from .enqueue import BoundJob
from .models import AttemptOutcome, Job, JobAttempt
from .registry import JobDefinition, job, registry
from .retry import Backoff
from .status import JobStatus
from .tasks_compat import (
    BaseTaskBackend,
    InvalidTask,
    Task,
    TaskContext,
    TaskError,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_enqueued,
    task_finished,
    task_started,
)
from .timebounds import timestamp_error

_STATUS = {
    JobStatus.SCHEDULED: TaskResultStatus.READY,
    JobStatus.QUEUED: TaskResultStatus.READY,
    JobStatus.RUNNING: TaskResultStatus.RUNNING,
    JobStatus.SUCCEEDED: TaskResultStatus.SUCCESSFUL,
    JobStatus.FAILED: TaskResultStatus.FAILED,
    # Django has no "cancelled": the task will not run (again), it "was unable to start" or was
    # stopped by an operator.
    JobStatus.CANCELLED: TaskResultStatus.FAILED,
}
#: Attempt outcomes that are errors of the task (an interrupted attempt was handed back).
_ERROR_OUTCOMES = {
    AttemptOutcome.FAILED,
    AttemptOutcome.TIMED_OUT,
    AttemptOutcome.LOST,
    AttemptOutcome.CANCELLED,
}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class AsyncJobsTask(Task):
    """Django's ``Task`` with the job options of ``@job``; the backend's ``task_class``.

    On Django 6.1+ and the backport, ``@task(...)`` passes these through; on Django 6.0 set
    project-wide defaults in the backend's ``OPTIONS`` instead.

    Example::

        @task(max_retries=5, timeout=30, unique=True)
        def sync_account(account_id: int) -> None: ...

        @task(concurrency=1, concurrency_key=lambda account_id: str(account_id), rate_limit="10/s")
        def charge(account_id: int) -> None: ...
    """

    max_retries: int | None = None
    timeout: float | dt.timedelta | None = None
    backoff: Backoff | None = None
    unique: bool = False
    at_most_once: bool = False
    #: At most this many runs at once, fleet wide (per key with *concurrency_key*).
    concurrency: int | None = None
    #: A callable given the task's arguments that returns the key the limit counts by.
    concurrency_key: Callable[..., str] | None = None
    #: At most this many starts per period, fleet wide: "10/s", "100/m", "1000/h".
    rate_limit: str | None = None

    def __post_init__(self) -> None:
        # Zero-argument super() does not work in a slots dataclass.
        Task.__post_init__(self)
        _register(self)


class AsyncJobsBackend(BaseTaskBackend):
    """Django Tasks stored as django-asyncjobs jobs: PostgreSQL rows relayed through SQS.

    ``OPTIONS`` may hold defaults for tasks that do not set them: ``max_retries`` (else 0: a
    failing task is failed, as with Django's own backends), ``timeout`` (seconds) and
    ``backoff`` (a :class:`~django_asyncjobs.Backoff`).

    Example::

        result = send_welcome.enqueue(42)
        default_task_backend.get_result(result.id).status   # TaskResultStatus.READY, once run
    """

    task_class = AsyncJobsTask
    #: The OPTIONS this backend reads: defaults for tasks that do not set them.
    OPTION_NAMES = frozenset({"max_retries", "timeout", "backoff"})
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        unknown = set(self.options) - self.OPTION_NAMES
        if unknown:
            raise ImproperlyConfigured(
                f"TASKS[{alias!r}]['OPTIONS'] has unknown keys {sorted(unknown)}; "
                f"this backend reads {sorted(self.OPTION_NAMES)}"
            )

    def validate_task(self, task: Task) -> None:
        """Django's own checks (and messages), then the queue name's fitness for SQS and a
        ``run_after`` a job row can hold (see :mod:`~django_asyncjobs.timebounds`).

        Example::

            send_welcome.using(run_after=datetime.datetime.max.replace(tzinfo=datetime.UTC))
            # InvalidTask: run_after=9999-12-31T23:59:59.999999+00:00 is outside the supported ...
        """
        super().validate_task(task)
        problem = queue_name_error(task.queue_name)
        if problem:
            raise InvalidTask(problem)
        if isinstance(task.run_after, dt.datetime):  # Django has checked that it is aware
            problem = timestamp_error(task.run_after, field="run_after")
            if problem:
                raise InvalidTask(problem)

    def enqueue(self, task: Task, args: Sequence[Any], kwargs: dict[str, Any]) -> TaskResult:
        """Store the task as a job in the current transaction; no SQS call.

        Raises ``InvalidTask`` for an invalid task (a ``run_after`` outside the range a job row
        can hold included), :class:`TypeError` / :class:`ValueError` for arguments that do not
        fit the function or JSON (nothing is stored then).
        """
        self.validate_task(task)
        definition = _register(task)
        bound = definition.using(
            run_after=task.run_after, priority=task.priority, queue=task.queue_name
        )
        # The row names this backend's alias, so that get_result() rebuilds the task with it.
        bound = BoundJob(definition, dataclasses.replace(bound.options, task_backend=self.alias))
        job = bound.delay(*args, **kwargs)
        result = self._result(job, [], task=task)
        transaction.on_commit(
            lambda: _send(task_enqueued, self, result), using=router.db_for_write(Job)
        )
        return result

    def get_result(self, result_id: str) -> TaskResult:
        """Return the task's result read from its job row and attempts.

        Raises ``TaskResultDoesNotExist`` for an unknown id, or a job that is not a task.
        """
        try:
            job_id = uuid.UUID(str(result_id))
        except ValueError:
            raise TaskResultDoesNotExist(result_id) from None
        job = Job.objects.filter(pk=job_id).first()
        if job is None or job.name not in _tasks:
            raise TaskResultDoesNotExist(result_id)
        attempts = list(JobAttempt.objects.filter(job_id=job.id).order_by("started_at", "id"))
        return self._result(job, attempts)

    def _result(self, job: Job, attempts: list[JobAttempt], task: Task | None = None) -> TaskResult:
        if task is None:
            task = _stored_task(job)
        result: TaskResult = TaskResult(
            task=task,
            id=str(job.id),
            status=_STATUS[JobStatus(job.status)],
            enqueued_at=job.created_at,
            started_at=attempts[0].started_at if attempts else None,
            finished_at=job.finished_at if job.is_final else None,
            last_attempted_at=attempts[-1].started_at if attempts else None,
            args=job.args,
            kwargs=job.kwargs,
            backend=task.backend,
            errors=[
                TaskError(
                    exception_class_path=exception_class_path(a.traceback, a.error),
                    traceback=a.traceback or a.error,
                )
                for a in attempts
                if a.outcome in _ERROR_OUTCOMES
            ],
            worker_ids=[a.worker for a in attempts],
        )
        if job.status == JobStatus.SUCCEEDED:
            object.__setattr__(result, "_return_value", job.result)
        return result


def exception_class_path(traceback: str, error: str) -> str:
    """Return the dotted path of the exception a stored traceback (or error text) reports.

    Python prints the exception after the last frame, as ``module.Class: message`` (bare
    ``Class`` for builtins); messages can span lines and notes follow, so the first line after
    the frames is the one to read.

    >>> exception_class_path("Traceback ...\\nValueError: bad", "ValueError: bad")
    'builtins.ValueError'
    >>> exception_class_path("", "WorkerLost: no heartbeat")
    'django_asyncjobs.exceptions.WorkerLost'
    """
    lines = traceback.splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith("  File ")]
    if frames:
        after = lines[frames[-1] + 1 :]
        header = next((line for line in after if line and not line[0].isspace()), "")
    elif error:
        header = error.splitlines()[0]
    else:
        header = next((line for line in reversed(lines) if line.strip()), "")
    name = header.split(":", 1)[0].strip()
    if not _DOTTED_NAME.fullmatch(name):
        return "builtins.Exception"
    if "." in name:
        return name  # Python prints non-builtin exceptions with their module
    if isinstance(getattr(exceptions, name, None), type):
        return f"{exceptions.__name__}.{name}"
    if isinstance(getattr(builtins, name, None), type):
        return f"builtins.{name}"
    return "builtins.Exception"


_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


# -- the registry of tasks -------------------------------------------------------------------------

logger = logging.getLogger(__name__)
#: Retries of a task that sets none, in ``@task`` or the backend's ``OPTIONS``.
DEFAULT_TASK_MAX_RETRIES = 0
_tasks: dict[str, Task] = {}
_lock = threading.Lock()


def _register(task: Task) -> JobDefinition[..., Any]:
    """Register *task* as the job named by its module path.

    Once: the copies that ``task.using()`` makes reuse the first registration.
    """
    name = task.module_path
    with _lock:
        known = _tasks.get(name)
        if known is not None and known.func is task.func and name in registry:
            return registry.get(name)
        options: dict[str, Any] = dict(getattr(task.get_backend(), "options", {}) or {})
        max_retries = getattr(task, "max_retries", None)
        timeout = getattr(task, "timeout", None)
        if max_retries is None:
            # Django's own backends fail a task whose function raises; a task retries only
            # when it (or the backend's OPTIONS) asks for retries, not by ASYNCJOBS's default.
            max_retries = options.get("max_retries", DEFAULT_TASK_MAX_RETRIES)
        try:
            # @job checks the options (and registers) exactly as it does for its own jobs.
            definition: JobDefinition[..., Any] = job(
                name=name,
                max_retries=max_retries,
                timeout=options.get("timeout") if timeout is None else timeout,
                backoff=getattr(task, "backoff", None) or options.get("backoff"),
                at_most_once=getattr(task, "at_most_once", False),
                unique=getattr(task, "unique", False),
                concurrency=getattr(task, "concurrency", None),
                concurrency_key=getattr(task, "concurrency_key", None),
                rate_limit=getattr(task, "rate_limit", None),
            )(_runner(task))
        except (TypeError, ValueError) as exc:
            raise InvalidTask(f"{name}: {exc}") from exc
        _tasks[name] = task
        return definition


def _stored_task(job: Job) -> Task:
    """Return the registered task of *job* as it was enqueued: its backend alias, queue,
    priority and ``run_after``.

    ``run_after`` is the row's ``run_at`` when that is not its creation time (both are the
    enqueueing transaction's ``now()`` unless the task was deferred); after a retry, it is when
    the retry was due. What no longer validates (a backend alias since removed from ``TASKS``,
    a queue its backend no longer lists) is left as the registered task has it.
    """
    task = _tasks[job.name]
    changes: dict[str, Any] = {"priority": job.priority, "queue_name": job.queue}
    if job.run_at != job.created_at and timezone.is_aware(job.run_at):
        changes["run_after"] = job.run_at
    if job.task_backend:
        changes["backend"] = job.task_backend
    for attempt in (changes, {k: v for k, v in changes.items() if k != "backend"}, {}):
        try:
            return task.using(**attempt)
        except (InvalidTask, ImproperlyConfigured, ValueError):
            continue
    return task


def _runner(task: Task) -> Callable[..., Any]:
    """Return what the worker calls for *task*: its function, given a ``TaskContext`` if asked."""
    func = task.func
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            if task.takes_context:
                context: TaskContext = TaskContext(
                    task_result=await sync_to_async(_running_result)(task)
                )
                return await func(context, *args, **kwargs)
            return await func(*args, **kwargs)

        runner: Callable[..., Any] = run_async
    else:

        @functools.wraps(func)
        def run_sync(*args: Any, **kwargs: Any) -> Any:
            if task.takes_context:
                return func(TaskContext(task_result=_running_result(task)), *args, **kwargs)
            return func(*args, **kwargs)

        runner = run_sync
    if task.takes_context:
        # Callers pass the arguments without the context: check them against that signature.
        signature = inspect.signature(func)
        runner.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=list(signature.parameters.values())[1:]
        )
    return runner


def _running_result(task: Task) -> TaskResult:
    context = current_job()
    if context is None:
        raise RuntimeError(f"{task.module_path} takes a context: it must run in a worker")
    return task.get_backend().get_result(str(context.id))


# -- Django's task signals, sent from our job signals ----------------------------------------------


def _send(signal: Signal, backend: BaseTaskBackend, result: TaskResult) -> None:
    # Robust, like our own signals: a failing receiver is logged and never breaks the caller
    # (whose job row is already committed) nor the worker.
    for receiver, response in signal.send_robust(sender=type(backend), task_result=result):
        if isinstance(response, Exception):
            logger.error(
                "task signal receiver failed receiver=%r task_id=%s",
                receiver,
                result.id,
                exc_info=response,
            )


def _bridge(django_signal: Signal) -> Callable[..., None]:
    def receiver(sender: Any, job: Job, **kwargs: Any) -> None:
        task = _tasks.get(job.name)
        if task is None:
            return
        backend = task.get_backend()
        if isinstance(backend, AsyncJobsBackend):
            _send(django_signal, backend, backend.get_result(str(job.id)))

    return receiver


def _cancelled_while_running(sender: Any, job: Job, **kwargs: Any) -> None:
    """Send ``task_finished`` for a task an operator cancelled while it ran (its attempt was
    closed by the statement that cancelled it); a task cancelled before it started sends
    nothing, as it never started."""
    if job.finished_at is None or job.name not in _tasks:
        return
    ended = job.attempt_history.filter(
        outcome=AttemptOutcome.CANCELLED, finished_at=job.finished_at
    )
    if ended.exists():
        _finished(sender, job=job, **kwargs)


_finished = _bridge(task_finished)
# Sent after the transaction of each change commits, in the process that made it: task_started
# in the worker that claimed the job, task_finished where the attempt ended (the worker, or the
# scheduler that rescued a lost one).
_RECEIVERS = [
    (signals.job_started, _bridge(task_started)),
    (signals.job_succeeded, _finished),
    (signals.job_failed, _finished),
    (signals.job_retrying, _finished),
    (signals.job_cancelled, _cancelled_while_running),
]
for _signal, _receiver in _RECEIVERS:
    _signal.connect(_receiver, weak=False, dispatch_uid=f"asyncjobs-tasks-{id(_receiver)}")
