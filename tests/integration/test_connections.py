"""Database connections lost to a PostgreSQL restart: replaced, and the statement run again, once.

The long-running commands rely on this (tests/processes/test_connections.py checks that their
sessions are kept from pass to pass); other errors are raised without a retry.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.db import OperationalError, connection, transaction

from django_asyncjobs.db import close_if_unusable, retry_on_lost_connection
from django_asyncjobs.models import Job
from tests.services import PostgresServer
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


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
