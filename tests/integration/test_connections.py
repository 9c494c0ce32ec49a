"""Database sessions of the long-running commands: kept from pass to pass, replaced when lost.

Django closes a connection at the end of each request when ``CONN_MAX_AGE`` is 0 (the default);
the commands have no requests and must not reconnect on every pass of their loops. The sessions a
process opens are told apart by their ``application_name`` (libpq reads ``PGAPPNAME``). A
connection that died with a PostgreSQL restart is replaced, and the statement run again, once.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.db import OperationalError, connection, transaction

from django_asyncjobs.db import close_if_unusable, retry_on_lost_connection
from django_asyncjobs.models import Job
from tests.services import PostgresServer
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


@pytest.mark.processes
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


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid: int = cursor.fetchone()[0]
    return pid


def claim(job: Job) -> Callable[[], Any]:
    """A claim: its statements run in a transaction of their own (Django replaces a connection
    that fails there before the caller sees the error)."""
    return lambda: Job.objects.claim_many(
        [(job.id, uuid.uuid4())], worker="w", registered_names=[job.name], lock_timeout_seconds=1
    )


def heartbeat(job: Job) -> Callable[[], Any]:
    """A heartbeat: one statement in autocommit mode."""
    return lambda: Job.objects.heartbeat([(job.id, uuid.uuid4())])


@pytest.mark.parametrize("operation", [claim, heartbeat])
def test_a_statement_meeting_a_connection_lost_to_a_restart_runs_again_on_a_new_one(
    postgres_server: PostgresServer,
    caplog: pytest.LogCaptureFixture,
    operation: Callable[[Job], Callable[[], Any]],
) -> None:
    job = jobs.add.delay(1, 2)
    before = backend_pid()  # the connection is open, and idle
    postgres_server.restart(mode="fast")
    calls: list[int] = []

    def counted() -> Any:
        calls.append(1)
        return operation(job)()

    retry_on_lost_connection(counted, using="default")
    assert len(calls) == 2 and backend_pid() != before
    assert "database connection lost; retrying on a new connection" in caplog.text


def test_other_errors_are_raised_without_a_retry() -> None:
    job = jobs.add.delay(1, 2)
    backend_pid()
    calls: list[int] = []

    def fails() -> None:
        calls.append(1)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL statement_timeout = '10ms'")
            cursor.execute("SELECT pg_sleep(1)")

    # An OperationalError too, but the connection is fine: nothing to retry on a new one.
    with pytest.raises(OperationalError, match="statement timeout"):
        retry_on_lost_connection(fails, using="default")
    assert len(calls) == 1
    assert Job.objects.filter(pk=job.pk).exists()  # the connection still works


def test_a_healthy_connection_is_kept_and_a_dead_one_closed(
    postgres_server: PostgresServer,
) -> None:
    before = backend_pid()
    assert close_if_unusable("default") is False
    assert backend_pid() == before
    postgres_server.restart(mode="fast")
    with pytest.raises(OperationalError):
        backend_pid()
    assert close_if_unusable("default") is True
    assert backend_pid() != before
