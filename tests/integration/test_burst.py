"""A burst worker and the priority sweep trust the ledger, not an empty short poll.

SQS's short poll samples some of its servers and may return nothing although messages exist
(LocalStack showed it: ``runworker --burst`` exited with a job queued). The transport here is
the memory transport behind :class:`~tests.support.transports.BlindShortPolls`, whose short polls
always come back empty: only a worker that asks the ledger and then long-polls finds the jobs.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest
from django.db import connections
from django.test import override_settings

from django_asyncjobs import queues
from django_asyncjobs.models import Job
from django_asyncjobs.transports.memory import MemoryTransport
from django_asyncjobs.worker import EXIT_UNFINISHED
from tests.conftest import _current_asyncjobs, drain, relay
from tests.support.transports import BlindShortPolls
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_burst_worker_does_not_stop_while_the_ledger_says_a_job_is_queued(
    memory_transport: MemoryTransport,
) -> None:
    enqueued = jobs.add.delay(2, 3)
    assert relay(memory_transport) == 1
    blind = BlindShortPolls(memory_transport)

    worker = drain(blind)

    row = Job.objects.get(id=enqueued.id)
    assert (row.status, row.result) == ("succeeded", 5)
    assert blind.misses >= 1, "the test did not blind a short poll"
    assert worker.exit_code == 0


def test_a_higher_queue_whose_short_poll_came_back_empty_still_goes_first(
    memory_transport: MemoryTransport,
) -> None:
    low = [jobs.low_echo.delay(f"low-{i}") for i in range(3)]
    high = [jobs.high_echo.delay(f"high-{i}") for i in range(3)]
    assert relay(memory_transport) == 6
    # Only the higher queue's short polls miss: trusting one would read "low" first.
    blind = BlindShortPolls(memory_transport, blind_queues={"high"})

    drain(blind, concurrency=1)

    rows = sorted(Job.objects.filter(id__in=[j.id for j in low + high]), key=started)
    assert [row.queue for row in rows] == ["high"] * 3 + ["low"] * 3
    assert all(row.status == "succeeded" for row in rows)


def test_a_burst_worker_waits_for_a_relay_in_flight(memory_transport: MemoryTransport) -> None:
    enqueued = jobs.add.delay(20, 22)

    # The job is due and not sent yet when the worker finds its queues empty; the scheduler
    # sends it a moment later.
    def relay_later() -> None:
        relay(memory_transport)
        connections.close_all()  # this thread's connection, which would outlive the test

    timer = threading.Timer(0.5, relay_later)
    timer.start()
    try:
        drain(BlindShortPolls(memory_transport))
    finally:
        timer.join()
    assert Job.objects.get(id=enqueued.id).status == "succeeded"


def test_a_burst_worker_gives_up_on_queued_jobs_whose_messages_never_come(
    memory_transport: MemoryTransport, caplog: pytest.LogCaptureFixture
) -> None:
    enqueued = jobs.add.delay(1, 1)
    assert relay(memory_transport) == 1
    memory_transport.purge()  # the message is lost; the row still says queued

    short = {"VISIBILITY_TIMEOUT_SECONDS": 1, "CLAIM_LOCK_TIMEOUT_SECONDS": 0.5}
    started_at = time.monotonic()
    with (
        override_settings(ASYNCJOBS={**_current_asyncjobs(), **short}),
        caplog.at_level(logging.INFO, logger="django_asyncjobs"),
    ):
        worker = drain(memory_transport)
    waited = time.monotonic() - started_at

    assert worker.exit_code == EXIT_UNFINISHED
    assert Job.objects.get(id=enqueued.id).status == "queued"
    assert "burst worker gives up" in caplog.text
    assert "queued=1" in caplog.text
    # Patience: the visibility timeout, a claim's lock wait and a hold (1 + 0.5 + 0.5 s).
    assert 2 <= waited < 30, waited


def test_a_burst_worker_stops_with_a_warning_when_due_jobs_are_never_sent(
    memory_transport: MemoryTransport, caplog: pytest.LogCaptureFixture
) -> None:
    enqueued = jobs.add.delay(1, 2)  # due, and no scheduler runs

    with caplog.at_level(logging.INFO, logger="django_asyncjobs"):
        worker = drain(memory_transport)

    assert worker.exit_code == 0
    assert Job.objects.get(id=enqueued.id).status == "scheduled"
    assert "due jobs were not sent" in caplog.text
    assert "is runscheduler running?" in caplog.text


def test_a_burst_worker_with_nothing_to_do_stops_at_once(memory_transport: MemoryTransport) -> None:
    jobs.add.using(run_after=3600).delay(1, 2)  # not due: not this worker's business yet
    started_at = time.monotonic()
    worker = drain(memory_transport)
    assert worker.exit_code == 0
    assert time.monotonic() - started_at < 5


def started(row: Job) -> float:
    assert row.started_at is not None
    return row.started_at.timestamp()


def test_a_paused_queues_due_jobs_do_not_keep_a_burst_worker_waiting(
    memory_transport: MemoryTransport, caplog: pytest.LogCaptureFixture
) -> None:
    queues.pause("default", by="test")
    enqueued = jobs.add.delay(1, 2)  # due, in a paused queue: the pause says why it waits

    with caplog.at_level(logging.INFO, logger="django_asyncjobs"):
        worker = drain(memory_transport)

    assert worker.exit_code == 0
    assert Job.objects.get(id=enqueued.id).status == "scheduled"
    assert "due jobs were not sent" not in caplog.text
