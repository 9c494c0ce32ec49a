"""Cancelling a running job, in-process: the operator's request on the row, how each way an
attempt ends honours it, the job's context, and the admin, CLI and HTTP API answers. The same
flows run with real processes in tests/processes/test_cancel_running.py.
"""

from __future__ import annotations

import asyncio
import functools
import io
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from django.test import Client

from django_asyncjobs import JobCancelled, cancel_requested, report_progress, retry
from django_asyncjobs.context import CancelRequest, JobContext, running
from django_asyncjobs.execution import run_async, run_sync
from django_asyncjobs.models import Job, JobAttempt
from django_asyncjobs.retry import Backoff, Ending
from django_asyncjobs.scheduler import Scheduler
from django_asyncjobs.signals import job_cancelled
from django_asyncjobs.transports.memory import MemoryTransport
from tests.support.admin import staff
from tests.support.ledger import age_heartbeat, claimed
from tests.support.operators import bearer_headers
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def cancelled_signals() -> Iterator[list[Job]]:
    sent: list[Job] = []

    def receiver(sender: Any, job: Job, **kwargs: Any) -> None:
        sent.append(job)

    job_cancelled.connect(receiver)
    try:
        yield sent
    finally:
        job_cancelled.disconnect(receiver)


def end(running_row: Job, ending: Ending, error: str) -> Job | None:
    """End the attempt of *running_row* as the worker, supervisor or scheduler would."""
    assert running_row.lease_token is not None
    return Job.objects.end_attempt(
        job=running_row,
        lease_token=running_row.lease_token,
        decide=functools.partial(retry.decide, ending=ending, backoff=Backoff.fixed(0)),
        error=error,
    )


# -- the request ------------------------------------------------------------------------------


def test_cancelling_a_running_job_requests_it_once_and_records_who() -> None:
    row = claimed(jobs.ledgered.delay(key="request"))

    requested = Job.objects.cancel(row.id, by="alice")
    again = Job.objects.cancel(row.id, by="bob")

    assert requested is not None and requested.status == "running"
    assert requested.cancel_requested_by == "alice" and requested.cancel_requested_at is not None
    assert requested.lease_token == row.lease_token  # the worker keeps its lease
    assert again is None  # two operators acting at once change the job once
    assert Job.objects.get(id=row.id).cancel_requested_by == "alice"
    assert row.lease_token is not None
    reply = Job.objects.heartbeat([(row.id, row.lease_token)])
    assert reply.lost == set() and reply.cancel_requests == {row.id: "alice"}


def test_a_heartbeat_without_a_request_reports_none() -> None:
    row = claimed(jobs.ledgered.delay(key="quiet"))
    assert row.lease_token is not None
    assert Job.objects.heartbeat([(row.id, row.lease_token)]).cancel_requests == {}


def test_cancelling_a_job_that_has_not_started_records_who_and_finishes_it(
    cancelled_signals: list[Job],
) -> None:
    job = jobs.add.using(run_after=3600).delay(1, 2)
    row = Job.objects.cancel(job.id, by="alice")
    assert row is not None and row.status == "cancelled" and row.finished_at is not None
    assert row.cancel_requested_by == "alice"
    assert [j.id for j in cancelled_signals] == [job.id]
    assert Job.objects.cancel(job.id, by="bob") is None


# -- every way an attempt ends -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ending", "error"),
    [
        (Ending.FAILED, "JobCancelled: cancel requested by alice"),
        (Ending.FAILED, "JobTimeout: timed out after 4 s"),
        (Ending.FAILED, "RuntimeError: it broke meanwhile"),
        (Ending.LOST, "WorkerLost: no heartbeat from worker w1"),
        (Ending.INTERRUPTED, "interrupted: worker w1 shut down during attempt 1"),
    ],
)
def test_an_attempt_that_ends_after_the_request_cancels_the_job_with_retries_left(
    ending: Ending, error: str, cancelled_signals: list[Job]
) -> None:
    row = claimed(jobs.ledgered.delay(key=f"end-{ending.value}"))  # max_retries=3
    Job.objects.cancel(row.id, by="alice")

    # The caller's copy (the claim's) predates the request: the fence makes it decide again.
    stored = end(row, ending, error)

    assert stored is not None and stored.status == "cancelled"
    assert stored.finished_at is not None and stored.lease_token is None
    assert stored.attempts == 1 and stored.interruptions == 0
    expected = "JobCancelled: cancel requested by alice"
    if not error.startswith("JobCancelled"):
        expected += f"; the attempt ended with {error}"
    assert stored.error == expected
    (attempt,) = JobAttempt.objects.filter(job_id=row.id)
    assert (attempt.outcome, attempt.error) == ("cancelled", error)
    assert [j.id for j in cancelled_signals] == [row.id]


