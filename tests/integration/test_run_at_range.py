"""A job's run_at stays within what Python can read back (django_asyncjobs.timebounds).

Every way of writing one refuses a time outside the range, or caps it: ``delay()`` and
``using(run_after=...)``, ``asyncjobs_enqueue()`` in SQL, a raw INSERT (the CHECK constraint), and
a retry whose backoff is longer than any row can hold. A row stored outside the range before the
constraint existed still shows in every list of jobs. (The HTTP API and the Tasks backend have
their own tests in test_api.py and test_tasks_backend.py.)
"""

from __future__ import annotations

import datetime as dt
import io
import json
import uuid

import pytest
from django.core.management import call_command
from django.db import DatabaseError, IntegrityError, connection
from django.test import override_settings

from django_asyncjobs.models import Job
from django_asyncjobs.timebounds import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP
from django_asyncjobs.transports.memory import MemoryTransport
from tests.conftest import drain, relay
from tests.support.admin import staff
from tests.testapp import jobs

WEST = dt.timezone(dt.timedelta(hours=-5))
EAST = dt.timezone(dt.timedelta(hours=1))
OUT_OF_RANGE = [
    dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=WEST),  # the year 10000 in UTC
    dt.datetime(1, 1, 1, tzinfo=EAST),  # the year 0 in UTC
    dt.datetime.max.replace(tzinfo=dt.UTC),  # readable in UTC, not in a time zone east of it
    dt.timedelta.max,
    dt.timedelta.min,
    10_000 * 365 * 86400,  # seconds
    1e300,
    float("inf"),
]


