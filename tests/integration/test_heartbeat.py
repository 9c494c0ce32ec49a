"""What the worker's heartbeat reports about leases: only jobs that still run can lose one."""

from __future__ import annotations

import logging
import threading

import pytest
from django.db import connection

from django_asyncjobs import registry
from django_asyncjobs.execution import Outcome
from django_asyncjobs.models import Job
from django_asyncjobs.worker.claimed import ClaimedJobs, Running
from django_asyncjobs.worker.heartbeat import Heartbeat
from tests.support.ledger import claimed
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_job_whose_success_was_written_meanwhile_is_no_lost_lease(
    caplog: pytest.LogCaptureFixture,
) -> None:
    finished, rescued = (claimed(jobs.ledgered.delay(key=key)) for key in ("finished", "rescued"))
    tracked = ClaimedJobs(using="default")
    entries = []
    for job in (finished, rescued):
        assert job.lease_token is not None
        entries.append(
            Running(
                job=job,
                definition=registry.get(job.name),
                lease_token=job.lease_token,
                started=0.0,
                deadline=None,
            )
        )
        tracked.add(entries[-1])
    # The first job ended and its success was written (the row no longer holds the lease) after
    # the heartbeat read the leases; the second was rescued and runs elsewhere now.
    tracked.complete(entries[0], Outcome(ok=True, duration_seconds=0.0, result=None))
    Job.objects.record_successes([(finished.id, entries[0].lease_token, None)])
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE asyncjobs_job SET lease_token = gen_random_uuid() WHERE id = %s", [rescued.id]
        )
    heartbeat = Heartbeat(
        claimed=tracked, using="default", interval_seconds=1.0, stopping=threading.Event()
    )

    with caplog.at_level(logging.WARNING, logger="django_asyncjobs.worker"):
        heartbeat._write()

    warnings = [r.getMessage() for r in caplog.records if "lease lost" in r.getMessage()]
    assert warnings == [f"lease lost while running id={rescued.id}"]
    assert Job.objects.get(id=finished.id).status == "succeeded"
