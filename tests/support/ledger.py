"""Rows in the states a worker leaves them in, made in-process for integration tests."""

from __future__ import annotations

from django.db import connection

from django_asyncjobs.models import Job
from django_asyncjobs.scheduler import Scheduler
from django_asyncjobs.transports.memory import MemoryTransport


def claimed(job: Job, *, worker: str = "w1") -> Job:
    """Relay *job* and claim it as *worker* would; return the running row (it holds the lease)."""
    Scheduler(transport=MemoryTransport()).run_once()
    row = Job.objects.get(id=job.id)
    assert row.dispatch_token is not None
    result = Job.objects.claim(
        job_id=job.id,
        dispatch_token=row.dispatch_token,
        worker=worker,
        registered_names={job.name},
        lock_timeout_seconds=1,
    )
    assert result.job is not None
    return result.job


def age_heartbeat(job: Job, seconds: float) -> None:
    """Make *job*'s last heartbeat *seconds* old, as if its worker had gone silent that long."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE asyncjobs_job SET heartbeat_at = now() - %s * interval '1 second' "
            "WHERE id = %s",
            [seconds, job.id],
        )
