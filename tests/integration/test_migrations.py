"""Upgrading a database that already holds jobs: what migrations do to existing rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from django_asyncjobs.models import Job, JobAttempt
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


@pytest.fixture
def at_0016(transactional_db: None) -> Iterator[None]:
    """Move the schema back to before migration 0017; forward to the latest afterwards."""
    _migrate([(APP, "0016_process")])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM asyncjobs_attempt")
            cursor.execute("DELETE FROM asyncjobs_job")
        _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes(APP))


def test_migration_0017_numbers_attempts_on_and_moves_notes_out_of_the_error(
    at_0016: None,
) -> None:
    retried, interrupted, older, marked = (uuid.uuid4() for _ in range(4))
    history = {
        # Two attempts, an operator's retry (attempts back to 0), two more: numbered 1, 2, 1, 2.
        retried: [1, 2, 1, 2],
        # A free interruption gave its attempt back: both were numbered 1.
        interrupted: [1, 1],
        # Two attempts ran before the history existed; the two recorded were numbered 3, 4.
        older: [3, 4],
    }
    with connection.cursor() as cursor:
        for job_id in (retried, interrupted, older, marked):
            cursor.execute(_INSERT, [job_id, "tests.echo", "failed", "2026-06-01 00:00:00+00"])
        cursor.execute(
            "UPDATE asyncjobs_job SET attempts = 2 WHERE id IN (%s, %s)", [retried, older]
        )
        cursor.execute("UPDATE asyncjobs_job SET attempts = 1 WHERE id = %s", [interrupted])
        cursor.execute(
            "UPDATE asyncjobs_job SET status = 'succeeded', error = %s WHERE id = %s",
            ["marked as succeeded by ops in the admin", marked],
        )
        for job_id, recorded in history.items():
            for minute, number in enumerate(recorded):
                cursor.execute(
                    "INSERT INTO asyncjobs_attempt (job_id, number, worker, started_at, "
                    "outcome, error, traceback) VALUES (%s, %s, 'w', "
                    "'2026-06-01 00:00:00+00'::timestamptz + %s * interval '1 minute', "
                    "'failed', '', '')",
                    [job_id, number, minute],
                )

    _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes(APP))

    def numbers(job_id: uuid.UUID) -> list[int]:
        return list(
            JobAttempt.objects.filter(job_id=job_id)
            .order_by("started_at")
            .values_list("number", flat=True)
        )

    assert numbers(retried) == [1, 2, 3, 4]
    assert numbers(interrupted) == [1, 2]
    assert numbers(older) == [3, 4]
    rows = {job.id: job for job in Job.objects.all()}
    assert {job_id: rows[job_id].total_attempts for job_id in history} == {
        retried: 4,
        interrupted: 2,
        older: 4,
    }
    assert rows[retried].attempts == 2  # the retry limit still counts from the last retry
    assert (rows[marked].note, rows[marked].error) == (
        "marked as succeeded by ops in the admin",
        "",
    )
    assert rows[marked].total_attempts == 0
    # Rows inserted by SQL that names none of the new columns (an older enqueue) get defaults.
    with connection.cursor() as cursor:
        cursor.execute(_INSERT, [uuid.uuid4(), "tests.echo", "scheduled", "2026-06-01 00:00:00+00"])
    assert set(Job.objects.values_list("note", flat=True)) == {
        "",
        "marked as succeeded by ops in the admin",
    }


def _attempt_indexes() -> dict[str, list[str]]:
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, "asyncjobs_attempt")
    return {name: c["columns"] for name, c in constraints.items() if c["index"]}


def _attempt_foreign_key() -> list[tuple[int, bool]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT oid::int, convalidated FROM pg_constraint "
            "WHERE conrelid = 'asyncjobs_attempt'::regclass AND contype = 'f'"
        )
        return cursor.fetchall()


def test_migration_0021_drops_the_job_id_index_and_keeps_the_foreign_key(
    transactional_db: None,
) -> None:
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes(APP)
    _migrate([(APP, "0020_trace_context")])
    try:
        assert ["job_id"] in _attempt_indexes().values()
        foreign_key = _attempt_foreign_key()
        _migrate(latest)
        indexes = _attempt_indexes()
        assert ["job_id"] not in indexes.values()
        assert indexes["asyncjobs_attempt_job_idx"] == ["job_id", "started_at"]
        # The same constraint, not dropped and added again (which would scan every attempt
        # under a lock that holds claims up).
        assert _attempt_foreign_key() == foreign_key
    finally:
        _migrate(latest)
