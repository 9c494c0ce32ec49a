"""``runworker --burst`` as a cron job uses it: relay with ``runscheduler --once``, then drain.

The worker stops when the ledger says its queues hold nothing, never on an empty short poll (SQS
may answer one with nothing although messages exist), and says so when it cannot finish.
"""

from __future__ import annotations

import pytest

from django_asyncjobs.models import Job
from django_asyncjobs.worker import EXIT_UNFINISHED
from tests.support.flows import assert_succeeded, messages_in, sqs_client
from tests.support.processes import ProcessGroup
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.usefixtures("sqs_endpoint")
def test_a_burst_worker_runs_every_relayed_job_before_it_exits(processes: ProcessGroup) -> None:
    enqueued = [jobs.add.delay(i, 1) for i in range(3)]
    high = jobs.high_echo.delay("first")
    relay = processes.run("runscheduler", "--once")
    assert relay.returncode == 0, relay.describe()
    assert set(Job.objects.values_list("status", flat=True)) == {"queued"}

    worker = processes.run("runworker", "--burst", "--wait", "1")

    assert worker.returncode == 0, worker.describe()
    for i, job in enumerate(enqueued):
        assert_succeeded(Job.objects.get(id=job.id), i + 1)
    assert_succeeded(Job.objects.get(id=high.id), "first")


@pytest.mark.usefixtures("sqs_endpoint")
def test_a_burst_worker_whose_queued_jobs_lost_their_messages_exits_4_and_says_why(
    processes: ProcessGroup, queue_prefix: str
) -> None:
    enqueued = jobs.add.delay(1, 1)
    relay = processes.run("runscheduler", "--once")
    assert relay.returncode == 0, relay.describe()
    client = sqs_client()
    queue_url = client.get_queue_url(QueueName=f"{queue_prefix}default")["QueueUrl"]
    received = client.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1)["Messages"]
    client.delete_message(QueueUrl=queue_url, ReceiptHandle=received[0]["ReceiptHandle"])
    assert messages_in(client, queue_url) == 0

    # Patience is the visibility timeout (1 s here), a claim's lock wait and a hold.
    processes.env["ASYNCJOBS_TEST_VISIBILITY_TIMEOUT"] = "1"
    worker = processes.run("runworker", "--burst", "--wait", "1", timeout=60)

    assert worker.returncode == EXIT_UNFINISHED, worker.describe()
    assert "burst worker gives up" in worker.output(), worker.describe()
    assert "queued=1" in worker.output(), worker.describe()
    assert Job.objects.get(id=enqueued.id).status == "queued"
