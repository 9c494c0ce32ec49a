"""Paused queues in the ledger: the relay skips them (no SQS request), a worker puts back the job
of a message sent before the pause, resume relays again and wakes the scheduler, ``run_jobs()``
leaves them alone, and pause / resume say what they changed."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from django.db import connection

from django_asyncjobs import queues
from django_asyncjobs.exceptions import UnknownQueue
from django_asyncjobs.models import Job, QueueState
from django_asyncjobs.queries import NOTIFY_CHANNEL, ClaimOutcome, DueJob
from django_asyncjobs.testing import run_jobs
from django_asyncjobs.transports.memory import MemoryTransport
from tests.conftest import drain, relay
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def fresh(job: Job) -> Job:
    return Job.objects.get(pk=job.pk)


def test_the_relay_skips_a_paused_queue_and_relays_it_once_resumed(
    memory_transport: MemoryTransport,
) -> None:
    waiting = jobs.add.delay(1, 2)
    other = jobs.high_echo.delay("other")
    queues.pause("default", by="alice", reason="maintenance")

    assert Job.objects.due_queues() == ["high"]
    assert relay(memory_transport) == 1
    assert fresh(other).status == "queued"
    row = fresh(waiting)
    assert (row.status, row.dispatch_token, row.enqueued_at) == ("scheduled", None, None)
    # No SQS request for the paused queue: the relay does not even call send.
    calls: list[list[DueJob]] = []

    def send(due: list[DueJob]) -> set[uuid.UUID]:
        calls.append(due)
        return set()

    result = Job.objects.relay_due(queue="default", limit=10, send=send)
    assert (result.sent, result.put_back, calls) == (0, 0, [])
    # The scheduler does not poll the paused backlog as if it were due.
    assert Job.objects.seconds_until_next_due() is None

    assert queues.resume("default", by="bob").changed
    assert Job.objects.seconds_until_next_due() == 0
    assert relay(memory_transport) == 1
    drain(memory_transport)
    assert fresh(waiting).status == "succeeded"
    assert fresh(waiting).result == 3


def test_a_paused_queue_does_not_hide_the_next_job_due_elsewhere() -> None:
    jobs.add.delay(1, 2)  # due now, in the paused queue
    jobs.high_echo.using(run_after=600).delay("later")
    queues.pause("default", by="alice")
    seconds = Job.objects.seconds_until_next_due()
    assert seconds is not None and 590 < seconds <= 600


def test_a_message_sent_before_the_pause_puts_its_job_back_instead_of_starting_it(
    memory_transport: MemoryTransport,
) -> None:
    job = jobs.add.delay(2, 3)
    assert relay(memory_transport) == 1
    token = fresh(job).dispatch_token
    assert token is not None
    queues.pause("default", by="alice")

    claim = Job.objects.claim(
        job_id=job.id,
        dispatch_token=token,
        worker="w1",
        registered_names={job.name},
        lock_timeout_seconds=1,
    )
    assert claim.outcome is ClaimOutcome.NOT_CLAIMABLE
    assert claim.reason == (
        "queue 'default' is paused; the job waits as scheduled until it is resumed"
    )
    row = fresh(job)
    assert (row.status, row.attempts, row.dispatch_token) == ("scheduled", 0, None)
    assert not row.attempt_history.exists()

    # The worker drops the message; the job is sent again once the queue is resumed.
    drain(memory_transport)
    assert fresh(job).status == "scheduled"
    queues.resume("default", by="alice")
    assert relay(memory_transport) == 1
    drain(memory_transport)
    assert (fresh(job).status, fresh(job).attempts) == ("succeeded", 1)


def test_claims_of_other_queues_and_stale_messages_are_unaffected_by_a_pause(
    memory_transport: MemoryTransport,
) -> None:
    paused = jobs.add.delay(1, 1)
    other = jobs.high_echo.delay("x")
    relay(memory_transport)
    queues.pause("default", by="alice")
    token = fresh(other).dispatch_token
    assert token is not None
    results = Job.objects.claim_many(
        [
            (paused.id, uuid.uuid4()),  # a stale token: changes nothing, paused or not
            (other.id, token),
        ],
        worker="w1",
        registered_names={paused.name, other.name},
        lock_timeout_seconds=1,
    )
    assert [(r.outcome, r.reason) for r in results] == [
        (ClaimOutcome.NOT_CLAIMABLE, "stale dispatch token"),
        (ClaimOutcome.CLAIMED, ""),
    ]
    assert fresh(paused).status == "queued"


def test_resume_wakes_the_scheduler_and_pause_survives_as_a_row() -> None:
    params = connection.get_connection_params()
    for key in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(key, None)
    with psycopg.connect(**params, autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        queues.pause("default", by="alice", reason="deploy")
        assert list(listener.notifies(timeout=0.2, stop_after=1)) == []
        state = QueueState.objects.get(name="default")
        assert (state.paused, state.paused_by, state.reason) == (True, "alice", "deploy")
        queues.resume("default", by="bob")
        assert len(list(listener.notifies(timeout=5, stop_after=1))) == 1
    state = QueueState.objects.get(name="default")
    assert (state.paused, state.resumed_by, state.paused_by) == (False, "bob", "alice")
    assert state.describe().startswith("queue 'default' is not paused (resumed ")


def test_pause_and_resume_report_what_they_changed() -> None:
    first = queues.pause("default", by="alice", reason="first")
    assert first.changed and first.state is not None
    assert first.state.describe().startswith("queue 'default' is paused since ")
    assert first.state.describe().endswith(" by alice: first")
    again = queues.pause("default", by="bob", reason="second")
    # The first pause stands: its author and reason are not overwritten.
    assert not again.changed and again.state is not None
    assert (again.state.paused_by, again.state.reason) == ("alice", "first")
    assert queues.resume("default", by="bob").changed
    assert not queues.resume("default", by="bob").changed
    assert not queues.resume("low", by="bob").changed  # configured, never paused


def test_pausing_a_queue_nobody_uses_is_refused_unless_forced() -> None:
    with pytest.raises(UnknownQueue, match="unknown queue 'defualt'"):
        queues.pause("defualt", by="alice")
    assert not QueueState.objects.exists()
    with pytest.raises(UnknownQueue):
        queues.resume("defualt", by="alice")
    with pytest.raises(ValueError, match="may only hold letters"):
        queues.pause("no.dots", by="alice", force=True)
    assert queues.pause("defualt", by="alice", force=True).changed
    # Known: a job row used it, or a registered job names it, or it was paused before.
    jobs.add.using(queue="reports").delay(1, 1)
    assert queues.is_known("reports")
    assert queues.is_known("high")  # ASYNCJOBS["QUEUES"]
    assert queues.is_known("defualt")
    assert not queues.is_known("nowhere")


@pytest.mark.django_db(transaction=False)
def test_run_jobs_leaves_the_jobs_of_a_paused_queue_waiting() -> None:
    waiting = jobs.add.delay(1, 1)
    other = jobs.high_echo.delay("run")
    queues.pause("default", by="alice")
    assert [job.pk for job in run_jobs()] == [other.pk]
    assert fresh(waiting).status == "scheduled"
    queues.resume("default", by="alice")
    assert [job.pk for job in run_jobs()] == [waiting.pk]
