"""Database sessions of a running ``runscheduler``: kept from pass to pass, idle or throttled.

Django closes a connection at the end of each request when ``CONN_MAX_AGE`` is 0 (the default);
the commands have no requests and must not reconnect on every pass of their loops. The sessions a
process opens are told apart by their ``application_name`` (libpq reads ``PGAPPNAME``).
"""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.db import connection

from django_asyncjobs.models import Job
from tests.support.flows import start_scheduler
from tests.support.processes import ProcessGroup, wait_until
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)

Session = tuple[int, dt.datetime]
SCHEDULER_APP = "asyncjobs-test-scheduler"


def sessions_seen(application_name: str, *, seconds: float) -> set[Session]:
    """Return every session of *application_name* seen in pg_stat_activity for *seconds*.

    Sampled every 20 ms: a process that reconnects on each pass keeps each session open at
    least while it waits for the next pass (50 ms or more), so none goes unseen.
    """
    seen: set[Session] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid, backend_start FROM pg_stat_activity WHERE application_name = %s",
                [application_name],
            )
            seen.update(cursor.fetchall())
        time.sleep(0.02)
    return seen


def test_the_scheduler_keeps_its_two_sessions_idle_and_while_throttled(
    processes: ProcessGroup,
) -> None:
    processes.env["PGAPPNAME"] = SCHEDULER_APP
    processes.env["ASYNCJOBS_TEST_MAX_QUEUED"] = "1"  # flow control: one job in SQS at a time
    start_scheduler(processes)  # polls every 0.5 s (tests/settings.py)
    started = sessions_seen(SCHEDULER_APP, seconds=1.0)
    assert 1 <= len(started) <= 2, started  # its connection, and the one that LISTENs

    idle = sessions_seen(SCHEDULER_APP, seconds=5.0) - started
    assert idle == set(), f"{len(idle)} sessions opened in 5 s while idle"

    # No worker runs: one job waits in SQS and the others keep the queue throttled, which the
    # scheduler polls every 50 ms.
    batch = [jobs.add.delay(i, i) for i in range(5)]
    wait_until(
        lambda: Job.objects.filter(id__in=[j.id for j in batch], status="queued").count() == 1,
        timeout=30,
        message="the scheduler did not send exactly one job",
    )
    throttled = sessions_seen(SCHEDULER_APP, seconds=3.0) - started
    assert throttled == set(), f"{len(throttled)} sessions opened in 3 s while throttled"
    assert Job.objects.filter(id__in=[j.id for j in batch], status="scheduled").count() == 4
