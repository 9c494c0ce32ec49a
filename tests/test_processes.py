"""The user-visible flow with real processes: ``runscheduler`` and ``runworker`` as subprocesses,
PostgreSQL and moto_server.

Jobs are enqueued from the test process, as a view would; the subprocesses share its test
database and a queue prefix of its own. Every assertion is about what a user sees: statuses,
results, attempt counts, error texts, how often a job body ran (the ``Execution`` ledger), messages
left in SQS, exit codes and log lines.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import signal
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from django.db import connection

from django_asyncjobs.models import Job
from django_asyncjobs.queries import NOTIFY_CHANNEL
from tests.processes import ManagedProcess, ProcessGroup, subprocess_env, wait_until
from tests.services import MotoServer
from tests.testapp import jobs
from tests.testapp.models import Execution

pytestmark = [pytest.mark.processes, pytest.mark.django_db(transaction=True)]

FINAL = ("succeeded", "failed", "cancelled")
#: Generous bound for anything a running scheduler + worker should finish in a few seconds.
FLOW_TIMEOUT_SECONDS = 60.0


@pytest.fixture
def processes(transactional_db: None, queue_prefix: str, tmp_path: Path) -> Iterator[ProcessGroup]:
    """Start management commands for one test; stop them all afterwards, even if it failed."""
    group = ProcessGroup(env=subprocess_env(queue_prefix=queue_prefix), log_dir=tmp_path)
    try:
        yield group
    finally:
        problems = group.close()
        # pytest shows a test's captured output only when it fails: that is when it is wanted.
        for problem in problems:
            print(problem)
        print(group.report())


# -- helpers ------------------------------------------------------------------------------------


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


# -- tests --------------------------------------------------------------------------------------


def test_enqueued_jobs_run_to_success_and_processes_stop_cleanly(
    processes: ProcessGroup,
) -> None:
    scheduler = start_scheduler(processes)
    worker = start_worker(processes, "--concurrency", "4")

    sums = {i: jobs.add.delay(i, i) for i in range(4)}
    delayed = jobs.add.using(run_after=2).delay(100, 1)
    # A decorated class gains delay() at run time, which mypy cannot see.
    hello = jobs.SayHello.delay(name="Ada")  # type: ignore[attr-defined]
    async_sum = jobs.async_add.delay(20, 22)
    assert {j.status for j in [*sums.values(), delayed, hello, async_sum]} == {"scheduled"}

    rows = wait_for_final([*sums.values(), delayed, hello, async_sum], processes)

    for i, enqueued in sums.items():
        assert_succeeded(rows[enqueued.id], 2 * i)
    assert_succeeded(rows[hello.id], "Hello, Ada!")
    assert_succeeded(rows[async_sum.id], 42)
    late = rows[delayed.id]
    assert_succeeded(late, 101)
    assert late.run_at - late.created_at >= dt.timedelta(seconds=2)
    assert late.started_at is not None
    assert late.started_at >= late.run_at, "the delayed job started before its run_at"
    assert {row.attempts for row in rows.values()} == {1}
    # Each body ran exactly once.
    assert runs("add") == 5
    assert runs("SayHello", "Ada") == 1

    assert scheduler.stop() == 0, scheduler.describe()
    assert worker.stop() == 0, worker.describe()
    log = worker.output()
    name, job_id = re.escape(jobs.add.name), late.id
    assert re.search(rf"job started name={name} id={job_id} attempt=1 queue=default", log), log
    assert re.search(rf"job succeeded name={name} id={job_id} attempt=1 duration=\d+\.\d+s", log), (
        log
    )
    assert "SIGTERM received" in scheduler.output()
    assert "worker stopped" in log


def test_a_new_job_wakes_the_idle_scheduler_through_notify(processes: ProcessGroup) -> None:
    # With a 30 s poll interval, only the NOTIFY sent by delay() can explain a quick relay.
    start_scheduler(processes, "--interval", "30")
    start_worker(processes)

    # Three in a row: the first pass after start-up, and the scheduler idle again after each.
    latencies = [_seconds_to_start(processes, value=n) for n in range(3)]
    # Generous: this is a wake-up check; benchmarks measure the real figure.
    assert max(latencies) < 10, latencies


def _seconds_to_start(processes: ProcessGroup, *, value: int) -> float:
    """Enqueue an echo job; return how long it took to start, once it has succeeded."""
    started = time.monotonic()
    enqueued = jobs.echo.delay(value, key=f"latency-{value}")
    wait_until(
        lambda: Job.objects.filter(id=enqueued.id, status__in=["running", "succeeded"]).exists(),
        timeout=FLOW_TIMEOUT_SECONDS,
        message=lambda: f"job {value} never started\n{processes.report()}",
    )
    latency = time.monotonic() - started
    row = wait_for_final([enqueued], processes)[enqueued.id]
    assert_succeeded(row, value)
    assert row.enqueued_at is not None
    relay_seconds = (row.enqueued_at - row.created_at).total_seconds()
    assert relay_seconds < 5, f"job {value} waited {relay_seconds:.2f}s for the scheduler"
    return latency


def test_retries_happen_across_processes_until_success_or_exhaustion(
    processes: ProcessGroup,
) -> None:
    start_scheduler(processes)
    worker = start_worker(processes, "--concurrency", "2")
    flaky_key, doomed_key = f"flaky-{uuid.uuid4().hex}", f"doomed-{uuid.uuid4().hex}"

    flaky = jobs.fails_then_succeeds.delay(key=flaky_key, failures=2)
    doomed = jobs.always_fails.delay(key=doomed_key)
    rows = wait_for_final([flaky, doomed], processes)

    recovered = rows[flaky.id]
    assert_succeeded(recovered, "ok after 3")
    assert recovered.attempts == 3
    assert runs("fails_then_succeeds", flaky_key) == 3

    failed = rows[doomed.id]
    assert failed.status == "failed"
    assert failed.attempts == 3  # max_retries=2: the first attempt and two retries
    assert failed.error == f"ValueError: boom {doomed_key}"
    assert "Traceback (most recent call last)" in failed.traceback
    assert f"ValueError: boom {doomed_key}" in failed.traceback
    assert failed.finished_at is not None
    assert runs("always_fails", doomed_key) == 3

    log = worker.output()
    flaky_retries = re.findall(rf"job retrying name=\S+ id={flaky.id} attempt=(\d)", log)
    assert flaky_retries == ["1", "2"], log
    assert re.search(rf"job failed name=\S+ id={doomed.id} attempt=3 .*boom", log), log


def test_enqueue_works_while_sqs_is_down_and_the_job_runs_once_it_is_back(
    processes: ProcessGroup, moto_server: MotoServer
) -> None:
    moto_server.pause()
    try:
        started = time.monotonic()
        enqueued = jobs.add.delay(7, 8)
        enqueue_seconds = time.monotonic() - started
        assert enqueue_seconds < 1, f"delay() took {enqueue_seconds:.2f}s while SQS was down"
        assert Job.objects.get(id=enqueued.id).status == "scheduled"

        started = time.monotonic()
        relay = processes.run("runscheduler", "--once", timeout=90)
        relay_seconds = time.monotonic() - started
        assert relay.returncode != 0, relay.describe()
        assert "could not relay jobs" in relay.output(), relay.describe()
        assert "SQS" in relay.output(), relay.describe()
        assert relay_seconds < 60, f"runscheduler --once took {relay_seconds:.0f}s to give up"
        # The failed relay changed nothing: the job waits to be sent again.
        row = Job.objects.get(id=enqueued.id)
        assert (row.status, row.dispatch_token, row.attempts) == ("scheduled", None, 0)
    finally:
        moto_server.resume()

    relay = processes.run("runscheduler", "--once")
    assert relay.returncode == 0, relay.describe()
    assert "Relayed 1 job(s)." in relay.output()
    assert Job.objects.get(id=enqueued.id).status == "queued"

    worker = processes.run("runworker", "--burst", "--wait", "1")
    assert worker.returncode == 0, worker.describe()
    assert_succeeded(Job.objects.get(id=enqueued.id), 15)
    assert runs("add", "7+8") == 1


def test_sigterm_lets_the_running_job_finish_before_the_worker_exits(
    processes: ProcessGroup,
) -> None:
    start_scheduler(processes)
    worker = start_worker(processes)
    key = f"slow-{uuid.uuid4().hex}"
    slow = jobs.slow_job.delay(3, key=key)
    wait_until(
        lambda: Job.objects.filter(id=slow.id, status="running").exists(),
        timeout=FLOW_TIMEOUT_SECONDS,
        message=lambda: f"the slow job never started\n{processes.report()}",
    )

    stopped_at = database_now()
    worker.send_signal(signal.SIGTERM)
    # Enqueued after the SIGTERM: the stopping worker must leave it for another worker.
    after = jobs.add.delay(40, 2)

    assert worker.wait(30) == 0, worker.describe()
    row = Job.objects.get(id=slow.id)
    assert_succeeded(row, "slept 3s")
    assert row.finished_at is not None and row.finished_at > stopped_at, (
        "the job finished before the SIGTERM: the test did not stop the worker mid-job"
    )
    assert runs("slow_job", key) == 1
    assert "SIGTERM received; running jobs may finish" in worker.output()

    late = Job.objects.get(id=after.id)
    assert late.status in ("scheduled", "queued"), late.status
    assert (late.attempts, late.started_at) == (0, None)
    # Nothing was lost: once relayed, the next worker runs it.
    wait_until(
        lambda: Job.objects.filter(id=after.id, status="queued").exists(),
        timeout=FLOW_TIMEOUT_SECONDS,
        message=lambda: f"the job enqueued after SIGTERM was never relayed\n{processes.report()}",
    )
    next_worker = processes.run("runworker", "--burst", "--wait", "1")
    assert next_worker.returncode == 0, next_worker.describe()
    assert_succeeded(Job.objects.get(id=after.id), 42)


def test_a_duplicated_message_runs_the_job_once(processes: ProcessGroup, queue_prefix: str) -> None:
    key = f"dup-{uuid.uuid4().hex}"
    enqueued = jobs.echo.delay("once", key=key)
    relay = processes.run("runscheduler", "--once")
    assert relay.returncode == 0, relay.describe()
    queued = Job.objects.get(id=enqueued.id)
    assert queued.status == "queued" and queued.dispatch_token is not None

    client = sqs_client()
    queue_url = client.get_queue_url(QueueName=f"{queue_prefix}default")["QueueUrl"]
    body = json.dumps({"v": 1, "job": str(queued.id), "d": str(queued.dispatch_token)})
    client.send_message(QueueUrl=queue_url, MessageBody=body)
    assert messages_in(client, queue_url) == 2

    worker = processes.run("runworker", "--burst", "--wait", "1")
    assert worker.returncode == 0, worker.describe()
    assert_succeeded(Job.objects.get(id=enqueued.id), "once")
    assert runs("echo", key) == 1
    assert messages_in(client, queue_url) == 0
    assert f"dropping message job_id={queued.id}" in worker.output()

    # A copy arriving after the job finished is dropped too.
    client.send_message(QueueUrl=queue_url, MessageBody=body)
    worker = processes.run("runworker", "--burst", "--wait", "1")
    assert worker.returncode == 0, worker.describe()
    assert runs("echo", key) == 1
    assert messages_in(client, queue_url) == 0
    row = Job.objects.get(id=enqueued.id)
    assert (row.status, row.attempts) == ("succeeded", 1)
