"""Cancelling a running job, with real ``runscheduler`` and ``runworker`` processes.

An operator cancels through the CLI (``manage.py asyncjobs cancel`` as a subprocess), the admin
(an admin client's POST) or the HTTP API (a bearer token). Each test checks what the operator
sees: the answer at the time of the request, then the row ending ``cancelled`` with who asked,
the attempt history, and how far the job's body got (the ``Execution`` ledger): a cancelled job
is stopped, and never run again although it has retries left.
"""

from __future__ import annotations

import pytest
from django.test import Client

from django_asyncjobs.models import Job, JobAttempt
from tests.support.admin import staff
from tests.support.flows import FLOW_TIMEOUT_SECONDS, start_scheduler, start_worker, wait_for_final
from tests.support.invariants import check_invariants, phases
from tests.support.operators import bearer_headers
from tests.support.processes import ProcessGroup, wait_until
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def wait_for_start(job: Job, processes: ProcessGroup) -> None:
    """Wait until *job*'s body has started (its row is running and its code recorded it)."""
    wait_until(
        lambda: phases(job, "start") >= 1,
        timeout=FLOW_TIMEOUT_SECONDS,
        message=lambda: f"{job.name} never started\n{processes.report()}",
    )


def assert_cancelled_once(row: Job, *, by: str) -> JobAttempt:
    """Assert *row* ended cancelled by *by* after one attempt, its body cut short; return the
    attempt."""
    assert row.status == "cancelled", (row.status, row.error, row.traceback)
    assert row.cancel_requested_by == by
    assert row.cancel_requested_at is not None and row.finished_at is not None
    assert row.error.startswith(f"JobCancelled: cancel requested by {by}"), row.error
    assert row.attempts == 1  # not retried, though it had retries left
    assert phases(row, "start") == 1 and phases(row, "finish") == 0
    (attempt,) = JobAttempt.objects.filter(job=row)
    assert attempt.outcome == "cancelled"
    assert attempt.finished_at is not None
    return attempt


def test_a_running_async_job_is_cancelled_within_seconds_of_the_cli_command(
    processes: ProcessGroup,
) -> None:
    # Heartbeats every 30 s: only the NOTIFY of the cancel can explain a stop within seconds.
    processes.env["ASYNCJOBS_TEST_HEARTBEAT_INTERVAL"] = "30"
    processes.env["ASYNCJOBS_TEST_STALE_AFTER"] = "120"
    start_scheduler(processes)
    worker = start_worker(processes)
    job = jobs.async_waits.delay("cli", seconds=60)
    wait_for_start(job, processes)

    command = processes.run("asyncjobs", "cancel", str(job.id)[:8], "--by", "ops-alice")
    row = wait_for_final([job], processes)[job.id]

    assert command.returncode == 0, command.describe()
    assert f"{job.id} cancel requested ({job.name}): running on" in command.output()
    attempt = assert_cancelled_once(row, by="ops-alice")
    # From the request's commit to the end of the attempt, by the database's clock.
    assert row.cancel_requested_at is not None and row.finished_at is not None
    took = (row.finished_at - row.cancel_requested_at).total_seconds()
    assert took < 2, f"the async job took {took:.1f}s to stop\n{processes.report()}"
    assert attempt.error == "JobCancelled: cancel requested by ops-alice"
    assert "cancel requested name=tests.cancel.async_waits" in worker.output()
    assert f"job cancelled name=tests.cancel.async_waits id={job.id}" in worker.output()
    check_invariants([job])

    # Cancelling it again is refused: it has finished.
    again = processes.run("asyncjobs", "cancel", str(job.id))
    assert again.returncode == 1
    assert "is cancelled; only scheduled, queued or running jobs can be cancelled" in (
        again.output()
    )


def test_a_sync_job_that_reports_progress_stops_when_cancelled_in_the_admin(
    processes: ProcessGroup,
) -> None:
    start_scheduler(processes)
    start_worker(processes)
    job = jobs.reports_progress.delay("admin")
    wait_until(
        lambda: (Job.objects.get(id=job.id).progress or {}).get("done", 0) >= 2,
        timeout=FLOW_TIMEOUT_SECONDS,
        message=lambda: f"no progress reported\n{processes.report()}",
    )
    client = staff("view_job", "cancel_job", username="alice")
    data = {"action": "cancel_jobs", "_selected_action": [str(job.id)]}

    confirm = client.post("/admin/django_asyncjobs/job/", data).content.decode()
    done = client.post(
        "/admin/django_asyncjobs/job/", {**data, "confirmed": "yes"}, follow=True
    ).content.decode()
    row = wait_for_final([job], processes, timeout=30)[job.id]

    assert "Running jobs are not stopped at once" in confirm
    assert "0 job(s) cancelled; 1 running: cancel requested, its worker stops it." in done
    attempt = assert_cancelled_once(row, by="alice")
    # The progress report after the request raised JobCancelled inside the job.
    assert attempt.error == "JobCancelled: cancel requested by alice"
    assert "report_progress" in row.traceback and "JobCancelled" in row.traceback
    assert row.progress is not None and row.progress["done"] < 600
    detail = client.get(f"/admin/django_asyncjobs/job/{job.id}/change/").content.decode()
    assert "by alice at" in detail
    check_invariants([job])