def test_without_a_request_an_attempt_ends_as_before() -> None:
    row = claimed(jobs.ledgered.delay(key="no-request"))
    stored = end(row, Ending.FAILED, "JobCancelled: raised by the job itself")
    assert stored is not None and stored.status == "scheduled"  # retried: nobody cancelled it


def test_a_success_after_the_request_stands() -> None:
    row = claimed(jobs.ledgered.delay(key="success"))
    Job.objects.cancel(row.id, by="alice")
    assert row.lease_token is not None
    stored = Job.objects.record_success(job_id=row.id, lease_token=row.lease_token, result=7)
    assert stored is not None and (stored.status, stored.result) == ("succeeded", 7)
    assert stored.cancel_requested_by == "alice"  # the admin says the request came too late


def test_the_rescue_of_a_lost_workers_job_with_a_request_cancels_it() -> None:
    row = claimed(jobs.ledgered.delay(key="rescue"))
    Job.objects.cancel(row.id, by="alice")
    age_heartbeat(row, 600)
    scheduler = Scheduler(transport=MemoryTransport())
    scheduler._database_ok_since = time.monotonic() - 3600  # up long enough to judge workers

    assert scheduler.rescue_stalled() == 1
    stored = Job.objects.get(id=row.id)
    assert stored.status == "cancelled" and stored.attempts == 1
    assert stored.error.startswith("JobCancelled: cancel requested by alice; the attempt ended")


def test_retrying_a_cancelled_job_clears_its_request() -> None:
    row = claimed(jobs.ledgered.delay(key="retry"))
    Job.objects.cancel(row.id, by="alice")
    end(row, Ending.FAILED, "JobCancelled: cancel requested by alice")

    retried = Job.objects.retry(row.id)

    assert retried is not None and retried.status == "scheduled"
    assert retried.cancel_requested_at is None and retried.cancel_requested_by == ""
    again = claimed(retried)
    assert end(again, Ending.FAILED, "RuntimeError: x") is not None
    assert Job.objects.get(id=row.id).status == "scheduled"  # a plain retry, not cancelled


# -- the job's context -----------------------------------------------------------------------------


def context_of(row: Job) -> tuple[JobContext, CancelRequest]:
    request = CancelRequest()
    return JobContext.for_job(row, cancel=request), request


def test_outside_a_worker_nothing_is_cancelled() -> None:
    assert cancel_requested() is False


def test_a_sync_job_learns_of_the_request_from_its_check_and_its_progress_report() -> None:
    row = claimed(jobs.ledgered.delay(key="context"))
    context, request = context_of(row)
    with running(context):
        assert cancel_requested() is False
        assert report_progress(1, 10) is True
        request.request("alice")
        assert cancel_requested() is True
        with pytest.raises(JobCancelled, match="cancel requested by alice"):
            report_progress(2, 10)
    assert Job.objects.get(id=row.id).progress["done"] == 1  # type: ignore[index]


def test_a_sync_job_that_was_told_and_returned_is_cancelled_and_one_not_told_succeeded() -> None:
    definition = jobs.checks_cancel  # returns early once cancel_requested() says so
    row = claimed(definition.delay("told", seconds=5))
    context, request = context_of(row)
    request.request("alice")
    outcome = run_sync(definition, row.args, row.kwargs, context=context)
    assert not outcome.ok and outcome.error == "JobCancelled: cancel requested by alice"

    # A job that finished before it could learn of a request has succeeded.
    untold = claimed(jobs.echo.delay(5))
    context, request = context_of(untold)
    request.request("alice")
    outcome = run_sync(jobs.echo, untold.args, untold.kwargs, context=context)
    assert outcome.ok and outcome.result == 5


def test_an_async_job_is_cancelled_at_its_current_await() -> None:
    row = claimed(jobs.async_waits.delay("await", seconds=60))
    context, request = context_of(row)

    async def cancel_soon() -> Any:
        task = asyncio.ensure_future(
            run_async(jobs.async_waits, row.args, row.kwargs, timeout_seconds=120, context=context)
        )
        await asyncio.sleep(0.5)
        started = time.monotonic()
        # The request is set from another thread, as the heartbeat thread sets it.
        await asyncio.get_running_loop().run_in_executor(None, request.request, "alice")
        outcome = await task
        seconds = time.monotonic() - started
        # The job reached the ORM through sync_to_async's thread: close what it opened there.
        await sync_to_async(connections.close_all)()
        return outcome, seconds

    outcome, seconds = asyncio.run(cancel_soon())

    assert not outcome.ok and outcome.error == "JobCancelled: cancel requested by alice"
    assert seconds < 1


