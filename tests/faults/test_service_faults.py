"""Fault injection against the services: SQS losing its state or stalling, PostgreSQL restarting,
hostile messages, and two schedulers at once. Each test ends with the invariant check.
"""

from __future__ import annotations

import json
import os
import re
import uuid

import pytest
from django.db import connection

from django_asyncjobs.conf import get_settings
from django_asyncjobs.models import Job
from tests.services import MotoServer, PostgresServer
from tests.support.flows import runs, sqs_client, start_scheduler, start_worker, wait_for_final
from tests.support.invariants import check_invariants, phases
from tests.support.processes import ProcessGroup, wait_until
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def resending(processes: ProcessGroup) -> ProcessGroup:
    """The ``processes`` group, with queued jobs sent again after 5 s without a start."""
    processes.env["ASYNCJOBS_TEST_REQUEUE_AFTER"] = "5"
    return processes


def test_sqs_losing_every_queue_and_message_loses_no_job(
    resending: ProcessGroup, moto_server: MotoServer
) -> None:
    start_scheduler(resending)
    # One slot and slow jobs: most of the burst is still queued in SQS when it is wiped.
    start_worker(resending)
    before = [jobs.ledgered.delay(key=f"before-{i}", seconds=0.3) for i in range(12)]

    moto_server.reset()  # as a restarted moto_server: no queues, no messages
    after = [jobs.ledgered.delay(key=f"after-{i}") for i in range(3)]

    rows = wait_for_final([*before, *after], resending, timeout=120)
    assert {row.status for row in rows.values()} == {"succeeded"}
    assert all(phases(job, "start") == 1 for job in [*before, *after])
    check_invariants([*before, *after])


def test_sqs_stalling_while_everything_runs_loses_no_job(
    processes: ProcessGroup, moto_server: MotoServer
) -> None:
    scheduler = start_scheduler(processes)
    worker = start_worker(processes, "--concurrency", "2")
    first = [jobs.ledgered.delay(key=f"first-{i}") for i in range(5)]
    wait_for_final(first, processes)

    moto_server.pause()
    try:
        during = [jobs.ledgered.delay(key=f"during-{i}") for i in range(5)]  # delay() still works
        scheduler.wait_for_output("scheduler cannot relay jobs, retrying", timeout=60)
    finally:
        moto_server.resume()

    rows = wait_for_final([*first, *during], processes, timeout=120)
    assert {row.status for row in rows.values()} == {"succeeded"}
    assert worker.returncode is None
    check_invariants([*first, *during])


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restarting_under_a_running_worker_loses_no_job(
    processes: ProcessGroup, postgres_server: PostgresServer, mode: str
) -> None:
    scheduler = start_scheduler(processes)
    worker = start_worker(processes, "--concurrency", "2")
    batch = [jobs.ledgered.delay(key=f"{mode}-{i}", seconds=0.2) for i in range(20)]
    wait_for_final(batch[:2], processes)

    postgres_server.restart(mode=mode)  # type: ignore[arg-type]
    connection.close()  # this test's own session died with the server

    rows = wait_for_final(batch, processes, timeout=120)
    assert {row.status for row in rows.values()} == {"succeeded"}
    assert worker.returncode is None and scheduler.returncode is None
    check_invariants(batch)


def test_an_idle_worker_starts_the_first_job_after_a_postgres_restart_at_once(
    processes: ProcessGroup, postgres_server: PostgresServer
) -> None:
    # A visibility timeout far above the wait below: a delivery wasted on the worker's dead
    # connection would show as a start about 30 s late.
    processes.env["ASYNCJOBS_TEST_VISIBILITY_TIMEOUT"] = "30"
    start_scheduler(processes)
    worker = start_worker(processes)
    before = jobs.ledgered.delay(key="before-restart")
    wait_for_final([before], processes)  # the worker's connection is open, and now idle

    postgres_server.restart(mode="fast")
    connection.close()  # this test's own session died with the server
    after = jobs.ledgered.delay(key="after-restart")

    row = wait_for_final([after], processes, timeout=60)[after.id]
    assert row.status == "succeeded"
    assert row.started_at is not None
    waited = (row.started_at - row.created_at).total_seconds()
    assert waited < 10, f"started {waited:.1f} s after enqueue\n{processes.report()}"
    # One delivery: the claim that met the dead connection was retried on a new one.
    assert re.search(
        rf"job started name=tests.ledgered id={after.id} attempt=1 queue=default receives=1\b",
        worker.output(),
    ), worker.describe()
    assert "cannot claim jobs" not in worker.output()
    assert "database connection lost; retrying on a new connection" in worker.output()
    check_invariants([before, after])


