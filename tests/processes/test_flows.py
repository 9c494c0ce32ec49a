"""The user-visible flow with real processes: ``runscheduler`` and ``runworker`` as subprocesses,
PostgreSQL and SQS (moto_server; the tests taking ``sqs_endpoint`` run on LocalStack as well).

Jobs are enqueued from the test process, as a view would; the subprocesses share its test
database and a queue prefix of its own. Every assertion is about what a user sees: statuses,
results, attempt counts, error texts, how often a job body ran (the ``Execution`` ledger), messages
left in SQS, exit codes and log lines.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import time
import uuid

import pytest

from django_asyncjobs.models import Job
from tests.services import MotoServer
from tests.support.flows import (
    FLOW_TIMEOUT_SECONDS,
    assert_succeeded,
    database_now,
    messages_in,
    runs,
    sqs_client,
    start_scheduler,
    start_worker,
    wait_for_final,
)
from tests.support.processes import ProcessGroup, wait_until
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


# -- tests --------------------------------------------------------------------------------------


@pytest.mark.usefixtures("sqs_endpoint")
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


@pytest.mark.usefixtures("sqs_endpoint")
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


@pytest.mark.usefixtures("sqs_endpoint")
def test_a_backlog_runs_the_higher_priority_queues_first(processes: ProcessGroup) -> None:
    lows = [jobs.low_echo.delay(f"low{i}") for i in range(5)]
    defaults = [jobs.echo.delay(key=f"default{i}") for i in range(5)]
    highs = [jobs.high_echo.delay(f"high{i}") for i in range(5)]
    # Every job is in SQS before a worker looks: a backlog in each of the three queues.
    relay = processes.run("runscheduler", "--once")
    assert relay.returncode == 0, relay.describe()
    assert "Relayed 15 job(s)." in relay.output(), relay.describe()

    start_worker(processes, "--concurrency", "1")  # --queues high,default,low: the default
    rows = wait_for_final([*lows, *defaults, *highs], processes)

    assert {row.status for row in rows.values()} == {"succeeded"}
    started = sorted(rows.values(), key=lambda row: row.started_at or dt.datetime.max)
    # Within a queue SQS keeps no order (the scheduler's MAX_QUEUED_PER_QUEUE window does that,
    # tests/integration/test_worker.py); across queues the worker keeps it.
    assert [row.queue for row in started] == ["high"] * 5 + ["default"] * 5 + ["low"] * 5


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


@pytest.mark.usefixtures("sqs_endpoint")
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


@pytest.mark.usefixtures("sqs_endpoint")
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


def test_runjobs_runs_a_scheduler_and_a_worker_and_stops_both_on_ctrl_c(
    processes: ProcessGroup,
) -> None:
    runner = processes.start("runjobs", "--concurrency", "2", "--interval", "0.5")
    runner.wait_for_output(r"scheduler started")
    runner.wait_for_output(r"worker started")
    job = jobs.add.delay(20, 22)
    assert_succeeded(wait_for_final([job], processes)[job.id], 42)
    children = _descendants(runner.pid)
    assert len(children) >= 3  # the scheduler, the worker's supervisor and its worker process
    # One Ctrl+C (SIGINT to the runner only: its children have their own session) stops both
    # gracefully and the runner exits 0.
    runner.send_signal(signal.SIGINT)
    assert runner.wait(30) == 0, runner.describe()
    assert "stopping gracefully" in runner.output() and "scheduler stopped" in runner.output()
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_runjobs_stops_the_worker_when_the_scheduler_dies(processes: ProcessGroup) -> None:
    runner = processes.start("runjobs", "--noreload")
    runner.wait_for_output(r"worker started")
    scheduler = next(pid for pid in _descendants(runner.pid) if b"runscheduler" in _cmdline(pid))
    os.kill(scheduler, signal.SIGKILL)
    assert runner.wait(30) == 128 + signal.SIGKILL, runner.describe()
    assert "a child process exited; stopping the other" in runner.output()
    assert "worker stopped" in runner.output()


def test_runjobs_restarts_both_when_a_python_file_changes(processes: ProcessGroup) -> None:
    runner = processes.start("runjobs", "--interval", "0.5")
    runner.wait_for_output(r"worker started")
    first = re.findall(
        r"runscheduler pid (\d+), runworker pid (\d+), restarting both", runner.stdout()
    )
    assert len(first) == 1, runner.describe()
    old_children = _descendants(runner.pid)
    # The watcher recorded the modules' times when runjobs started; saving one is a change.
    os.utime(jobs.__file__)

    def restarted() -> list[tuple[str, str]] | None:
        started = re.findall(r"runscheduler pid (\d+), runworker pid (\d+)", runner.stdout())
        return (
            started if len(started) == 2 and runner.output().count("worker started") == 2 else None
        )

    pids = wait_until(restarted, timeout=60, message=runner.describe)
    assert pids[1] != pids[0]
    assert "testapp/jobs.py changed; restarting." in runner.output()
    for pid in old_children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    job = jobs.add.delay(20, 22)
    assert_succeeded(wait_for_final([job], processes)[job.id], 42)
    runner.send_signal(signal.SIGINT)
    assert runner.wait(30) == 0, runner.describe()


def test_runjobs_waits_for_a_fix_when_a_child_exits(processes: ProcessGroup) -> None:
    runner = processes.start("runjobs")
    runner.wait_for_output(r"worker started")
    scheduler = next(pid for pid in _descendants(runner.pid) if b"runscheduler" in _cmdline(pid))
    os.kill(scheduler, signal.SIGKILL)  # as a syntax error just saved would end it
    runner.wait_for_output(r"waiting for a Python file to change to start them again")
    assert runner.returncode is None
    # The children are gone (a killed one may take a moment to be reaped).
    wait_until(lambda: _descendants(runner.pid) == [], timeout=10, message=runner.describe)

    def touched() -> bool:
        # Touched again until seen: a touch in the same instant as the watcher's first look
        # at the files would read as no change (a slow machine makes that likely). Looked for
        # before each touch, so that a touch seen late is not followed by a second one (which
        # would restart the children again).
        if "testapp/jobs.py changed; starting again" in runner.output():
            return True
        os.utime(jobs.__file__)
        return False

    wait_until(touched, timeout=60, message=runner.describe, interval=3)
    wait_until(
        lambda: runner.output().count("worker started") >= 2, timeout=60, message=runner.describe
    )
    runner.send_signal(signal.SIGINT)
    assert runner.wait(30) == 0, runner.describe()


def _cmdline(pid: int) -> bytes:
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        return cmdline.read()


def _descendants(pid: int) -> list[int]:
    """Return the pids of every process below *pid* (Linux /proc)."""
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as children:
            for child in map(int, children.read().split()):
                found += [child, *_descendants(child)]
    return found
