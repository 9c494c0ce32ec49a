"""Fault injection against worker processes: killed, stopped, paused, stuck.

Every test runs the real ``runscheduler`` and ``runworker`` (a supervisor and its worker
processes) against PostgreSQL and moto_server, injects one fault, and ends with
:func:`~tests.support.invariants.check_invariants`.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from django.db import connection

from django_asyncjobs.models import Job
from tests.support.flows import FLOW_TIMEOUT_SECONDS, start_scheduler, start_worker, wait_for_final
from tests.support.invariants import check_invariants, phases
from tests.support.processes import ManagedProcess, ProcessGroup, wait_until
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)

#: Stale-heartbeat threshold of the processes these tests start (heartbeats every 0.5 s).
STALE_AFTER_SECONDS = 3


@pytest.fixture
def faulty(processes: ProcessGroup) -> ProcessGroup:
    """The ``processes`` group, with a short stale-heartbeat threshold for rescues."""
    processes.env["ASYNCJOBS_TEST_STALE_AFTER"] = str(STALE_AFTER_SECONDS)
    return processes


def wait_for_start(job: Job, processes: ProcessGroup, *, runs: int = 1) -> None:
    """Wait until *job*'s body has started *runs* times."""
    wait_until(
        lambda: phases(job, "start") >= runs,
        timeout=FLOW_TIMEOUT_SECONDS,
        message=lambda: f"{job.name} never started run {runs}\n{processes.report()}",
    )


def child_pids(worker: ManagedProcess) -> list[int]:
    """Return the pids of the worker processes a ``runworker`` supervisor started."""
    pids = [int(p) for p in worker_children(worker.pid)]
    assert pids, f"runworker has no worker process\n{worker.describe()}"
    return pids


def result_pid(row: Job) -> int:
    """Return the pid of the worker process whose run of a ``ledgered`` job was recorded."""
    assert isinstance(row.result, dict), row.result
    pid: int = row.result["pid"]
    return pid


