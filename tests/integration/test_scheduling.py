"""Bulk enqueue, unique jobs and dependencies, in-process (tests/faults and tests/processes run
the same flows with real processes)."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from django_asyncjobs import signals
from django_asyncjobs.conf import get_settings
from django_asyncjobs.models import Job
from django_asyncjobs.queries import JobManager
from django_asyncjobs.transports.memory import MemoryTransport
from tests.conftest import drain, relay
from tests.testapp import jobs
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)


def runs(key: str) -> int:
    """Return how often the body of ``jobs.echo`` ran with *key*."""
    return Execution.objects.filter(job="echo", key=key).count()


def statuses(*enqueued: Job) -> list[str]:
    rows = {job.id: job.status for job in Job.objects.filter(id__in=[j.id for j in enqueued])}
    return [rows[job.id] for job in enqueued]


# -- bulk enqueue --------------------------------------------------------------------------------


def test_delay_many_writes_every_job_in_one_statement() -> None:
    with CaptureQueriesContext(connection) as captured:
        enqueued = jobs.add.delay_many([((1, 2), {}), ((3,), {"b": 4}), ((), {"a": 5, "b": 6})])
    queries = [q for q in captured if "testapp_transition" not in q["sql"]]
    assert len(queries) == 1 and "pg_notify" in queries[0]["sql"]
    assert [(j.args, j.kwargs) for j in enqueued] == [
        ([1, 2], {}),
        ([3], {"b": 4}),
        ([], {"a": 5, "b": 6}),
    ]
    assert Job.objects.filter(name=jobs.add.name).count() == 3
    transport = MemoryTransport()
    relay(transport)
    drain(transport)
    assert [Job.objects.get(id=j.id).result for j in enqueued] == [3, 7, 11]


def test_delay_many_checks_everything_before_writing_anything() -> None:
    with pytest.raises(TypeError, match=r"job 2: args\[0\] is a set"):
        jobs.add.delay_many([((1, 2), {}), ((3, 4), {}), (({1}, 2), {})])
    with pytest.raises(TypeError, match=r"job 1: .*missing a required argument: 'b'"):
        jobs.add.delay_many([((1, 2), {}), ((1,), {})])
    assert not Job.objects.exists()


def test_delay_many_stores_each_jobs_arguments_as_given() -> None:
    # A batch's arguments travel as one JSON document: text that JSON escapes, non-ASCII text,
    # nesting and empty values must come back in their own job, in order.
    arguments: list[tuple[list[Any], dict[str, Any]]] = [
        (['quote " and \\ backslash, é ü ✓ 😀 \u2028'], {"key": "ü"}),
        ([{"nested": {"list": [1, 2.5, None, True], "empty": {}}, "ü": "key"}], {}),
        ([[[], {}, ""]], {"key": ""}),
        ([], {"value": "x" * 5_000}),
    ]
    enqueued = jobs.echo.delay_many(arguments)
    stored = {job.id: (job.args, job.kwargs) for job in Job.objects.filter(name=jobs.echo.name)}
    expected = [(args, kwargs) for args, kwargs in arguments]
    assert [stored[job.id] for job in enqueued] == expected
    assert [(job.args, job.kwargs) for job in enqueued] == expected


def test_delay_many_takes_a_batch_larger_than_postgresqls_largest_jsonb_value() -> None:
    # Each job may carry MAX_PAYLOAD_BYTES; a batch's total may pass jsonb's 256 MB cap.
    each = get_settings().max_payload_bytes - 64
    count = (1 << 28) // each + 2
    enqueued = jobs.echo.delay_many([([f"{i:08d}" + "x" * (each - 16)], {}) for i in range(count)])
    assert len(enqueued) == count
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sum(octet_length(args::text)), count(*) FROM asyncjobs_job "
            "WHERE args ->> 0 LIKE %s",
            ["%x"],
        )
        ((stored, rows),) = cursor.fetchall()
    assert rows == count and stored > 1 << 28
    assert Job.objects.get(id=enqueued[-1].id).args[0].startswith(f"{count - 1:08d}x")


def test_delay_many_of_ten_thousand_jobs() -> None:
    enqueued = jobs.add.using(queue="low", priority=3).delay_many(
        ((i, i), {}) for i in range(10_000)
    )
    assert len(enqueued) == 10_000 and len({j.id for j in enqueued}) == 10_000
    assert Job.objects.filter(queue="low", priority=3, status="scheduled").count() == 10_000


# -- unique jobs ---------------------------------------------------------------------------------


def test_a_unique_job_is_stored_once_while_it_is_active() -> None:
    first = jobs.sync_account.delay(7)
    assert jobs.sync_account.delay(7).id == first.id
    other = jobs.sync_account.delay(8)
    assert other.id != first.id
    keyed = jobs.add.using(unique_key="nightly").delay(1, 1)
    assert jobs.add.using(unique_key="nightly").delay(2, 2).id == keyed.id

    transport = MemoryTransport()
    relay(transport)
    drain(transport)
    assert statuses(first, other, keyed) == ["succeeded"] * 3
    again = jobs.sync_account.delay(7)  # the first one finished: a new one is stored
    assert again.id != first.id and again.status == "scheduled"


def test_concurrent_delay_calls_with_one_unique_key_store_one_job() -> None:
    barrier = threading.Barrier(50)
    ids: list[uuid.UUID] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            barrier.wait()
            with transaction.atomic():
                ids.append(jobs.add.using(unique_key="race").delay(1, 1).id)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=call) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert len(ids) == 50 and len(set(ids)) == 1
    assert Job.objects.filter(unique_key="race").count() == 1


# -- dependencies --------------------------------------------------------------------------------


def test_a_job_runs_only_after_all_its_dependencies_succeeded() -> None:
    transport = MemoryTransport()
    a = jobs.echo.delay("a", key="a")
    c = jobs.echo.using(run_after=3600).delay("c", key="c")
    b = jobs.echo.using(depends_on=[a, c.id]).delay("b", key="b")
    assert b.blocked and b.depends_on == [a.id, c.id]

    relay(transport)
    drain(transport)
    assert statuses(a, b, c) == ["succeeded", "scheduled", "scheduled"]
    Job.objects.filter(id=c.id).update(run_at=Job.objects.get(id=a.id).created_at)
    relay(transport)  # sends c
    drain(transport)
    relay(transport)  # releases b, then sends it
    drain(transport)
    assert statuses(a, b, c) == ["succeeded"] * 3
    rows = {j.id: j for j in Job.objects.filter(id__in=[a.id, b.id, c.id])}
    started, finished = rows[b.id].started_at, rows[c.id].finished_at
    assert started is not None and finished is not None and started > finished


def test_a_failed_dependency_cancels_the_chain_with_a_reason_naming_it() -> None:
    transport = MemoryTransport()
    a = jobs.fails_now.delay("a")
    b = jobs.echo.using(depends_on=[a]).delay("b", key="b")
    c = jobs.echo.using(depends_on=[b]).delay("c", key="c")
    relay(transport)
    drain(transport)
    relay(transport)
    assert statuses(a, b, c) == ["failed", "cancelled", "cancelled"]
    assert Job.objects.get(id=b.id).error == f"Cancelled: dependency {a.id} ({a.name}) failed"
    assert Job.objects.get(id=c.id).error == f"Cancelled: dependency {b.id} ({b.name}) cancelled"
    # Depending on a job that already failed cancels at once.
    late = jobs.echo.using(depends_on=[a]).delay("late", key="late")
    assert statuses(late) == ["cancelled"]


def test_cancelling_a_dependency_cancels_its_dependents() -> None:
    a = jobs.echo.using(run_after=3600).delay("a", key="a")
    b = jobs.echo.using(depends_on=[a]).delay("b", key="b")
    Job.objects.cancel(a.id)
    relay(MemoryTransport())
    assert statuses(a, b) == ["cancelled", "cancelled"]


def test_a_deleted_dependency_cancels_its_dependents_which_never_run() -> None:
    transport = MemoryTransport()
    done = jobs.echo.delay("done", key="done")
    relay(transport)
    drain(transport)
    later = jobs.echo.using(run_after=3600).delay("later", key="later")
    b = jobs.echo.using(depends_on=[done, later]).delay("b", key="b")
    c = jobs.echo.using(depends_on=[b]).delay("c", key="c")
    cancelled: list[uuid.UUID] = []

    def receiver(sender: object, job: Job, **kwargs: object) -> None:
        cancelled.append(job.id)

    signals.job_cancelled.connect(receiver, weak=False)
    try:
        # Not through the admin (which refuses): a shell, a script or SQL deletes the row.
        Job.objects.filter(pk=later.id).delete()
        relay(transport)
        drain(transport)
        relay(transport)
        drain(transport)
    finally:
        signals.job_cancelled.disconnect(receiver)

    assert statuses(b, c) == ["cancelled", "cancelled"]
    assert Job.objects.get(id=b.id).error == f"Cancelled: dependency {later.id} was deleted"
    assert Job.objects.get(id=c.id).error == f"Cancelled: dependency {b.id} ({b.name}) cancelled"
    assert sorted(cancelled) == sorted([b.id, c.id])
    assert runs("b") == runs("c") == 0


def test_a_dependency_deleted_while_delay_runs_never_counts_as_succeeded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gone = jobs.echo.delay("gone", key="gone")
    Job.objects.filter(pk=gone.id).update(status="succeeded")
    check = JobManager._check_dependencies

    def check_then_lose(manager: JobManager, dependencies: list[uuid.UUID]) -> None:
        # Another session deletes the row just after delay() saw it.
        check(manager, dependencies)
        Job.objects.filter(pk__in=dependencies).delete()

    monkeypatch.setattr(JobManager, "_check_dependencies", check_then_lose)
    dependent = jobs.echo.using(depends_on=[gone]).delay("x", key="x")

    relay(MemoryTransport())
    row = Job.objects.get(id=dependent.id)
    assert row.status == "cancelled"
    assert row.error == f"Cancelled: dependency {gone.id} was deleted"
    assert runs("x") == 0


def test_a_dependency_on_a_missing_job_is_an_error_at_delay() -> None:
    missing = uuid.uuid4()
    with pytest.raises(ValueError, match=f"depends_on names jobs that do not exist: {missing}"):
        jobs.echo.using(depends_on=[missing]).delay("x")
    with pytest.raises(TypeError, match="depends_on takes jobs or job ids"):
        jobs.echo.using(depends_on=[42]).delay("x")  # type: ignore[list-item]
    assert not Job.objects.exists()


# -- enqueue from SQL ----------------------------------------------------------------------------


def test_asyncjobs_enqueue_stores_the_at_most_once_policy_runscheduler_recorded(
    memory_transport: MemoryTransport,
) -> None:
    """A row inserted by SQL carries the policy of its code, as one from delay() does."""
    from django_asyncjobs.scheduler import Scheduler

    Scheduler(transport=memory_transport).record_registered_names()
    with connection.cursor() as cursor:
        cursor.execute("SELECT asyncjobs_enqueue('tests.ledgered_once', '[\"k\"]')")
        (once_id,) = cursor.fetchone()
        cursor.execute("SELECT asyncjobs_enqueue('tests.echo')")
        (plain_id,) = cursor.fetchone()
    assert Job.objects.get(pk=once_id).at_most_once is True
    assert Job.objects.get(pk=plain_id).at_most_once is False