def test_a_sync_job_that_checks_ends_cancelled_when_cancelled_over_the_api(
    processes: ProcessGroup,
) -> None:
    start_scheduler(processes)
    start_worker(processes)
    job = jobs.checks_cancel.delay("api")
    wait_for_start(job, processes)
    auth = bearer_headers("cancel_job", username="deploy-bot")

    answer = Client().post(f"/api/jobs/{job.id}/cancel", headers=auth)
    repeated = Client().post(f"/api/jobs/{job.id}/cancel", headers=auth)
    row = wait_for_final([job], processes, timeout=30)[job.id]
    after = Client().post(f"/api/jobs/{job.id}/cancel", headers=auth)

    assert answer.status_code == 202, answer.content
    assert answer.json()["status"] == "running"
    assert answer.json()["cancel_requested_by"] == "deploy-bot"
    assert answer.json()["cancel_requested_at"] is not None
    # While it runs, asking again answers the same; once it has ended, it is a conflict.
    assert repeated.status_code in (202, 409) and after.status_code == 409
    # The job saw the request and returned early: that is a cancel, not a success.
    assert_cancelled_once(row, by="deploy-bot")
    assert row.result is None
    check_invariants([job])


def test_a_sync_job_that_ignores_the_cancel_ends_cancelled_at_its_timeout(
    processes: ProcessGroup,
) -> None:
    start_scheduler(processes)
    worker = start_worker(processes)
    job = jobs.ignores_cancel.delay("timeout", seconds=60)
    wait_for_start(job, processes)

    # From Python (the CLI takes seconds to start on a busy machine: the 4 s timeout could
    # pass first).
    requested = Job.objects.cancel(job.id, by="bob")
    row = wait_for_final([job], processes, timeout=30)[job.id]

    assert requested is not None and requested.status == "running"
    attempt = assert_cancelled_once(row, by="bob")
    assert attempt.error.startswith("JobTimeout: timed out after 4 s"), attempt.error
    assert row.error == (
        f"JobCancelled: cancel requested by bob; the attempt ended with {attempt.error}"
    )
    # The worker learned of the request, but a def job cannot be interrupted: it ran on until
    # its timeout, and then ended cancelled (not retried, though it has retries left).
    assert row.started_at is not None and row.finished_at is not None
    assert row.cancel_requested_at is not None
    assert (row.finished_at - row.started_at).total_seconds() >= 4
    assert row.finished_at > row.cancel_requested_at
    log = worker.output()
    told = log.index(f"cancel requested name=tests.cancel.ignores id={job.id} by=bob")
    assert "it stops at its next check or progress report, or at its timeout" in log
    assert told < log.index(f"job timed out name=tests.cancel.ignores id={job.id}")
    check_invariants([job])


def test_the_rescue_of_a_lost_workers_job_with_a_cancel_request_cancels_it(
    processes: ProcessGroup,
) -> None:
    processes.env["ASYNCJOBS_TEST_STALE_AFTER"] = "3"
    start_scheduler(processes)
    worker = start_worker(processes)
    # A def job with a 120 s timeout that never checks: its worker cannot stop it in time.
    job = jobs.ledgered.delay("lost", seconds=60)
    wait_for_start(job, processes)

    command = processes.run("asyncjobs", "cancel", str(job.id), "--by", "carol")
    worker.kill()  # the supervisor and its worker process: nobody records the attempt
    row = wait_for_final([job], processes, timeout=30)[job.id]

    assert command.returncode == 0 and "cancel requested" in command.output()
    attempt = assert_cancelled_once(row, by="carol")
    assert attempt.error.startswith("WorkerLost: no heartbeat from worker"), attempt.error
    assert row.error.startswith("JobCancelled: cancel requested by carol; the attempt ended with")
    check_invariants([job])
