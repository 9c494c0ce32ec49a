"""The relay's decisions under concurrency and rate limits: which due jobs it sends, which it
holds back in PostgreSQL, and in which order it releases them."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from django.db import connections, transaction
from django.test import override_settings

from django_asyncjobs.limits import parse_rate
from django_asyncjobs.models import Job
from django_asyncjobs.transports.memory import MemoryTransport
from tests.conftest import _current_asyncjobs, relay
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def statuses(ids: list[uuid.UUID]) -> list[str]:
    by_id = dict(Job.objects.filter(id__in=ids).values_list("id", "status"))
    return [by_id[i] for i in ids]


def start(job_id: uuid.UUID) -> None:
    """Move a queued job to running as a worker's claim would (with its attempt row)."""
    job = Job.objects.get(pk=job_id)
    assert job.dispatch_token is not None
    result = Job.objects.claim(
        job_id=job.id,
        dispatch_token=job.dispatch_token,
        worker="w",
        registered_names={job.name},
        lock_timeout_seconds=1,
    )
    assert result.job is not None, result


def finish(job_id: uuid.UUID) -> None:
    Job.objects.filter(pk=job_id).update(status="succeeded")


def test_the_key_is_computed_from_the_arguments_and_stored_with_the_limit() -> None:
    job = jobs.per_customer.delay("acme", 0.1)
    other = jobs.one_at_a_time.delay("x")
    plain = jobs.add.delay(1, 2)
    many = jobs.per_customer.delay_many([(["a"], {}), (["b"], {"seconds": 1})])
    stored = {j.id: (j.concurrency_key, j.concurrency_limit) for j in Job.objects.all()}
    assert stored[job.id] == ("tests.per_customer:acme", 2)
    assert (job.concurrency_key, job.concurrency_limit) == ("tests.per_customer:acme", 2)
    assert stored[other.id] == ("tests.one_at_a_time", 1)
    assert stored[plain.id] == (None, None)
    assert [stored[j.id][0] for j in many] == ["tests.per_customer:a", "tests.per_customer:b"]


def test_at_most_n_per_key_are_sent_and_the_rest_wait_in_postgres() -> None:
    transport = MemoryTransport()
    acme = [jobs.per_customer.delay("acme", key=str(i)).id for i in range(5)]
    globex = [jobs.per_customer.delay("globex", key=str(i)).id for i in range(3)]
    assert relay(transport) == 4
    assert statuses(acme) == ["queued"] * 2 + ["scheduled"] * 3
    assert statuses(globex) == ["queued"] * 2 + ["scheduled"]
    # Nothing changes until one of them finishes: queued and running both hold a slot.
    start(acme[0])
    assert relay(transport) == 0
    finish(acme[0])
    assert relay(transport) == 1
    assert statuses(acme) == ["succeeded", "queued", "queued", "scheduled", "scheduled"]


def test_held_jobs_are_released_in_priority_order() -> None:
    transport = MemoryTransport()
    first = jobs.one_at_a_time.delay("first").id
    low = jobs.one_at_a_time.using(priority=-5).delay("low").id
    high = jobs.one_at_a_time.using(priority=5).delay("high").id
    assert relay(transport) == 1
    assert statuses([high, first, low]) == ["queued", "scheduled", "scheduled"]
    finish(high)
    relay(transport)
    assert statuses([first, low]) == ["queued", "scheduled"]
    finish(first)
    relay(transport)
    assert statuses([low]) == ["queued"]


def test_a_held_key_does_not_starve_jobs_of_lower_priority_behind_it() -> None:
    transport = MemoryTransport()
    held = [jobs.one_at_a_time.using(priority=9).delay(str(i)).id for i in range(30)]
    free = jobs.add.delay(1, 1).id
    scheduler_sent = relay(transport)
    assert scheduler_sent == 2
    assert statuses([free]) == ["queued"]
    assert Counter(statuses(held)) == {"scheduled": 29, "queued": 1}


def test_a_slot_is_freed_when_a_lost_job_is_rescued() -> None:
    transport = MemoryTransport()
    a, b = jobs.one_at_a_time.delay("a").id, jobs.one_at_a_time.delay("b").id
    relay(transport)
    start(a)
    assert relay(transport) == 0
    # The worker went silent: its heartbeat is older than the stale window.
    Job.objects.filter(pk=a).update(heartbeat_at="2000-01-01T00:00:00Z")
    relay(transport)
    # tests.one_at_a_time has no retry left: the lost attempt failed it, and b took the slot.
    assert statuses([a, b]) == ["failed", "queued"]


