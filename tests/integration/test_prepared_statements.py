"""``PREPARED_STATEMENTS``: the statements every job runs are prepared once per connection.

The insert of ``delay()``, the claim and the outcome run as server-side prepared statements with
generic plans, and give the same rows as the unprepared ones. Off (the default), nothing is
prepared.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.test import override_settings

from django_asyncjobs.models import Job
from tests.conftest import _current_asyncjobs
from tests.support.ledger import claimed
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def prepared() -> Iterator[None]:
    with override_settings(ASYNCJOBS={**_current_asyncjobs(), "PREPARED_STATEMENTS": True}):
        yield
    connection.close()  # the next test starts on a session without prepared statements


def prepared_statements() -> list[tuple[str, int, int]]:
    """``(statement's first words, generic plans, custom plans)`` of this session's."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT regexp_replace(statement, '\\s+', ' ', 'g'), generic_plans, custom_plans "
            "FROM pg_prepared_statements ORDER BY prepare_time"
        )
        return [(text.strip()[:40], generic, custom) for text, generic, custom in cursor.fetchall()]


def run_jobs(count: int) -> list[Job]:
    finished = []
    for i in range(count):
        job = claimed(jobs.ledgered.delay(key=f"p{i}"))
        assert job.lease_token is not None
        (stored,) = Job.objects.record_successes([(job.id, job.lease_token, {"i": i})])
        assert stored is not None
        finished.append(stored)
    return finished


@pytest.mark.usefixtures("prepared")
def test_the_hot_statements_are_prepared_once_with_generic_plans() -> None:
    finished = run_jobs(8)

    assert [(job.status, job.result, job.attempts) for job in finished] == [
        ("succeeded", {"i": i}, 1) for i in range(8)
    ]
    assert all(job.attempt_history.get().outcome == "succeeded" for job in finished)
    statements = prepared_statements()
    firsts = [text for text, _, _ in statements]
    assert len(statements) == 3, statements  # the insert, the claim, the outcome
    assert firsts[0].startswith("INSERT INTO"), firsts
    assert all(custom == 0 and generic >= 8 for _, generic, custom in statements), statements


@pytest.mark.usefixtures("prepared")
def test_a_prepared_insert_in_a_transaction_that_rolls_back_leaves_nothing() -> None:
    # The session's generic plans are set outside any transaction: a rollback cannot undo them.
    with pytest.raises(RuntimeError), transaction.atomic():
        jobs.ledgered.delay(key="rolled back")
        raise RuntimeError("the view failed")
    assert not Job.objects.filter(kwargs__key="rolled back").exists()
    run_jobs(2)
    assert len(prepared_statements()) == 3


def test_nothing_is_prepared_by_default() -> None:
    unset = {k: v for k, v in _current_asyncjobs().items() if k != "PREPARED_STATEMENTS"}
    connection.close()  # a session of its own, whatever ran before
    with override_settings(ASYNCJOBS=unset):
        run_jobs(3)
        assert prepared_statements() == []


@pytest.mark.usefixtures("prepared")
def test_unique_and_delayed_jobs_and_bad_rows_behave_as_unprepared(settings: Any) -> None:
    first = jobs.ledgered.using(unique_key="one").delay(key="u")
    again = jobs.ledgered.using(unique_key="one").delay(key="u")
    later = jobs.ledgered.using(run_after=3600).delay(key="later")
    assert again.id == first.id
    assert later.status == "scheduled" and later.run_at > later.created_at
    # A stale lease records nothing, prepared or not.
    job = claimed(jobs.ledgered.delay(key="stale"))
    assert Job.objects.record_successes([(job.id, first.id, None)]) == [None]
    assert Job.objects.get(id=job.id).status == "running"


@pytest.mark.usefixtures("prepared")
def test_prepared_statements_read_times_in_the_connections_current_time_zone() -> None:
    # Django reads times in the DATABASES time zone of the moment, even on a connection opened
    # under another (its cursors then carry their own loader); the prepared cursor does too.
    jobs.ledgered.delay(key="opens the connection")
    wrapper = connections[DEFAULT_DB_ALIAS]  # not the proxy: its cached time zone is reset
    wrapper.settings_dict["TIME_ZONE"] = "Asia/Kathmandu"
    wrapper.__dict__.pop("timezone", None)  # a cached_property, as setting_changed resets it
    try:
        job = jobs.ledgered.delay(key="after the change")
        stored = Job.objects.get(id=job.id)
        for field in ("created_at", "run_at"):
            prepared, read = getattr(job, field), getattr(stored, field)
            assert prepared == read
            assert str(prepared.tzinfo) == str(read.tzinfo) == "Asia/Kathmandu", field
        assert any(text.startswith("INSERT INTO") for text, _, _ in prepared_statements())
    finally:
        wrapper.settings_dict["TIME_ZONE"] = None
        wrapper.__dict__.pop("timezone", None)
