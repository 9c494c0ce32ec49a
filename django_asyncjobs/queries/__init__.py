"""Every state transition of a job, each one conditional SQL statement that reports what it did.

This package is the only place that changes a job's status. Each transition names the status (and,
for workers, the lease or the dispatch token) it expects, so a transition that lost a race changes
nothing and says so. Times come from the database's ``now()``, never from the clock of the calling
machine.

One module per caller of the ledger:

- :mod:`.enqueue`: code that enqueues (insert, bulk insert, unique keys, dependencies);
- :mod:`.relay`: the scheduler as outbox relay (due queues, relay, flow control, lost messages);
- :mod:`.claim`: a worker that received a message (claim, or refuse a name it does not know);
- :mod:`.lease`: whoever holds or ends a running job's lease (outcomes, hand-back, heartbeat,
  progress) and the reads that find running jobs whose worker is gone or overdue;
- :mod:`.operator`: operators (cancel, retry, mark succeeded, run again, purge, id prefixes);
- :mod:`.queues`: operators' pause and resume of a queue (``QueueState.objects``), which the
  relay and the claim read;
- :mod:`.processes`: the process table (``Process.objects``): register, heartbeat, leave, prune,
  and who is alive running what;
- :mod:`._sql`: what they share (table names from ``_meta``, SQL fragments, the database's now).

``JobManager`` is composed of one mixin class per caller, all built on :class:`._sql.Ledger`.
Mixins rather than a manager delegating to helper objects, because every transition must stay a
method of ``Job.objects`` (``Job.objects.db_manager(alias).claim(...)`` works as Django users
expect, and tests patch methods on the class), and because a delegating manager would repeat every
signature once more. The mixins share nothing but the base's helpers, so each module reads alone.
"""

from __future__ import annotations

from typing import Any

from ._sql import (
    ACTIVE_STATUSES,
    ATTEMPT_RELATION,
    CANCEL_CHANNEL,
    NOTIFY_CHANNEL,
    DatabaseNow,
    JobRow,
    JobT,
    storable_delay_seconds,
)
from .claim import WAITING_NOTE_PREFIX, ClaimOutcome, ClaimQueries, ClaimResult, QueueWork
from .enqueue import EnqueueQueries
from .lease import HeartbeatReply, LeaseQueries, OverdueJob, attempt_outcome
from .operator import JobQuerySet, OperatorQueries, uuid_prefix_range
from .processes import ProcessInfo, ProcessManager, ProcessQuerySet
from .queues import QueueStateManager
from .relay import DueJob, RelayQueries, RelayResult

__all__ = [
    "ACTIVE_STATUSES",
    "CANCEL_CHANNEL",
    "NOTIFY_CHANNEL",
    "WAITING_NOTE_PREFIX",
    "ClaimOutcome",
    "ClaimResult",
    "DatabaseNow",
    "DueJob",
    "HeartbeatReply",
    "JobManager",
    "JobQuerySet",
    "JobRow",
    "OverdueJob",
    "ProcessInfo",
    "ProcessManager",
    "ProcessQuerySet",
    "QueueStateManager",
    "QueueWork",
    "RelayResult",
    "attempt_outcome",
    "storable_delay_seconds",
    "uuid_prefix_range",
]


class JobManager(
    OperatorQueries[JobT],
    EnqueueQueries[JobT],
    RelayQueries[JobT],
    ClaimQueries[JobT],
    LeaseQueries[JobT],
):
    """``Job.objects``: queries plus every state transition of a job."""

    def get_queryset(self) -> JobQuerySet[JobT]:
        return JobQuerySet(self.model, using=self._db)

    def due(self) -> JobQuerySet[JobT]:
        """Return scheduled jobs that are due now."""
        return self.get_queryset().due()


def __getattr__(name: str) -> Any:
    # ATTEMPT_TABLE was a literal; the attempt table's name now comes from the model's _meta,
    # which is only known once the app registry is ready.
    if name == "ATTEMPT_TABLE":
        from django.apps import apps

        job_model = apps.get_model("django_asyncjobs", "Job")
        related = job_model._meta.get_field(ATTEMPT_RELATION).related_model
        return related._meta.db_table  # type: ignore[union-attr]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
