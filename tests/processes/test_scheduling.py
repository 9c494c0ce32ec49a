"""Scheduling features with real ``runscheduler`` and ``runworker`` processes: dependency chains,
a bulk enqueue of thousands of jobs, queue patterns that pick up new queues, and jobs enqueued
from SQL by a trigger."""

from __future__ import annotations

import os
import re

import pytest
from django.db import connection

from django_asyncjobs.models import Job, RegisteredJob
from tests.support.flows import start_scheduler, start_worker, wait_for_final
from tests.support.invariants import check_invariants, phases
from tests.support.processes import ProcessGroup, wait_until
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_chain_runs_in_order_and_a_failure_cancels_the_rest(processes: ProcessGroup) -> None:
    start_scheduler(processes)
    start_worker(processes, "--concurrency", "4")
    a = jobs.ledgered.delay(key="a", seconds=0.5)
    b = jobs.ledgered.using(depends_on=[a]).delay(key="b")
    c = jobs.ledgered.using(depends_on=[b]).delay(key="c")
    bad = jobs.fails_now.delay("bad")
    b2 = jobs.ledgered.using(depends_on=[bad]).delay(key="b2")
    c2 = jobs.ledgered.using(depends_on=[b2]).delay(key="c2")

    rows = wait_for_final([a, b, c, bad, b2, c2], processes)

    assert [rows[j.id].status for j in (a, b, c)] == ["succeeded"] * 3
    for first, then in ((a, b), (b, c)):
        finished, started = rows[first.id].finished_at, rows[then.id].started_at
        assert finished is not None and started is not None and started >= finished
    assert [rows[j.id].status for j in (bad, b2, c2)] == ["failed", "cancelled", "cancelled"]
    assert (
        rows[b2.id].error == f"Cancelled: dependency {bad.id} (tests.testapp.jobs.fails_now) failed"
    )
    assert phases(b2, "start") == phases(c2, "start") == 0


#: Jobs in the bulk run: 2,000 by default, enough for forty relay rounds of MAX_QUEUED_PER_QUEUE
#: (50) through two worker processes; ASYNCJOBS_TEST_BULK_JOBS=10000 for the full-size run (about
#: five minutes on 2 cores against moto_server).
BULK_JOBS = int(os.environ.get("ASYNCJOBS_TEST_BULK_JOBS", "2000"))


@pytest.mark.slow
def test_thousands_of_bulk_enqueued_jobs_all_succeed(processes: ProcessGroup) -> None:
    processes.env["ASYNCJOBS_TEST_LOG_LEVEL"] = "DEBUG"
    scheduler = start_scheduler(processes)
    start_worker(processes, "--processes", "2", "--concurrency", "8")
    enqueued = jobs.add.delay_many(((i, i), {}) for i in range(BULK_JOBS))
    rows = wait_for_final(enqueued, processes, timeout=600)
    assert {row.status for row in rows.values()} == {"succeeded"}
    assert all(rows[j.id].result == 2 * j.args[0] for j in enqueued)
    assert {row.attempts for row in rows.values()} == {1}
    # A busy queue goes out several jobs to a message once its start rate is known (how many
    # depends on the rate this machine reaches; the idle queue's first jobs go out alone).
    sizes = [
        int(n)
        for n in re.findall(r"relayed jobs queue=default .*per_message=(\d+)", scheduler.output())
    ]
    assert sizes and max(sizes) > 1, scheduler.output()[-3000:]


@pytest.mark.usefixtures("sqs_endpoint")
def test_a_pattern_worker_picks_up_a_queue_created_after_it_started(
    processes: ProcessGroup,
) -> None:
    start_scheduler(processes)
    worker = start_worker(processes, "--queues", "high,reports-*")
    first = jobs.ledgered.using(queue="reports-daily").delay(key="daily")
    later = jobs.ledgered.using(queue="reports-weekly").delay(key="weekly")
    rows = wait_for_final([first, later], processes)
    assert {row.status for row in rows.values()} == {"succeeded"}
    assert "worker consumes a new queue queue=reports-weekly" in worker.output()
    check_invariants([first, later], queues=["reports-daily", "reports-weekly"])


def test_a_row_inserted_by_a_trigger_becomes_a_job_that_runs(processes: ProcessGroup) -> None:
    start_scheduler(processes)
    start_worker(processes)
    wait_until(
        lambda: RegisteredJob.objects.filter(name="tests.ledgered").exists(),
        timeout=30,
        message="the scheduler never recorded its job names",
    )
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE shop_order (id serial PRIMARY KEY, total int NOT NULL)")
        cursor.execute(
            """
            CREATE FUNCTION shop_order_created() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM asyncjobs_enqueue(
                    'tests.ledgered', '[]',
                    jsonb_build_object('key', 'order-' || NEW.id), p_priority => 5);
                RETURN NEW;
            END $$;
            CREATE TRIGGER shop_order_created AFTER INSERT ON shop_order
                FOR EACH ROW EXECUTE FUNCTION shop_order_created();
            """
        )
        cursor.execute("INSERT INTO shop_order (total) VALUES (42) RETURNING id")
        (order_id,) = cursor.fetchone()
    job = Job.objects.get(kwargs__key=f"order-{order_id}")
    assert job.priority == 5 and job.name == "tests.ledgered"
    row = wait_for_final([job], processes)[job.id]
    assert row.status == "succeeded" and row.result["key"] == f"order-{order_id}"  # type: ignore[index]

    with connection.cursor() as cursor, pytest.raises(Exception, match=r"no job named 'nope\.job'"):
        cursor.execute("SELECT asyncjobs_enqueue('nope.job')")
