"""Periodic jobs: occurrences enqueued exactly once, missed ones by policy, bad schedules
reported by a system check. tests/processes/test_periodic.py runs two real schedulers."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.checks import run_checks
from django.db.models.functions import Now
from django.test import override_settings

from django_asyncjobs import Cron, job, registry
from django_asyncjobs.models import Job, PeriodicSchedule
from django_asyncjobs.periodic import enqueue_due
from django_asyncjobs.timebounds import LATEST_TIMESTAMP
from tests.conftest import _current_asyncjobs
from tests.support.processes import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def every_second() -> Iterator[Any]:
    """Register a job that runs every second, for one test."""

    # missed="once": however slow the machine, one call enqueues at most one occurrence.
    @job(name="tests.tick", cron=Cron("* * * * * *", kwargs={"n": 1}))
    def tick(n: int) -> int:
        return n

    yield tick
    registry.unregister("tests.tick")


def rewind(key: str, seconds: float) -> None:
    """Pretend no scheduler ran for *seconds*: move the schedule's next run into the past."""
    row = PeriodicSchedule.objects.get(key=key)
    row.next_run_at -= dt.timedelta(seconds=seconds)
    row.save()


def test_each_occurrence_is_enqueued_once(every_second: Any) -> None:
    assert enqueue_due() == 0  # creates the row; the first occurrence is the next second
    row = PeriodicSchedule.objects.get(key="tests.tick")
    assert row.cron == "* * * * * *" and row.last_run_at is None
    wait_until(
        lambda: PeriodicSchedule.objects.filter(pk=row.pk, next_run_at__lte=Now()).exists(),
        timeout=5,
        message=f"the occurrence at {row.next_run_at} never became due",
    )
    assert enqueue_due() == 1
    assert enqueue_due() == 0  # the same occurrence never twice
    (enqueued,) = Job.objects.filter(name="tests.tick")
    assert enqueued.kwargs == {"n": 1}
    row.refresh_from_db()
    assert row.last_job_id == enqueued.id and row.last_run_at is not None
    assert row.next_run_at > row.last_run_at


def test_missed_occurrences_follow_the_policy(every_second: Any) -> None:
    registry.unregister("tests.tick")

    @job(name="tests.tick", cron=Cron("* * * * * *", kwargs={"n": 1}, missed="all"))
    def tick_all(n: int) -> int:
        return n

    enqueue_due()
    rewind("tests.tick", 10)
    caught_up = enqueue_due()
    assert 10 <= caught_up <= 15  # "all": one per missed second (and any that just passed)
    keys = list(Job.objects.filter(name="tests.tick").values_list("unique_key", flat=True))
    assert len(set(keys)) == len(keys) == caught_up

    registry.unregister("tests.tick")

    @job(name="tests.tick", cron="* * * * * *")  # missed="once", the default
    def tick_once() -> None: ...

    rewind("tests.tick", 10)
    assert enqueue_due() == 1
    assert enqueue_due() == 0


def test_an_invalid_cron_expression_fails_a_system_check() -> None:
    @job(name="tests.bad_cron", cron="every day at noon")
    def bad() -> None: ...

    try:
        with override_settings(
            ASYNCJOBS={
                **_current_asyncjobs(),
                "PERIODIC_JOBS": [{"job": "tests.nope", "cron": "* * * * *"}],
            }
        ):
            messages = [m for m in run_checks() if m.id == "asyncjobs.E003"]
    finally:
        registry.unregister("tests.bad_cron")
    texts = [m.msg for m in messages]
    assert "periodic job 'tests.bad_cron': 'every day at noon' is not a valid cron expression" in (
        " ".join(texts)
    )
    (unknown,) = [m for m in messages if "no job named 'tests.nope'" in m.msg]
    assert unknown.hint is not None
    assert "is a registered job's name" in unknown.hint
    assert "Cron" not in unknown.hint
    (bad_cron,) = [m for m in messages if "tests.bad_cron" in m.msg]
    assert bad_cron.hint is not None and "five fields" in bad_cron.hint


def test_a_misspelt_periodic_job_name_is_offered_the_closest_registered_one() -> None:
    with override_settings(
        ASYNCJOBS={
            **_current_asyncjobs(),
            "PERIODIC_JOBS": [{"job": "tests.testapp.jobs.ad", "cron": "* * * * *"}],
        }
    ):
        (message,) = [m for m in run_checks() if m.id == "asyncjobs.E003"]
    assert message.hint is not None
    assert message.hint.startswith("Did you mean 'tests.testapp.jobs.add'? ")


def test_a_schedule_that_never_fires_waits_with_a_warning_and_breaks_no_pass() -> None:
    """``0 0 30 2 *`` (30 February) and a year that has passed are valid cron and never fire."""

    @job(name="tests.never", cron=["0 0 30 2 *", Cron("0 0 1 1 * 0 2020", kwargs={"n": 2})])
    def never(n: int = 1) -> int:
        return n

    try:
        warnings = [m for m in run_checks() if m.id == "asyncjobs.W002"]
        assert len(warnings) == 2
        assert "'0 0 30 2 *' never fires after" in warnings[0].msg
        assert enqueue_due() == 0  # creates the rows without raising
        rows = PeriodicSchedule.objects.filter(name="tests.never")
        assert rows.count() == 2
        assert {row.next_run_at for row in rows} == {LATEST_TIMESTAMP}
        # A schedule whose last occurrence is due runs it once, then waits for ever.
        rows.update(next_run_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
        assert enqueue_due() == 2
        assert enqueue_due() == 0
        assert {row.next_run_at for row in rows.all()} == {LATEST_TIMESTAMP}
    finally:
        registry.unregister("tests.never")
