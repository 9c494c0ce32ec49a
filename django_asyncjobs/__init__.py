"""django-asyncjobs: background jobs for Django on PostgreSQL and AWS SQS.

>>> from django_asyncjobs import job
>>> @job
... def add(a: int, b: int) -> int:
...     return a + b
>>> add.delay(2, 3)          # a Job row, committed with the caller's transaction
"""

from __future__ import annotations

from .periodic import Cron
from .registry import JobDefinition, job, registry
from .retry import Backoff
from .status import JobStatus

__all__ = ["Backoff", "Cron", "JobDefinition", "JobStatus", "job", "registry"]
__version__ = "0.1.0"
