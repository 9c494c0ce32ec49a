"""delay(): one INSERT in the caller's transaction, a NOTIFY at commit, and no SQS call."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_asyncjobs.models import Job
from django_asyncjobs.queries import NOTIFY_CHANNEL
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def listener() -> Iterator[psycopg.Connection[Any]]:
    """A separate connection listening on the scheduler's channel."""
    params = connection.get_connection_params()
    for key in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(key, None)
    with psycopg.connect(**params, autocommit=True) as conn:
        conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        yield conn


def _notifications(conn: psycopg.Connection[Any]) -> int:
    return len(list(conn.notifies(timeout=0.3)))


def test_delay_stores_a_scheduled_job_with_database_times() -> None:
    job = jobs.add.delay(2, 3)
    row = Job.objects.get(pk=job.pk)
    assert (row.name, row.args, row.kwargs, row.status) == (
        "tests.testapp.jobs.add",
        [2, 3],
        {},
        "scheduled",
    )
    assert (row.queue, row.priority, row.attempts, row.max_retries) == ("default", 0, 0, 3)
    assert row.timeout == 600
    assert row.run_at == row.created_at == job.created_at == job.run_at


def test_delay_is_one_statement() -> None:
    with CaptureQueriesContext(connection) as captured:
        jobs.add.delay(1, 1)
    # The test app's signal ledger (tests/testapp/receivers.py) is a user's receiver, not ours.
    queries = [q for q in captured if "testapp_transition" not in q["sql"]]
    assert len(queries) == 1
    assert "INSERT INTO" in queries[0]["sql"] and "pg_notify" in queries[0]["sql"]


def test_using_overrides_queue_priority_and_delay() -> None:
    job = jobs.add.using(run_after=60, priority=7, queue="low").delay(1, 2)
    row = Job.objects.get(pk=job.pk)
    assert (row.queue, row.priority) == ("low", 7)
    assert dt.timedelta(seconds=59) < row.run_at - row.created_at < dt.timedelta(seconds=61)
    when = timezone.now() + dt.timedelta(hours=2)
    assert jobs.add.using(run_after=when).delay(1, 2).run_at == when
    later = jobs.add.using(run_after=dt.timedelta(minutes=5)).delay(1, 2)
    assert later.run_at - later.created_at == dt.timedelta(minutes=5)


def test_job_options_come_from_the_decorator() -> None:
    job = jobs.async_sleeper.delay(1.0)
    assert (job.max_retries, job.timeout) == (0, 1.0)
    assert jobs.high_echo.delay("k").queue == "high"


def test_class_job_stores_keyword_arguments() -> None:
    job = jobs.SayHello.delay(name="Ada")  # type: ignore[attr-defined]
    assert (job.name, job.args, job.kwargs) == ("tests.testapp.jobs.SayHello", [], {"name": "Ada"})


def test_rollback_leaves_no_row_and_wakes_nobody(listener: psycopg.Connection[Any]) -> None:
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        jobs.add.delay(1, 2)
        1 / 0  # noqa: B018
    assert Job.objects.count() == 0
    assert _notifications(listener) == 0


def test_notify_is_sent_at_commit_not_before(listener: psycopg.Connection[Any]) -> None:
    with transaction.atomic():
        jobs.add.delay(1, 2)
        assert _notifications(listener) == 0
    assert _notifications(listener) == 1


def test_delay_never_calls_sqs() -> None:
    # An endpoint nobody listens on: any SQS call would fail or hang.
    with override_settings(ASYNCJOBS={"ENDPOINT_URL": "http://127.0.0.1:9"}):
        job = jobs.add.delay(1, 2)
    assert Job.objects.get(pk=job.pk).status == "scheduled"


def test_a_failing_signal_receiver_does_not_break_delay(caplog: pytest.LogCaptureFixture) -> None:
    from django_asyncjobs.signals import job_enqueued

    def broken(**kwargs: object) -> None:
        raise RuntimeError("receiver bug")

    job_enqueued.connect(broken)
    try:
        job = jobs.add.delay(1, 2)
    finally:
        job_enqueued.disconnect(broken)
    assert Job.objects.filter(pk=job.pk).exists()
    assert f"signal receiver failed receiver={broken!r} job_id={job.id}" in caplog.text


def test_a_lone_surrogate_is_a_type_error_that_says_where_it_is() -> None:
    not_utf8 = "contains a lone surrogate ('\\ud800'), which is not valid UTF-8"
    with pytest.raises(TypeError, match=re.escape(f"args[0][1] {not_utf8}")):
        jobs.echo.delay(["ok", "\ud800"])
    with pytest.raises(TypeError, match=re.escape(f"kwargs['key'] {not_utf8}")):
        jobs.echo.delay(key="a\ud800b")
    with pytest.raises(
        TypeError, match=re.escape(f"args[0] has the key 'x\\ud800', which {not_utf8}")
    ):
        jobs.echo.delay({"x\ud800": 1})
    with pytest.raises(
        TypeError, match=re.escape("args[0] has the key 'a\\x00', which contains a NUL")
    ):
        jobs.echo.delay({"a\x00": 1})
    with pytest.raises(TypeError, match=re.escape(f"job 1: args[0] {not_utf8}")):
        jobs.echo.delay_many([(["fine"], {}), (["\ud800"], {})])
    with pytest.raises(TypeError, match=re.escape(f"job 0: args[0] {not_utf8}")):
        jobs.echo.using(run_after=60).delay_many([(["\ud800"], {}), ([1], {})])
    assert not Job.objects.exists()
    assert jobs.echo.delay("caf\u00e9 \U0001f600").args == ["caf\u00e9 \U0001f600"]  # a real pair