# -- the operator surfaces ---------------------------------------------------------------------


def cli(*args: str) -> str:
    out = io.StringIO()
    call_command("asyncjobs", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_the_cli_says_what_it_did_for_each_job_and_records_who() -> None:
    waiting = jobs.add.using(run_after=3600).delay(1, 1)
    row = claimed(jobs.ledgered.delay(key="cli"))

    cancelled = cli("cancel", str(waiting.id), "--by", "ops")
    requested = cli("cancel", str(row.id))
    already = cli("cancel", str(row.id), "--by", "someone-else")

    assert f"{waiting.id} cancelled" in cancelled
    assert Job.objects.get(id=waiting.id).cancel_requested_by == "ops"
    assert f"{row.id} cancel requested (tests.ledgered): running on w1" in requested
    by = Job.objects.get(id=row.id).cancel_requested_by
    assert by and by != "someone-else"  # the user running the command
    assert f"{row.id} cancel already requested (tests.ledgered) by {by} at" in already
    with pytest.raises(CommandError, match="is cancelled; only scheduled, queued or running"):
        cli("cancel", str(waiting.id))
    with pytest.raises(CommandError, match="not a name of 1 to 255 characters"):
        cli("cancel", str(row.id), "--by", " ")


def test_the_api_answers_200_for_a_cancel_202_for_a_request_and_409_when_finished() -> None:
    client, auth = Client(), bearer_headers("cancel_job", username="deploy-bot")
    waiting = jobs.add.using(run_after=3600).delay(1, 1)
    row = claimed(jobs.ledgered.delay(key="api"))

    cancelled = client.post(f"/api/jobs/{waiting.id}/cancel", headers=auth)
    requested = client.post(f"/api/jobs/{row.id}/cancel", headers=auth)
    repeated = client.post(f"/api/jobs/{row.id}/cancel", headers=auth)
    end(row, Ending.FAILED, "JobCancelled: cancel requested by deploy-bot")
    finished = client.post(f"/api/jobs/{row.id}/cancel", headers=auth)

    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["cancel_requested_by"] == "deploy-bot"
    assert requested.status_code == 202 and requested.json()["status"] == "running"
    assert requested.json()["cancel_requested_by"] == "deploy-bot"
    assert requested.json()["cancel_requested_at"] is not None
    assert repeated.status_code == 202 and repeated.json() == requested.json()
    assert finished.status_code == 409
    assert "the job is cancelled; only scheduled, queued or running" in finished.json()["error"]
    assert client.post(f"/api/jobs/{uuid.uuid4()}/cancel", headers=auth).status_code == 404


def test_the_admin_action_requests_the_cancel_of_running_jobs() -> None:
    client = staff("view_job", "cancel_job", username="alice")
    waiting = jobs.add.using(run_after=3600).delay(1, 1)
    row = claimed(jobs.ledgered.delay(key="admin"))
    data = {"action": "cancel_jobs", "_selected_action": [str(waiting.id), str(row.id)]}

    confirm = client.post("/admin/django_asyncjobs/job/", data).content.decode()
    done = client.post(
        "/admin/django_asyncjobs/job/", {**data, "confirmed": "yes"}, follow=True
    ).content.decode()
    again = client.post(
        "/admin/django_asyncjobs/job/",
        {**data, "_selected_action": [str(row.id)], "confirmed": "yes"},
        follow=True,
    ).content.decode()
    detail = client.get(f"/admin/django_asyncjobs/job/{row.id}/change/").content.decode()

    assert "Are you sure you want to cancel 2 job(s)?" in confirm
    assert "Running jobs are not stopped at once" in confirm
    assert "1 job(s) cancelled; 1 running: cancel requested, its worker stops it." in done
    assert Job.objects.get(id=waiting.id).status == "cancelled"
    stored = Job.objects.get(id=row.id)
    assert (stored.status, stored.cancel_requested_by) == ("running", "alice")
    assert "0 job(s) cancelled; 1 skipped (cancel already requested by alice)." in again
    assert "by alice at" in detail and "its worker stops the job" in detail