@pytest.mark.usefixtures("sqs_endpoint")
def test_hostile_messages_are_set_aside_and_valid_jobs_still_run(
    processes: ProcessGroup,
) -> None:
    start_scheduler(processes)
    worker = start_worker(processes)
    client = sqs_client()
    valid = [jobs.ledgered.delay(key=f"valid-{i}") for i in range(5)]
    wait_for_final(valid[:1], processes)
    url = client.get_queue_url(QueueName=get_settings().sqs_queue_name("default"))["QueueUrl"]
    existing = valid[0]
    hostile = [
        "not json",
        "{}",
        json.dumps({"v": 99, "job": str(existing.id), "d": str(uuid.uuid4())}),
        json.dumps({"v": 1, "job": "1 OR 1=1", "d": "x"}),
        json.dumps({"func": "os.system", "args": ["touch /tmp/asyncjobs-pwned"]}),
        "[" * 10_000 + "]" * 10_000,
        "x" * 200_000,
    ]
    for body in hostile:
        client.send_message(QueueUrl=url, MessageBody=body)
    # A well-formed doorbell with a guessed token changes nothing either.
    client.send_message(
        QueueUrl=url,
        MessageBody=json.dumps({"v": 1, "job": str(existing.id), "d": str(uuid.uuid4())}),
    )

    rows = wait_for_final(valid, processes)
    assert {row.status for row in rows.values()} == {"succeeded"}
    assert runs("ledgered", "valid-0") == 2  # start + finish: the guessed token ran nothing
    check_invariants(valid)  # also waits until the default queue is empty

    listing = processes.run("asyncjobs", "dead-letters", "--queue", "default", "--limit", "20")
    assert listing.returncode == 0, listing.describe()
    assert f"default: {len(hostile)} dead-lettered message(s)" in listing.output()
    assert "'not json'" in listing.output()
    assert worker.returncode is None
    assert worker.output().count("malformed message moved to the dead-letter queue") == len(hostile)

    redriven = processes.run("asyncjobs", "redrive", "--queue", "default")
    moved = int(re.search(r"(\d+) message\(s\) redriven", redriven.output())[1])  # type: ignore[index]
    # moto may hand one message out twice in a redrive; SQS is at-least-once too.
    assert moved >= len(hostile), redriven.describe()
    # The worker sets them aside again; nothing runs.
    wait_until(
        lambda: worker.output().count("moved to the dead-letter queue") >= len(hostile) * 2,
        timeout=60,
        message=lambda: worker.describe(),
    )
    check_invariants(valid)
    assert not os.path.exists("/tmp/asyncjobs-pwned")


@pytest.mark.usefixtures("sqs_endpoint")
def test_a_job_name_no_worker_knows_is_handed_back_not_run(processes: ProcessGroup) -> None:
    start_scheduler(processes)
    worker = start_worker(processes)
    unknown = Job.objects.enqueue(
        name="billing.new_job",
        args=[],
        kwargs={},
        queue="default",
        priority=0,
        max_retries=0,
        timeout_seconds=None,
    )
    worker.wait_for_output(
        r"job not registered here; handing the message back job_id=" + str(unknown.id)
    )
    known = jobs.ledgered.delay(key="known")
    wait_for_final([known], processes)
    unknown.refresh_from_db()
    # A newer worker of a rolling deploy may know it; after 5 deliveries it is failed (below,
    # and tests/integration/test_worker.py with a fast clock). Meanwhile the row says why it waits.
    assert unknown.status == "queued" and unknown.attempts == 0
    assert unknown.refused_deliveries >= 1
    assert unknown.error.startswith(
        "Waiting: job name 'billing.new_job' is not registered in this worker"
    )
    assert worker.returncode is None


def test_a_job_name_no_worker_knows_fails_after_five_deliveries_though_resent_often(
    processes: ProcessGroup,
) -> None:
    # REQUEUE_AFTER_SECONDS well below the hand-back: the scheduler keeps replacing the message
    # (each new one received once), so only a count on the row can reach the limit.
    processes.env["ASYNCJOBS_TEST_REQUEUE_AFTER"] = "3"
    scheduler = start_scheduler(processes)
    start_worker(processes)
    unknown = Job.objects.enqueue(
        name="billing.new_job",
        args=[],
        kwargs={},
        queue="default",
        priority=0,
        max_retries=0,
        timeout_seconds=None,
    )

    def waiting() -> Job | None:
        row = Job.objects.get(id=unknown.id)
        return row if row.error.startswith("Waiting: ") else None

    row = wait_until(waiting, timeout=30, message=processes.report)
    assert row.status in ("queued", "scheduled") and row.attempts == 0
    assert "job name 'billing.new_job' is not registered in this worker" in row.error
    assert "of 5 deliveries" in row.error

    row = wait_for_final([unknown], processes, timeout=90)[unknown.id]
    assert row.status == "failed", (row.status, row.error, processes.report())
    assert row.error.startswith("job name 'billing.new_job' is not registered in this worker")
    assert row.error.endswith("gave up after 5 deliveries")
    assert (row.refused_deliveries, row.attempts) == (5, 0)
    assert "sending again queued jobs no worker started" in scheduler.output()


def test_two_schedulers_send_each_job_once(processes: ProcessGroup) -> None:
    start_scheduler(processes)
    start_scheduler(processes)
    start_worker(processes, "--concurrency", "4")
    batch = [jobs.ledgered.delay(key=f"two-{i}") for i in range(60)]
    rows = wait_for_final(batch, processes, timeout=120)
    assert {row.status for row in rows.values()} == {"succeeded"}
    assert {row.attempts for row in rows.values()} == {1}
    check_invariants(batch)
