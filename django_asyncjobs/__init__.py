"""django-asyncjobs: background jobs for Django on PostgreSQL and AWS SQS.

Example::

    from django_asyncjobs import job

    @job
    def add(a: int, b: int) -> int:
        return a + b

    add.delay(2, 3)          # a Job row, committed with the caller's transaction
"""

from __future__ import annotations

from .context import (
    JobContext,
    areport_progress,
    cancel_requested,
    current_job,
    report_progress,
)
from .cron import Cron
from .exceptions import JobCancelled
from .registry import JobDefinition, job, registry
from .retry import Backoff
from .status import JobStatus

__all__ = [
    "Backoff",
    "Cron",
    "JobCancelled",
    "JobContext",
    "JobDefinition",
    "JobStatus",
    "areport_progress",
    "cancel_requested",
    "current_job",
    "job",
    "registry",
    "report_progress",
]
__version__ = "0.1.0"
