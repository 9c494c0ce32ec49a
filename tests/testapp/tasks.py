"""Django Tasks (``@task``) for tests/integration/test_tasks_backend.py: autodiscovered because
TASKS names our backend. Django's three task signals are recorded in the ``Execution`` ledger with
the pid of the process that sent them.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from django.core.mail import send_mail
from django.dispatch import receiver

from django_asyncjobs import Backoff
from django_asyncjobs.tasks_compat import (
    ACCEPTS_TASK_OPTIONS,
    TaskContext,
    TaskResult,
    task,
    task_enqueued,
    task_finished,
    task_started,
)

from .models import Execution

logger = logging.getLogger(__name__)

#: Job options through @task: Django 6.1+ and the backport pass them on, Django 6.0 cannot.
RETRY_FAST: dict[str, Any] = (
    {"max_retries": 2, "backoff": Backoff(base_seconds=0.2, factor=1, jitter=0)}
    if ACCEPTS_TASK_OPTIONS
    else {}
)


@task(priority=2, queue_name="emails", takes_context=True)
def email_users(context: TaskContext, emails: list[str], subject: str, message: str) -> int:
    """Django's documented example (docs/topics/tasks.txt), unchanged but for the type hints."""
    logger.debug(
        f"Attempt {context.attempt} to send user email. Task result id: {context.task_result.id}."  # noqa: G004
    )
    return send_mail(subject=subject, message=message, from_email=None, recipient_list=emails)


class FirstAttemptFails(Exception):
    """Raised by ``fails_once`` on its first attempt."""


@task
def add(a: int, b: int) -> int:
    return a + b


@task(takes_context=True)
def whoami(context: TaskContext, key: str) -> dict[str, Any]:
    """Return what the context says about this run."""
    return {"key": key, "attempt": context.attempt, "id": context.task_result.id}


@task(takes_context=True, **RETRY_FAST)
def fails_once(context: TaskContext) -> int:
    """Fail the first attempt, succeed on the retry; return the attempt that succeeded."""
    if context.attempt == 1:
        raise FirstAttemptFails("the first attempt fails")
    return context.attempt


NO_RETRIES: dict[str, Any] = {"max_retries": 0} if ACCEPTS_TASK_OPTIONS else {}


@task(**NO_RETRIES)
def boom() -> None:
    raise ValueError("boom")


AT_MOST_ONCE: dict[str, Any] = {"at_most_once": True} if ACCEPTS_TASK_OPTIONS else {}


@task(**AT_MOST_ONCE)
def charge_once(amount: int) -> int:
    """A task that must never run twice."""
    return amount


@task
async def async_mul(a: int, b: int) -> int:
    await asyncio.sleep(0.01)
    return a * b


def _account(account: str) -> str:
    return account


#: Concurrency and rate limits through @task (Django 6.1+ and the backport).
LIMITED: dict[str, Any] = (
    {"concurrency": 1, "concurrency_key": _account, "rate_limit": "100/m"}
    if ACCEPTS_TASK_OPTIONS
    else {}
)


@task(**LIMITED)
def charge_account(account: str) -> str:
    return account


@task
def record_order(key: str) -> str:
    """Write a ledger row, so tests can see in which order runs happened."""
    Execution.objects.create(job="record_order", key=key)
    return key


@task
def fails_plainly() -> None:
    """Fail, with no retries asked for."""
    raise ValueError("no retries were asked for")


@task(backend="secondary")
def fails_on_secondary() -> None:
    """Fail; the secondary backend's OPTIONS ask for one retry."""
    raise ValueError("one retry was asked for")


def not_a_task() -> str:
    """A plain function: a job row naming it must never make a worker run it."""
    Execution.objects.create(job="not_a_task")
    return "ran"


def _record(name: str, task_result: TaskResult) -> None:
    Execution.objects.create(
        job=f"signal:{name}",
        key=task_result.id,
        payload={"pid": os.getpid(), "status": str(task_result.status)},
    )


@receiver(task_enqueued, dispatch_uid="tests.tasks.enqueued")
def _enqueued(sender: Any, task_result: TaskResult, **kwargs: Any) -> None:
    _record("task_enqueued", task_result)


@receiver(task_started, dispatch_uid="tests.tasks.started")
def _started(sender: Any, task_result: TaskResult, **kwargs: Any) -> None:
    _record("task_started", task_result)


@receiver(task_finished, dispatch_uid="tests.tasks.finished")
def _finished(sender: Any, task_result: TaskResult, **kwargs: Any) -> None:
    _record("task_finished", task_result)