def test_two_schedulers_never_fill_the_same_slot() -> None:
    """While one scheduler's relay transaction holds the key, another sends none of its jobs."""
    transport = MemoryTransport()
    ids = [jobs.one_at_a_time.delay(str(i)).id for i in range(3)]
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                ["asyncjobs:concurrency:tests.one_at_a_time"],
            )
            assert relay(transport) == 0
            assert statuses(ids) == ["scheduled"] * 3
            cursor.execute("ROLLBACK")
    finally:
        other.close()
    assert relay(transport) == 1


def test_a_job_rate_limit_caps_starts_per_window_retries_included() -> None:
    transport = MemoryTransport()
    ids = [jobs.rated.delay(str(i)).id for i in range(8)]
    assert relay(transport) == 5  # tests.rated: 5/s
    assert Counter(statuses(ids)) == {"queued": 5, "scheduled": 3}
    # Started attempts count for the whole window, whether their jobs finished or not.
    for job_id in ids[:5]:
        start(job_id)
        finish(job_id)
    assert relay(transport) == 0
    # Move the window on: the attempts started over a second ago no longer count.
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "UPDATE asyncjobs_attempt SET started_at = started_at - interval '2 seconds'"
        )
    assert relay(transport) == 3


def test_a_queue_rate_limit_from_settings_caps_the_whole_queue() -> None:
    transport = MemoryTransport()
    with override_settings(ASYNCJOBS={**_current_asyncjobs(), "QUEUE_RATE_LIMITS": {"low": "3/m"}}):
        low = [jobs.low_echo.delay(str(i)).id for i in range(5)]
        default = [jobs.add.delay(i, i).id for i in range(5)]
        assert relay(transport) == 8
        assert Counter(statuses(low)) == {"queued": 3, "scheduled": 2}
        assert statuses(default) == ["queued"] * 5
        assert parse_rate("3/m").period_seconds == 60


def test_a_rate_held_name_does_not_fill_the_batch() -> None:
    transport = MemoryTransport()
    with transaction.atomic():
        for i in range(20):
            jobs.rated.using(priority=9).delay(str(i))
    relay(transport)
    later = jobs.add.delay(2, 2).id
    assert relay(transport) == 1
    assert statuses([later]) == ["queued"]


def test_run_jobs_runs_limited_jobs_one_after_the_other_without_waiting_for_rates() -> None:
    from django_asyncjobs.testing import run_jobs

    for i in range(3):
        jobs.one_at_a_time.delay(str(i))
    for i in range(8):
        jobs.rated.delay(str(i))
    ran = run_jobs()
    assert Counter((j.name, j.status) for j in ran) == {
        ("tests.one_at_a_time", "succeeded"): 3,
        ("tests.rated", "succeeded"): 8,
    }


def test_a_redelivered_or_resent_message_never_takes_a_second_slot() -> None:
    transport = MemoryTransport()
    a, b = jobs.one_at_a_time.delay("a").id, jobs.one_at_a_time.delay("b").id
    relay(transport)
    token = Job.objects.get(pk=a).dispatch_token
    assert token is not None
    start(a)
    # SQS delivers the same message again: the job is running, the claim takes nothing.
    again = Job.objects.claim(
        job_id=a,
        dispatch_token=token,
        worker="w2",
        registered_names={"tests.one_at_a_time"},
        lock_timeout_seconds=1,
    )
    assert again.job is None
    assert Job.objects.concurrency_usage(["tests.one_at_a_time"]) == {"tests.one_at_a_time": 1}
    assert statuses([a, b]) == ["running", "scheduled"]


def test_the_limited_relay_still_reads_the_due_index() -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    jobs.add.using(run_after=3600).delay_many([([i, i], {}) for i in range(1000)])
    jobs.low_echo.delay_many([([str(i)], {}) for i in range(1000)])
    jobs.per_customer.delay_many([(["acme"], {"key": str(i)}) for i in range(50)])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE asyncjobs_job")
    with CaptureQueriesContext(connection) as queries:
        relay(MemoryTransport())
    select = next(q["sql"] for q in queries if "j.concurrency_key IS NULL OR" in q["sql"])
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {select}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Seq Scan on asyncjobs_job" not in plan, plan
    assert "asyncjobs_relay_idx" in plan, plan
    assert "asyncjobs_concurrency_idx" in plan, plan