def worker_children(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return children.read().split()
    except FileNotFoundError:
        return []


def test_sigkill_of_a_worker_process_mid_job_is_recorded_and_the_job_runs_again(
    faulty: ProcessGroup,
) -> None:
    start_scheduler(faulty)
    worker = start_worker(faulty)
    job = jobs.ledgered.delay(key="k1", seconds=3)
    wait_for_start(job, faulty)
    (child,) = child_pids(worker)

    os.kill(child, signal.SIGKILL)

    row = wait_for_final([job], faulty)[job.id]
    assert row.status == "succeeded", (row.error, faulty.report())
    assert row.attempts == 2
    assert phases(job, "start") == 2 and phases(job, "finish") == 1
    assert result_pid(row) != child
    output = worker.output()
    assert f"worker process died pid={child} was killed by SIGKILL" in output
    assert "job attempt ended with its worker process" in output
    assert worker.returncode is None, "the supervisor must survive its worker process"
    check_invariants([job])


def test_a_worker_killed_outright_is_rescued_by_the_scheduler_after_its_heartbeat_stops(
    faulty: ProcessGroup,
) -> None:
    scheduler = start_scheduler(faulty)
    first = start_worker(faulty)
    job = jobs.ledgered.delay(key="k2", seconds=3)
    wait_for_start(job, faulty)

    first.kill()  # SIGKILL to the supervisor and its worker process at once
    start_worker(faulty)

    row = wait_for_final([job], faulty)[job.id]
    assert row.status == "succeeded", (row.error, faulty.report())
    assert row.attempts == 2
    assert "rescued job of a lost worker" in scheduler.output()
    check_invariants([job])


def test_an_at_most_once_job_whose_worker_died_is_failed_not_run_again(
    faulty: ProcessGroup,
) -> None:
    start_scheduler(faulty)
    worker = start_worker(faulty)
    job = jobs.ledgered_once.delay(key="k3", seconds=3)
    wait_for_start(job, faulty)

    os.kill(child_pids(worker)[0], signal.SIGKILL)

    row = wait_for_final([job], faulty)[job.id]
    assert row.status == "failed"
    assert row.error.startswith("WorkerLost: worker process")
    assert phases(job, "start") == 1
    check_invariants([job])


def test_a_job_enqueued_at_most_once_fails_when_its_worker_dies_whatever_the_code_says_now(
    faulty: ProcessGroup,
) -> None:
    # The row was written as at_most_once (say, before a deploy dropped the flag from the code,
    # or by code the supervisor does not run): the supervisor must read the row.
    start_scheduler(faulty)
    worker = start_worker(faulty)
    job = Job.objects.enqueue(
        name=jobs.ledgered.name,
        args=[],
        kwargs={"key": "k3-row", "seconds": 3},
        queue="default",
        priority=0,
        max_retries=3,
        timeout_seconds=120,
        at_most_once=True,
    )
    wait_for_start(job, faulty)

    os.kill(child_pids(worker)[0], signal.SIGKILL)

    row = wait_for_final([job], faulty)[job.id]
    assert row.status == "failed", (row.status, row.error, faulty.report())
    assert row.error.startswith("WorkerLost: worker process")
    assert phases(job, "start") == 1
    check_invariants([job])


def test_runscheduler_never_retries_an_at_most_once_job_whose_name_it_does_not_know(
    faulty: ProcessGroup,
) -> None:
    # A rolling deploy: new code enqueued and started the job, its worker vanished, and the
    # scheduler still runs the old code, which has never heard of the job.
    job = Job.objects.enqueue(
        name="billing.charge_card",
        args=[],
        kwargs={},
        queue="default",
        priority=0,
        max_retries=3,
        timeout_seconds=None,
        at_most_once=True,
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE asyncjobs_job SET status = 'running', attempts = 1, worker = 'gone:1', "
            "lease_token = gen_random_uuid(), started_at = now() - interval '1 hour', "
            "heartbeat_at = now() - interval '1 hour' WHERE id = %s",
            [job.id],
        )

    scheduler = faulty.run("runscheduler", "--once")

    assert scheduler.returncode == 0, scheduler.describe()
    row = Job.objects.get(id=job.id)
    assert row.status == "failed", (row.status, row.error, scheduler.describe())
    assert row.error.startswith("WorkerLost: no heartbeat from worker gone:1")
    assert "rescued job of a lost worker name=billing.charge_card" in scheduler.output()


def test_sigterm_lets_a_job_finish_within_the_grace_period(faulty: ProcessGroup) -> None:
    start_scheduler(faulty)
    worker = start_worker(faulty, "--grace", "10")
    job = jobs.ledgered.delay(key="k4", seconds=2)
    wait_for_start(job, faulty)

    assert worker.stop(timeout=30) == 0

    row = Job.objects.get(id=job.id)
    assert row.status == "succeeded" and row.attempts == 1 and row.interruptions == 0
    check_invariants([job])


def test_sigterm_beyond_the_grace_period_hands_the_job_back_without_using_an_attempt(
    faulty: ProcessGroup,
) -> None:
    start_scheduler(faulty)
    worker = start_worker(faulty, "--grace", "1")
    job = jobs.ledgered.delay(key="k5", seconds=6)
    wait_for_start(job, faulty)

    began = time.monotonic()
    assert worker.stop(timeout=30) == 0
    assert time.monotonic() - began < 8, "the worker outstayed grace + hand-back"
    handed = Job.objects.get(id=job.id)
    assert handed.status in ("scheduled", "queued"), handed.status
    assert handed.interruptions == 1 and handed.attempts == 0
    assert "interrupted: worker" in handed.error
    assert "job handed back" in worker.output()

    start_worker(faulty)
    row = wait_for_final([job], faulty)[job.id]
    assert row.status == "succeeded" and row.attempts == 1 and row.interruptions == 1
    check_invariants([job])


def test_a_second_sigterm_hands_the_job_back_at_once(faulty: ProcessGroup) -> None:
    start_scheduler(faulty)
    worker = start_worker(faulty, "--grace", "60")
    job = jobs.ledgered.delay(key="k6", seconds=30)
    wait_for_start(job, faulty)

    worker.send_signal(signal.SIGTERM)
    worker.wait_for_output("running jobs may finish")
    began = time.monotonic()
    assert worker.stop(timeout=30) == 0
    assert time.monotonic() - began < 10
    assert Job.objects.get(id=job.id).interruptions == 1

    start_worker(faulty)
    row = wait_for_final([job], faulty, timeout=90)[job.id]
    assert row.status == "succeeded"
    check_invariants([job])


@pytest.mark.parametrize("how", ["sleep", "gil"])
def test_a_stuck_sync_job_is_stopped_at_its_timeout_and_the_worker_goes_on(
    faulty: ProcessGroup, how: str
) -> None:
    start_scheduler(faulty)
    worker = start_worker(faulty)
    stuck = jobs.stuck.delay(key=f"stuck-{how}", how=how)
    wait_for_start(stuck, faulty)
    began = time.monotonic()
    after = jobs.ledgered.delay(key=f"after-{how}")

    rows = wait_for_final([stuck, after], faulty)
    assert rows[after.id].status == "succeeded"
    # "sleep": the worker process records the timeout and retires; "gil": the process cannot
    # run at all, so the supervisor kills it 5 s after the timeout.
    assert time.monotonic() - began < 20
    row = rows[stuck.id]
    assert row.status == "succeeded", (row.error, faulty.report())
    assert row.attempts == 2
    assert phases(stuck, "finish") == 1
    assert worker.returncode is None
    if how == "gil":
        assert "killing worker process" in worker.output()
    else:
        assert "retires and is replaced" in worker.output()
    check_invariants([stuck, after])


def test_a_stuck_async_job_is_cancelled_at_its_timeout(faulty: ProcessGroup) -> None:
    start_scheduler(faulty)
    start_worker(faulty)
    job = jobs.async_stuck.delay(key="async-stuck")
    row = wait_for_final([job], faulty)[job.id]
    assert row.status == "succeeded" and row.attempts == 2
    assert phases(job, "start") == 2 and phases(job, "finish") == 1
    check_invariants([job])


def test_a_job_longer_than_the_visibility_timeout_runs_once(faulty: ProcessGroup) -> None:
    start_scheduler(faulty)
    start_worker(faulty, "--concurrency", "2")
    start_worker(faulty, "--concurrency", "2")
    # Tests run with a 5 s visibility timeout; nothing depends on it once the job is claimed.
    job = jobs.ledgered.delay(key="long", seconds=8)
    row = wait_for_final([job], faulty)[job.id]
    assert row.status == "succeeded" and row.attempts == 1
    assert phases(job, "start") == 1
    check_invariants([job])


def test_a_zombie_worker_cannot_overwrite_the_attempt_that_replaced_it(
    faulty: ProcessGroup,
) -> None:
    scheduler = start_scheduler(faulty)
    zombie = start_worker(faulty)
    job = jobs.ledgered.delay(key="zombie", seconds=4)
    wait_for_start(job, faulty)
    (zombie_child,) = child_pids(zombie)

    zombie.send_signal(signal.SIGSTOP)  # the supervisor and its worker process
    try:
        wait_until(
            lambda: "rescued job of a lost worker" in scheduler.output(),
            timeout=30,
            message=lambda: f"no rescue\n{faulty.report()}",
        )
        start_worker(faulty)
        row = wait_for_final([job], faulty)[job.id]
    finally:
        zombie.send_signal(signal.SIGCONT)
    assert row.status == "succeeded" and row.attempts == 2
    winner = result_pid(row)
    assert winner != zombie_child

    # The zombie wakes, finishes attempt 1 and tries to record it: the lease fences it off.
    zombie.wait_for_output("lease lost; outcome discarded", timeout=30)
    row.refresh_from_db()
    assert result_pid(row) == winner and row.attempts == 2
    assert phases(job, "finish") == 2  # at least once: the body did run twice
    check_invariants([job])
