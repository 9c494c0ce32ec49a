"""Helpers for tests that run ``runscheduler`` and ``runworker`` as real subprocesses.

The ``processes`` fixture (tests/conftest.py) starts them against the test database and a queue
prefix of the test's own; these helpers wait for what a user would see: rows reaching a status,
results, how often a job body ran (the ``Execution`` ledger), messages left in SQS.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any

import boto3
from django.db import connection

from django_asyncjobs.models import Job
from django_asyncjobs.queries import NOTIFY_CHANNEL
from tests.support.processes import ManagedProcess, ProcessGroup, wait_until
from tests.testapp.models import Execution

FINAL = ("succeeded", "failed", "cancelled")
#: Generous bound for anything a running scheduler + worker should finish in a few seconds.
FLOW_TIMEOUT_SECONDS = 60.0


def _listeners() -> int:
    """Return how many database sessions listen for the scheduler's wake-up NOTIFY."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND query = %s",
            [f"LISTEN {NOTIFY_CHANNEL}"],
        )
        count: int = cursor.fetchone()[0]
    return count


def start_scheduler(processes: ProcessGroup, *args: str) -> ManagedProcess:
    """Start ``runscheduler`` and return once it listens for NOTIFY."""
    before = _listeners()
    scheduler = processes.start("runscheduler", *args)
    scheduler.wait_for_output(r"scheduler started")
    # The scheduler LISTENs after its first pass; a job enqueued before that would only be
    # found by the next poll (see the report on this race), so wait for the LISTEN itself.
    wait_until(
        lambda: _listeners() > before,
        timeout=30,
        message=lambda: f"the scheduler never LISTENed\n{scheduler.describe()}",
    )
    return scheduler


def start_worker(processes: ProcessGroup, *args: str) -> ManagedProcess:
    """Start ``runworker`` with one-second long polls (so it stops fast) and wait for it."""
    worker = processes.start("runworker", "--wait", "1", *args)
    worker.wait_for_output(r"worker started")
    return worker


def wait_for_final(
    jobs_: Iterable[Job], processes: ProcessGroup, *, timeout: float = FLOW_TIMEOUT_SECONDS
) -> dict[uuid.UUID, Job]:
    """Wait until every job reached a final status; return the fresh rows by id."""
    ids = [j.id for j in jobs_]

    def rows() -> dict[uuid.UUID, Job] | None:
        fresh = {j.id: j for j in Job.objects.filter(id__in=ids)}
        return fresh if all(j.status in FINAL for j in fresh.values()) else None

    def why() -> str:
        statuses = [f"{j.name} {j.id}: {j.status}" for j in Job.objects.filter(id__in=ids)]
        return "jobs not final:\n" + "\n".join(statuses) + "\n\n" + processes.report()

    return wait_until(rows, timeout=timeout, message=why)


def assert_succeeded(job: Job, result: Any) -> None:
    assert job.status == "succeeded", (job.status, job.error, job.traceback)
    assert job.result == result


def runs(name: str, key: str | None = None) -> int:
    """Return how often the body of test job *name* ran (with *key*, if given)."""
    executions = Execution.objects.filter(job=name)
    return executions.filter(key=key).count() if key is not None else executions.count()


def sqs_client() -> Any:
    # boto3 finds moto_server, the region and dummy credentials in the environment.
    return boto3.session.Session().client("sqs")


def messages_in(client: Any, queue_url: str) -> int:
    """Return the messages on an SQS queue, visible or not."""
    attributes = client.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def database_now() -> dt.datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        now: dt.datetime = cursor.fetchone()[0]
    return now
