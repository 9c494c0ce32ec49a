"""Upgrading a database that already holds jobs: what migrations do to existing rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from django_asyncjobs.models import Job
from django_asyncjobs.timebounds import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP

APP = "django_asyncjobs"
BEFORE_ROW_POLICY = (APP, "0012_attempt_traceback")

_INSERT = """
    INSERT INTO asyncjobs_job (
        id, name, args, kwargs, queue, priority, status, run_at, attempts, interruptions,
        max_retries, timeout, error, traceback, created_at, worker, depends_on, blocked
    ) VALUES (%s, %s, '[]', '{}', 'default', 0, %s, %s::timestamptz, 0, 0, 3, NULL, '', '',
        now(), '', '{}', false)
"""


def _migrate(target: list[tuple[str, str]]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)


@pytest.fixture
def at_0012(transactional_db: None) -> Iterator[None]:
    """Move the schema back to before migration 0013; forward to the latest afterwards."""
    _migrate([BEFORE_ROW_POLICY])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM asyncjobs_job")
        latest = MigrationExecutor(connection).loader.graph.leaf_nodes(APP)
        _migrate(latest)


def test_migration_0013_moves_unreadable_run_at_into_range_and_marks_at_most_once_rows(
    at_0012: None,
) -> None:
    too_late, too_early, fine, once = (uuid.uuid4() for _ in range(4))
    with connection.cursor() as cursor:
        # Rows an older version let through: Python cannot load either run_at.
        cursor.execute(_INSERT, [too_late, "tests.echo", "scheduled", "10000-01-01 04:59:59+00"])
        cursor.execute(_INSERT, [too_early, "tests.echo", "scheduled", "0001-01-01 00:00:00+01"])
        cursor.execute(_INSERT, [fine, "tests.echo", "scheduled", "2026-06-01 00:00:00+00"])
        cursor.execute(_INSERT, [once, "tests.ledgered_once", "queued", "2026-06-01 00:00:00+00"])

    _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes(APP))

    rows = {job.id: job for job in Job.objects.all()}
    assert rows[too_late].run_at == LATEST_TIMESTAMP
    assert rows[too_early].run_at == EARLIEST_TIMESTAMP
    assert rows[fine].run_at.year == 2026
    # The policy of an at-most-once job is copied from its definition to its unfinished row.
    assert rows[once].at_most_once is True
    assert rows[fine].at_most_once is False
    assert {job.refused_deliveries for job in rows.values()} == {0}
    assert {job.task_backend for job in rows.values()} == {""}


def test_after_migration_0013_the_database_refuses_an_unreadable_run_at(
    transactional_db: None,
) -> None:
    with (
        pytest.raises(IntegrityError, match="asyncjobs_run_at_in_range"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(_INSERT, [uuid.uuid4(), "tests.echo", "scheduled", "10000-01-01+00"])
    assert not Job.objects.exists()
