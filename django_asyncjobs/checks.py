"""System checks: bad ``ASYNCJOBS`` settings and unsupported databases fail ``manage.py check``;
``check --deploy`` also warns about settings that only suit tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.apps import AppConfig
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import connections, router

from . import conf


@register(Tags.compatibility)
def check_settings(
    *, app_configs: Sequence[AppConfig] | None, databases: Sequence[str] | None, **kwargs: Any
) -> list[CheckMessage]:
    """Report every invalid ``ASYNCJOBS`` key (asyncjobs.E001)."""
    return [
        Error(
            message,
            hint="See the configuration reference in django-asyncjobs' README.",
            obj="settings.ASYNCJOBS",
            id="asyncjobs.E001",
        )
        for message in conf.validate(conf.raw_settings())
    ]


@register(Tags.database)
def check_database(
    *, app_configs: Sequence[AppConfig] | None, databases: Sequence[str] | None, **kwargs: Any
) -> list[CheckMessage]:
    """Require PostgreSQL for the jobs table (asyncjobs.E002): it uses SKIP LOCKED and NOTIFY."""
    from .models import Job

    alias = router.db_for_write(Job)
    vendor = connections[alias].vendor
    if vendor == "postgresql":
        return []
    return [
        Error(
            f"django-asyncjobs needs PostgreSQL; database {alias!r} is {vendor}.",
            hint="Point the jobs table's database at PostgreSQL 13 or newer.",
            obj="settings.DATABASES",
            id="asyncjobs.E002",
        )
    ]


@register(Tags.compatibility)
def check_periodic_jobs(
    *, app_configs: Sequence[AppConfig] | None, databases: Sequence[str] | None, **kwargs: Any
) -> list[CheckMessage]:
    """Report invalid cron expressions, time zones and job names of schedules (asyncjobs.E003)."""
    from .periodic import problems

    return [
        Error(message, hint=hint, obj="django_asyncjobs.periodic", id="asyncjobs.E003")
        for message, hint in problems()
    ]


@register(Tags.compatibility)
def check_idle_schedules(
    *, app_configs: Sequence[AppConfig] | None, databases: Sequence[str] | None, **kwargs: Any
) -> list[CheckMessage]:
    """Warn about valid schedules that never fire (asyncjobs.W002): ``0 0 30 2 *``, a past year.

    A warning, not an error: a schedule whose last year has passed must not stop the scheduler.
    """
    from .periodic import idle_schedules

    return [
        Warning(
            message,
            hint="Fix or remove the schedule; the scheduler leaves it waiting for ever.",
            obj="django_asyncjobs.periodic",
            id="asyncjobs.W002",
        )
        for message in idle_schedules()
    ]


@register(Tags.compatibility, deploy=True)
def check_transport(
    *, app_configs: Sequence[AppConfig] | None, databases: Sequence[str] | None, **kwargs: Any
) -> list[CheckMessage]:
    """Warn that the memory transport delivers nothing between processes (asyncjobs.W001).

    A deployment check (``manage.py check --deploy``): tests legitimately use the memory
    transport, and ``runscheduler``, ``runworker`` and ``runjobs`` refuse it themselves.
    """
    raw = conf.raw_settings()
    if not isinstance(raw, Mapping) or raw.get("TRANSPORT") != "memory":
        return []
    return [
        Warning(
            'ASYNCJOBS["TRANSPORT"] is "memory": messages stay in the process that sent them, '
            "so no runworker process ever receives a job, and runscheduler, runworker and "
            "runjobs refuse to start.",
            hint='Set ASYNCJOBS["TRANSPORT"] = "sqs" outside tests that run a Scheduler and a '
            "Worker in one process.",
            obj="settings.ASYNCJOBS",
            id="asyncjobs.W001",
        )
    ]


@register(Tags.compatibility)
def check_default_queue(
    *, app_configs: Sequence[AppConfig] | None, databases: Sequence[str] | None, **kwargs: Any
) -> list[CheckMessage]:
    """Warn when ``DEFAULT_QUEUE`` is not in ``QUEUES`` (asyncjobs.W003).

    A worker started without ``--queues`` consumes ``QUEUES``: jobs that name no queue would
    wait for a worker that names their queue. A warning, not an error: such workers may exist.
    """
    raw = conf.raw_settings()
    if conf.validate(raw):
        return []  # asyncjobs.E001 says what is wrong
    settings = conf.get_settings()
    if settings.default_queue in settings.queues:
        return []
    return [
        Warning(
            f'ASYNCJOBS["DEFAULT_QUEUE"] ({settings.default_queue!r}) is not in '
            f'ASYNCJOBS["QUEUES"] ({", ".join(settings.queues)}): a runworker started without '
            "--queues never receives the jobs that name no queue.",
            hint=f'Add {settings.default_queue!r} to ASYNCJOBS["QUEUES"], or run workers with '
            "--queues naming it.",
            obj="settings.ASYNCJOBS",
            id="asyncjobs.W003",
        )
    ]
