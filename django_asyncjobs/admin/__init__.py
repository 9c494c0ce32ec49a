"""The Django admin for jobs: a fast list, a readable detail page, guarded actions, an overview.

Rows change only through the state transitions of the job manager; every action asks for
confirmation, needs its own permission, sends the matching signal (through the transition) and
is written to Django's admin log. One module per page:

- :mod:`.jobs`: the job list and detail page (:class:`JobAdmin`), with its filters and search;
- :mod:`.actions`: the actions of the job list (retry, cancel, mark succeeded, run again);
- :mod:`.overview`: the queue overview page and its numbers;
- :mod:`.periodic`: the periodic schedules (:class:`PeriodicScheduleAdmin`);
- :mod:`.processes`: the registered workers and schedulers (:class:`ProcessAdmin`);
- :mod:`.display`: how jobs are shown (status colours, progress, relative times, durations).

Importing this package registers the admin classes; the templates are in
``templates/admin/django_asyncjobs/job/``.
"""

from __future__ import annotations

from .actions import ACTION_BATCH_SIZE, CONFIRMATION_SAMPLE_SIZE, JobActionsAdmin
from .display import STATUS_COLOURS, describe_progress, duration, relative
from .jobs import (
    COUNT_LIMIT,
    ID_PREFIX_DIGITS,
    WAITING_SHOWN,
    AttemptInline,
    CappedCountPaginator,
    CreatedFilter,
    DistinctFilter,
    JobAdmin,
    NameFilter,
    QueueFilter,
)
from .overview import QueueOverviewAdmin, QueueStats, attention_context, queue_overview
from .periodic import PeriodicScheduleAdmin
from .processes import RUNNING_SHOWN, ProcessAdmin

__all__ = [
    "ACTION_BATCH_SIZE",
    "CONFIRMATION_SAMPLE_SIZE",
    "COUNT_LIMIT",
    "ID_PREFIX_DIGITS",
    "RUNNING_SHOWN",
    "STATUS_COLOURS",
    "WAITING_SHOWN",
    "AttemptInline",
    "CappedCountPaginator",
    "CreatedFilter",
    "DistinctFilter",
    "JobActionsAdmin",
    "JobAdmin",
    "NameFilter",
    "PeriodicScheduleAdmin",
    "ProcessAdmin",
    "QueueFilter",
    "QueueOverviewAdmin",
    "QueueStats",
    "attention_context",
    "describe_progress",
    "duration",
    "queue_overview",
    "relative",
]