def insert_raw(run_at: str, *, status: str = "scheduled") -> uuid.UUID:
    """INSERT a job row by hand, as a script or another service might."""
    job_id = uuid.uuid4()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO asyncjobs_job (
                id, name, args, kwargs, queue, priority, status, run_at, attempts, interruptions,
                max_retries, timeout, error, traceback, created_at, worker, depends_on, blocked
            ) VALUES (%s, %s, '[1, 2]', '{}', 'default', 0, %s, %s::timestamptz, 0, 0, 3, NULL,
                      '', '', now(), '', '{}', false)
            """,
            [job_id, jobs.add.name, status, run_at],
        )
    return job_id


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("run_after", OUT_OF_RANGE, ids=repr)
def test_delay_refuses_a_run_after_outside_the_range(run_after: object) -> None:
    outside = (
        r"run_after=.* (is outside the supported range|is past 9999-12-30|is before 0001-01-02)"
    )
    with pytest.raises(ValueError, match=outside):
        jobs.add.using(run_after=run_after).delay(1, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=outside):
        jobs.add.using(priority=1).using(run_after=run_after).delay_many([((1, 2), {})])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"run_after must be 0 or more seconds, not nan"):
        jobs.add.using(run_after=float("nan"))
    assert not Job.objects.exists()
    # The edges themselves are stored, and read back unchanged.
    assert jobs.add.using(run_after=LATEST_TIMESTAMP).delay(1, 2).run_at == LATEST_TIMESTAMP
    earliest = jobs.add.using(run_after=EARLIEST_TIMESTAMP.astimezone(EAST)).delay(1, 2)
    assert Job.objects.get(pk=earliest.pk).run_at == EARLIEST_TIMESTAMP


@pytest.mark.django_db(transaction=True)
def test_sql_cannot_store_a_run_at_outside_the_range() -> None:
    enqueue = "SELECT asyncjobs_enqueue(%s, '[1, 2]', p_run_at => %s::timestamptz)"
    for run_at in ("10000-01-01 04:59:59+00", "0001-01-01 00:00:00+01", "infinity"):
        with (
            pytest.raises(
                DatabaseError,
                match=r"asyncjobs_enqueue: run_at .* is outside the supported range "
                r"0001-01-02 00:00:00\+00 to 9999-12-30 00:00:00\+00 \(UTC\)",
            ),
            connection.cursor() as cursor,
        ):
            cursor.execute(enqueue, [jobs.add.name, run_at])
        # A hand-written INSERT meets the CHECK constraint.
        with pytest.raises(IntegrityError, match="asyncjobs_run_at_in_range"):
            insert_raw(run_at)
    assert not Job.objects.exists()
    # At the edge, the function still fills every column, the newer ones from their defaults.
    with connection.cursor() as cursor:
        cursor.execute(enqueue, [jobs.add.name, "9999-12-30 00:00:00+00"])
        (job_id,) = cursor.fetchone()
    job = Job.objects.get(pk=job_id)
    assert (job.run_at, job.args, job.at_most_once, job.task_backend) == (
        LATEST_TIMESTAMP,
        [1, 2],
        False,
        "",
    )


@pytest.mark.django_db(transaction=True)
def test_a_retry_longer_than_any_row_can_hold_is_due_at_the_latest_time() -> None:
    job = jobs.fails_with_endless_backoff.delay("endless")
    transport = MemoryTransport()
    relay(transport)
    drain(transport)
    row = Job.objects.get(pk=job.pk)
    assert (row.status, row.attempts, row.run_at) == ("scheduled", 1, LATEST_TIMESTAMP)
    assert "endless fails" in row.error


# One transaction, rolled back at the end: the constraint is dropped for this test only.
@pytest.mark.django_db
@pytest.mark.parametrize("time_zone", ["UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago"])
def test_every_list_of_jobs_loads_a_row_stored_outside_the_range(time_zone: str) -> None:
    with connection.cursor() as cursor:
        # As a database that had such rows before the constraint (or where it was dropped).
        cursor.execute("ALTER TABLE asyncjobs_job DROP CONSTRAINT asyncjobs_run_at_in_range")
    future = insert_raw("10000-01-01 04:59:59+00")  # 9999-12-31 23:59:59 in New York
    past = insert_raw("0001-01-01 00:00:00+01", status="failed")  # 1 BC in UTC
    ancient = insert_raw("0001-12-31 BC", status="cancelled")
    ok = jobs.add.delay(3, 4)
    shown_as = {
        str(future): LATEST_TIMESTAMP.isoformat(),
        str(past): EARLIEST_TIMESTAMP.isoformat(),
        str(ancient): EARLIEST_TIMESTAMP.isoformat(),
        str(ok.id): ok.run_at.isoformat(),
    }
    client = staff("view_job", "cancel_job", username="operator")
    with override_settings(TIME_ZONE=time_zone):
        listed = client.get("/api/jobs")
        assert listed.status_code == 200, listed.content
        assert {j["id"]: j["run_at"] for j in listed.json()["results"]} == shown_as
        for job_id, run_at in shown_as.items():
            one = client.get(f"/api/jobs/{job_id}")
            assert one.status_code == 200 and one.json()["run_at"] == run_at

        page = client.get("/admin/django_asyncjobs/job/")
        assert page.status_code == 200
        assert {str(j.pk) for j in page.context["cl"].result_list} == set(shown_as)
        for bad in (future, past, ancient):
            detail = client.get(f"/admin/django_asyncjobs/job/{bad}/change/")
            assert detail.status_code == 200 and str(bad) in detail.content.decode()

        out = io.StringIO()
        call_command("asyncjobs", "list", stdout=out)
        assert {str(j)[:8] for j in (future, past, ancient)} <= set(out.getvalue().split())
        out = io.StringIO()
        call_command("asyncjobs", "list", "--json", stdout=out)
        rows = [json.loads(line) for line in out.getvalue().splitlines()]
        assert {r["id"]: r["run_at"] for r in rows} == shown_as

    # Transitions read the row back too (raw SQL): cancelling it works, and so does a relay
    # pass that finds the row from 1 BC due.
    cancelled = client.post(f"/api/jobs/{future}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    Job.objects.filter(pk=past).update(status="scheduled")
    assert relay(MemoryTransport()) == 2  # the row from 1 BC and the ordinary one
