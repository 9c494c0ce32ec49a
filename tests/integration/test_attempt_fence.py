"""How the manager records a retry decision: fenced by the lease, and only while the row still
holds the values the decision was made from (JobManager.end_attempt).
"""

from __future__ import annotations

import functools

import pytest
from django.db import connection

from django_asyncjobs import retry
from django_asyncjobs.models import Job
from django_asyncjobs.retry import Action, Backoff, Ending, decide
from tests.support.ledger import claimed
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def silence(job: Job) -> None:
    """Make *job*'s last heartbeat ten minutes old, as if its worker had gone."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE asyncjobs_job SET heartbeat_at = now() - interval '10 minutes' WHERE id = %s",
            [job.id],
        )


def test_a_decision_made_before_the_row_became_at_most_once_is_not_applied() -> None:
    job = jobs.ledgered.delay(key="fence")
    running = claimed(job)  # the caller's copy: not at_most_once
    assert running.lease_token is not None and not running.at_most_once
    # A deploy marks the running job at_most_once after the caller read it.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE asyncjobs_job SET at_most_once = true WHERE id = %s", [job.id])
    decisions: list[retry.Decision] = []

    def deciding(current: retry.AttemptRow) -> retry.Decision:
        decisions.append(decide(current, ending=Ending.LOST, backoff=Backoff.fixed(5)))
        return decisions[-1]

    stored = Job.objects.end_attempt(
        job=running, lease_token=running.lease_token, decide=deciding, error="WorkerLost: gone"
    )

    # The retry decided from the stale copy matched nothing; decided again from the row, it fails.
    assert [d.action for d in decisions] == [Action.RETRY, Action.FAIL]
    assert stored is not None and stored.status == "failed" and stored.attempts == 1
    assert Job.objects.get(id=job.id).status == "failed"


def test_a_decision_for_a_lost_lease_or_a_fresh_heartbeat_changes_nothing() -> None:
    job = jobs.ledgered.delay(key="fence-lease")
    running = claimed(job)
    assert running.lease_token is not None
    lost_decision = functools.partial(decide, ending=Ending.LOST, backoff=Backoff.fixed(5))

    # The worker still heartbeats: the scheduler's rescue loses.
    rescue = Job.objects.end_attempt(
        job=running,
        lease_token=running.lease_token,
        decide=lost_decision,
        error="WorkerLost",
        stale_after_seconds=60,
    )
    assert rescue is None and Job.objects.get(id=job.id).status == "running"

    silence(job)
    first = Job.objects.end_attempt(
        job=running,
        lease_token=running.lease_token,
        decide=lost_decision,
        error="WorkerLost",
        stale_after_seconds=60,
    )
    second = Job.objects.end_attempt(
        job=running, lease_token=running.lease_token, decide=lost_decision, error="WorkerLost"
    )
    assert first is not None and first.status == "scheduled"
    assert second is None  # the first cleared the lease
