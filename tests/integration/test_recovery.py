"""Recovery transitions in-process: hand-back accounting, rescue of stale jobs, re-sending lost
messages, and the result size limit. The same flows run with real processes in tests/faults.
"""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test import override_settings

from django_asyncjobs.models import Job
from django_asyncjobs.scheduler import Scheduler
from django_asyncjobs.transports.memory import MemoryTransport
from tests.conftest import _current_asyncjobs, drain, relay
from tests.support.ledger import age_heartbeat, claimed
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def test_free_interruptions_do_not_use_attempts_and_later_ones_do() -> None:
    job = jobs.ledgered.delay(key="hb")
    for expected_attempts in (0, 0, 0, 1):
        running = claimed(job)
        assert running.lease_token is not None
        back = Job.objects.hand_back(
            job_id=job.id,
            lease_token=running.lease_token,
            reason="interrupted",
            free_interruptions=3,
        )
        assert back is not None and back.status == "scheduled"
        assert back.attempts == expected_attempts
    assert back is not None and back.interruptions == 4


def test_a_hand_back_with_a_lost_lease_changes_nothing() -> None:
    job = jobs.ledgered.delay(key="lease")
    claimed(job)
    assert (
        Job.objects.hand_back(
            job_id=job.id, lease_token=uuid.uuid4(), reason="x", free_interruptions=3
        )
        is None
    )
    assert Job.objects.get(id=job.id).status == "running"


def test_an_at_most_once_job_handed_back_is_failed() -> None:
    job = jobs.ledgered_once.delay(key="amo")
    assert Job.objects.get(id=job.id).at_most_once  # delay() stores the policy on the row
    running = claimed(job)
    assert running.lease_token is not None
    back = Job.objects.hand_back(
        job_id=job.id,
        lease_token=running.lease_token,
        reason="interrupted: worker w1 shut down during attempt 1",
        free_interruptions=3,
    )
    assert back is not None and back.status == "failed" and back.finished_at is not None


def enqueue_row(name: str, *, at_most_once: bool, key: str = "") -> Job:
    """Insert a job row by name, as a process whose code has other job definitions would."""
    return Job.objects.enqueue(
        name=name,
        args=[],
        kwargs={"key": key} if key else {},
        queue="default",
        priority=0,
        max_retries=3,
        timeout_seconds=None,
        at_most_once=at_most_once,
    )


def test_a_scheduler_not_knowing_the_name_never_retries_an_at_most_once_job() -> None:
    # A rolling deploy: the job was enqueued by new code; this scheduler runs the old code.
    once = enqueue_row("billing.charge_card", at_most_once=True)
    again = enqueue_row("billing.refresh_cache", at_most_once=False)
    for job in (once, again):
        claimed(job)
        age_heartbeat(job, 600)

    Scheduler(transport=MemoryTransport()).run_once()

    failed = Job.objects.get(id=once.id)
    assert failed.status == "failed" and failed.finished_at is not None
    assert failed.error.startswith("WorkerLost: no heartbeat from worker w1")
    assert Job.objects.get(id=again.id).status == "scheduled"


def test_the_row_policy_wins_over_the_code_when_a_cut_off_attempt_is_recorded() -> None:
    # The code of tests.ledgered says nothing of at_most_once; the row it was enqueued with does.
    handed = claimed(enqueue_row(jobs.ledgered.name, at_most_once=True, key="row-1"))
    lost = claimed(enqueue_row(jobs.ledgered.name, at_most_once=True, key="row-2"))
    raised = claimed(enqueue_row(jobs.ledgered.name, at_most_once=True, key="row-3"))
    assert handed.lease_token and lost.lease_token and raised.lease_token

    back = Job.objects.hand_back(
        job_id=handed.id, lease_token=handed.lease_token, reason="interrupted", free_interruptions=3
    )
    gone = Job.objects.record_failure(
        job_id=lost.id,
        lease_token=lost.lease_token,
        error="WorkerLost: worker process w1 was killed by SIGKILL during attempt 1",
        traceback="",
        retry_in_seconds=0.5,
        lost=True,
    )
    # An exception the job raised is an outcome, not a cut-off attempt: the retry policy holds.
    retried = Job.objects.record_failure(
        job_id=raised.id,
        lease_token=raised.lease_token,
        error="RuntimeError: boom",
        traceback="",
        retry_in_seconds=0.5,
    )

    assert back is not None and back.status == "failed"
    assert gone is not None and gone.status == "failed" and gone.finished_at is not None
    assert retried is not None and retried.status == "scheduled"


