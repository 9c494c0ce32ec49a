"""``current_job()`` and ``report_progress()``: what a running job knows and tells."""

from __future__ import annotations

import uuid

import pytest

from django_asyncjobs import current_job, report_progress
from django_asyncjobs.admin import describe_progress
from django_asyncjobs.context import JobContext, running
from django_asyncjobs.models import Job
from django_asyncjobs.transports.memory import MemoryTransport
from tests.conftest import drain, relay
from tests.testapp import jobs
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)


def test_outside_a_worker_there_is_no_job_and_progress_is_a_no_op() -> None:
    assert current_job() is None
    assert report_progress(1, 2) is False
    # A plain call of a job function still runs inline, reporting nowhere.
    assert jobs.progressing(2) == {"attempt": None, "name": None, "written": [False, False]}


@pytest.mark.parametrize("definition", [jobs.progressing, jobs.async_progressing])
def test_a_running_job_sees_its_context_and_stores_its_progress(
    memory_transport: MemoryTransport, definition: object
) -> None:
    job = definition.delay(50)  # type: ignore[attr-defined]
    relay(memory_transport)
    drain(memory_transport)
    row = Job.objects.get(pk=job.pk)
    assert row.status == "succeeded", row.error
    assert row.result is not None and row.progress is not None
    assert row.result["attempt"] == 1
    # Throttled: the first report and the final one are written, the ones in between are not.
    written = row.result["written"]
    assert written[0] is True and written[-1] is True and written.count(True) < 10
    assert row.progress["done"] == 50 and row.progress["total"] == 50
    assert row.progress["message"] == "step 50" and row.progress["at"]
    assert describe_progress(row.progress) == "50 / 50 (100%) - step 50"


def test_progress_is_fenced_by_the_lease() -> None:
    job = jobs.add.delay(1, 2)
    Job.objects.filter(pk=job.pk).update(status="running", lease_token=uuid.uuid4())
    stale = JobContext(
        id=job.id, name=job.name, attempt=1, queue="default", worker="w", lease_token=uuid.uuid4()
    )
    with running(stale):
        assert current_job() is stale
        assert report_progress(1, 1) is False
    assert current_job() is None
    assert Job.objects.get(pk=job.pk).progress is None


def test_a_new_attempt_starts_without_the_previous_progress(
    memory_transport: MemoryTransport,
) -> None:
    job = jobs.add.delay(1, 2)
    Job.objects.filter(pk=job.pk).update(progress={"done": 7, "total": 9, "message": ""})
    relay(memory_transport)
    drain(memory_transport)
    assert Job.objects.get(pk=job.pk).progress is None


def run_one(transport: MemoryTransport, job: Job) -> Job:
    relay(transport)
    drain(transport)
    return Job.objects.get(pk=job.pk)


def test_a_report_meeting_a_dropped_connection_is_written_on_a_new_one(
    memory_transport: MemoryTransport, caplog: pytest.LogCaptureFixture
) -> None:
    job = jobs.progress_after_losing_the_connection.delay("dropped")
    row = run_one(memory_transport, job)
    assert row.status == "succeeded", row.error
    assert row.result is True
    assert row.progress is not None and row.progress["message"] == "after the connection dropped"
    assert Execution.objects.filter(job="progress_after_losing_the_connection").count() == 1
    assert "database connection lost; retrying on a new connection" in caplog.text


def test_a_report_that_fails_is_logged_and_the_job_goes_on(
    memory_transport: MemoryTransport, caplog: pytest.LogCaptureFixture
) -> None:
    job = jobs.progress_on_a_locked_row.delay("locked")
    row = run_one(memory_transport, job)
    assert row.status == "succeeded", row.error
    assert row.result is False and row.progress is None
    assert Execution.objects.filter(job="progress_on_a_locked_row").count() == 1
    assert f"progress not recorded job_id={job.id} error=" in caplog.text


def test_a_report_inside_the_jobs_transaction_waits_for_its_commit(
    memory_transport: MemoryTransport,
) -> None:
    # Written inside the transaction, the report would hold the job's row until the commit:
    # the worker's heartbeat (every 0.5 s in the test settings) would wait for it that long.
    job = jobs.progress_in_a_transaction.delay("inside", 2.0)
    row = run_one(memory_transport, job)
    assert row.status == "succeeded", row.error
    assert row.result is not None
    assert row.result["heartbeat_moved"] >= 1.0, row.result
    assert row.result["written"] is False and row.result["progress_seen"] is None
    assert row.progress is not None and row.progress["message"] == "inside"  # at the commit