def test_the_scheduler_rescues_only_jobs_whose_heartbeat_is_stale() -> None:
    stale = jobs.ledgered.delay(key="stale")
    fresh = jobs.ledgered.delay(key="fresh")
    once = jobs.ledgered_once.delay(key="once")
    for job in (stale, fresh, once):
        claimed(job)
    age_heartbeat(stale, 600)
    age_heartbeat(once, 600)

    assert Scheduler(transport=MemoryTransport()).rescue_stalled() == 2

    rescued = Job.objects.get(id=stale.id)
    assert rescued.status == "scheduled" and rescued.attempts == 1
    assert rescued.error.startswith("WorkerLost: no heartbeat from worker w1")
    assert Job.objects.get(id=fresh.id).status == "running"
    failed = Job.objects.get(id=once.id)
    assert failed.status == "failed" and failed.error.startswith("WorkerLost")


def test_a_rescue_racing_a_heartbeat_loses() -> None:
    job = jobs.ledgered.delay(key="race")
    running = claimed(job)
    assert running.lease_token is not None
    # The worker came back in time: its heartbeat is fresh, so the fenced write matches nothing.
    assert (
        Job.objects.record_failure(
            job_id=job.id,
            lease_token=running.lease_token,
            error="WorkerLost",
            traceback="",
            retry_in_seconds=0,
            stale_after_seconds=60,
        )
        is None
    )


def test_queued_jobs_whose_message_was_lost_are_sent_again_with_a_new_token() -> None:
    transport = MemoryTransport()
    job = jobs.ledgered.delay(key="lost")
    relay(transport)
    first_token = Job.objects.get(id=job.id).dispatch_token
    transport.purge()  # the message is gone
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE asyncjobs_job SET enqueued_at = now() - interval '1 hour' WHERE id = %s",
            [job.id],
        )

    assert Scheduler(transport=transport).run_once() == 1
    row = Job.objects.get(id=job.id)
    assert row.status == "queued" and row.dispatch_token != first_token
    drain(transport)
    assert Job.objects.get(id=job.id).status == "succeeded"


def test_a_result_over_the_size_limit_fails_the_attempt_clearly() -> None:
    transport = MemoryTransport()
    with override_settings(ASYNCJOBS={**_current_asyncjobs(), "MAX_PAYLOAD_BYTES": 100}):
        fits = jobs.big_result.delay(49)  # 100 bytes of JSON
        too_big = jobs.big_result.delay(50)  # 102 bytes
        relay(transport)
        drain(transport)
    assert Job.objects.get(id=fits.id).status == "succeeded"
    failed = Job.objects.get(id=too_big.id)
    assert failed.status == "failed" and failed.result is None
    assert "the job's return value is 102 bytes of JSON; the limit is 100" in failed.error


def test_every_attempt_is_kept_in_the_history() -> None:
    from django_asyncjobs.models import JobAttempt

    transport = MemoryTransport()
    job = jobs.fails_then_succeeds.delay("hist", 2)
    for _ in range(3):
        Job.objects.filter(id=job.id, status="scheduled").update(run_at=job.created_at)
        relay(transport)
        drain(transport)
    history = list(JobAttempt.objects.filter(job_id=job.id).order_by("started_at"))
    assert [(a.number, a.outcome) for a in history] == [
        (1, "failed"),
        (2, "failed"),
        (3, "succeeded"),
    ]
    assert history[0].error == "RuntimeError: attempt 1 fails on purpose"
    assert all(a.worker == "test-worker" and a.finished_at is not None for a in history)

    interrupted = jobs.ledgered.delay(key="hist-int")
    running = claimed(interrupted)
    assert running.lease_token is not None
    Job.objects.hand_back(
        job_id=interrupted.id,
        lease_token=running.lease_token,
        reason="interrupted: worker w1 shut down during attempt 1",
        free_interruptions=3,
    )
    (attempt,) = JobAttempt.objects.filter(job_id=interrupted.id)
    assert attempt.outcome == "interrupted" and attempt.error.startswith("interrupted: worker w1")
