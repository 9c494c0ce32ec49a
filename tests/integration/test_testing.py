"""``run_jobs()``: users run their jobs inside their own tests, in the test's transaction.

Every test here runs in pytest-django's plain ``django_db`` (transaction=False): the test is one
transaction that is rolled back at the end and that no other connection can see, as in a user's
suite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from django.db import connection
from django.dispatch import Signal
from django.test import TestCase

from django_asyncjobs import signals
from django_asyncjobs.exceptions import JobNotRegistered
from django_asyncjobs.models import Job, JobAttempt
from django_asyncjobs.testing import WORKER_ID, JobFailed, TooManyJobs, run_jobs
from tests.testapp import jobs
from tests.testapp.models import Execution, Transition

pytestmark = pytest.mark.django_db

CaptureCallbacks = Callable[..., Any]


def runs(job: str, key: str = "") -> int:
    """Return how many times a test job's body ran (the job writes the ledger itself)."""
    query = Execution.objects.filter(job=job)
    return (query.filter(key=key) if key else query).count()


def fresh(job: Job) -> Job:
    return Job.objects.get(pk=job.pk)


def visible_elsewhere(job: Job) -> bool:
    """Return whether another connection to the test database can see *job*'s row."""
    params = connection.get_connection_params()
    for key in ("cursor_factory", "context", "prepare_threshold"):
        params.pop(key, None)
    with psycopg.connect(**params, autocommit=True) as other:
        row = other.execute("SELECT count(*) FROM asyncjobs_job WHERE id = %s", [job.id]).fetchone()
    assert row is not None
    return bool(row[0])


# -- running in the test's transaction -------------------------------------------------------------


def test_a_due_job_runs_in_the_callers_transaction_like_a_worker_runs_it() -> None:
    job = jobs.add.delay(2, 3)

    ran = run_jobs()

    assert connection.in_atomic_block and not visible_elsewhere(job)
    assert [(j.id, j.status, j.result, j.attempts, j.worker) for j in ran] == [
        (job.id, "succeeded", 5, 1, WORKER_ID)
    ]
    row = fresh(job)
    assert (row.status, row.result, row.error, row.traceback) == ("succeeded", 5, "", "")
    # The stamps of the relay, the claim and the outcome are all there.
    assert row.enqueued_at and row.started_at and row.heartbeat_at and row.finished_at
    assert row.dispatch_token is not None and row.lease_token is not None
    attempts = list(JobAttempt.objects.filter(job_id=job.id).values_list("number", "outcome"))
    assert attempts == [(1, "succeeded")]
    assert runs("add", "2+3") == 1
    assert run_jobs() == []


def test_class_based_and_async_jobs_run() -> None:
    a = jobs.async_add.delay(20, 22)
    b = jobs.SayHello.delay(name="Ada", punctuation="?")  # type: ignore[attr-defined]
    c = jobs.AsyncGreeter.delay(name="Bob")  # type: ignore[attr-defined]

    ran = {j.id: j for j in run_jobs()}

    assert [ran[j.id].result for j in (a, b, c)] == [42, "Hello, Ada?", "Hi Bob"]
    assert {j.status for j in ran.values()} == {"succeeded"}


def test_an_async_job_using_the_orm_sees_and_writes_the_test_transaction() -> None:
    # Written by the test and not committed: only this connection can see it.
    Execution.objects.create(job="test", key="shared")
    job = jobs.async_ledger.delay("shared")

    (ran,) = run_jobs()

    # Its sync_to_async calls ran on the test's connection: it saw the test's row, and its own
    # write is part of the test's transaction (another connection would have committed it).
    assert (ran.status, ran.result) == ("succeeded", 2), ran.error
    assert runs("async_ledger", "shared") == 1
    assert not visible_elsewhere(job)


def test_timeouts_are_not_enforced() -> None:
    job = jobs.async_sleeper.delay(1.1)  # its timeout is 1 s

    run_jobs()

    assert (fresh(job).status, fresh(job).result) == ("succeeded", "woke")


def test_a_job_that_breaks_the_transaction_fails_and_the_test_goes_on() -> None:
    job = jobs.breaks_transaction.delay("dup")

    (ran,) = run_jobs()

    assert ran.status == "failed" and ran.error.startswith("IntegrityError:"), ran.error
    # The test's transaction is usable again; the job's writes were rolled back with it.
    assert fresh(job).status == "failed"
    assert runs("breaks_transaction") == 0
    assert jobs.add.delay(1, 1) and [j.result for j in run_jobs()] == [2]


# -- failures, retries, errors -----------------------------------------------------------------


def test_a_failed_attempt_is_rescheduled_and_not_run_again() -> None:
    job = jobs.always_fails.delay("x")

    (ran,) = run_jobs()

    assert (ran.status, ran.attempts, ran.error) == ("scheduled", 1, "ValueError: boom x")
    assert 'raise ValueError(f"boom {key}")' in ran.traceback
    assert ran.started_at is not None and ran.run_at > ran.started_at  # after the backoff
    row = fresh(job)
    assert row.status == "scheduled" and row.lease_token is None
    # Due again after the job's backoff, which never passes inside a transaction: now() stands
    # still. It is not run again, as a worker would not run it yet.
    assert run_jobs() == []
    assert runs("always_fails", "x") == 1


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_a_retry_due_meanwhile_waits_for_the_next_call() -> None:
    failing = jobs.always_fails.delay("t")  # retried 0.2 s later (the suite's backoff)
    jobs.slow_job.using(queue="low").delay(0.5, key="t")  # runs after it, for longer

    ran = run_jobs()

    assert [(j.name, j.status) for j in ran] == [
        ("tests.testapp.jobs.always_fails", "scheduled"),
        ("tests.testapp.jobs.slow_job", "succeeded"),
    ]
    # The retry fell due while slow_job ran; the call did not run it, whatever the timing.
    assert Job.objects.due().filter(pk=failing.pk).exists()
    assert runs("always_fails", "t") == 1
    assert [(j.id, j.attempts) for j in run_jobs()] == [(failing.id, 2)]


def test_include_delayed_runs_retries_until_the_job_fails_for_good() -> None:
    job = jobs.always_fails.delay("y")  # max_retries=2
    run_jobs()

    ran = run_jobs(include_delayed=True)

    assert [(j.status, j.attempts) for j in ran] == [("scheduled", 2), ("failed", 3)]
    assert runs("always_fails", "y") == 3
    outcomes = JobAttempt.objects.filter(job_id=job.id).order_by("number")
    assert [(a.number, a.outcome, a.worker) for a in outcomes] == [
        (1, "failed", WORKER_ID),
        (2, "failed", WORKER_ID),
        (3, "failed", WORKER_ID),
    ]


def test_include_delayed_runs_a_job_until_it_succeeds() -> None:
    jobs.fails_then_succeeds.delay("k", failures=2)

    ran = run_jobs(include_delayed=True)

    assert [j.status for j in ran] == ["scheduled", "scheduled", "succeeded"]
    assert ran[-1].result == "ok after 3"


def test_include_delayed_runs_jobs_delayed_at_enqueue() -> None:
    later = jobs.echo.using(run_after=3600).delay("later", key="later")

    assert run_jobs() == []
    assert fresh(later).status == "scheduled" and runs("echo", "later") == 0

    assert [(j.id, j.result) for j in run_jobs(include_delayed=True)] == [(later.id, "later")]


def test_raise_errors_records_the_attempt_then_raises_the_jobs_exception() -> None:
    failing = jobs.always_fails.delay("r")
    after = jobs.low_echo.delay("after")  # in a lower queue: would run after the failure

    with pytest.raises(ValueError, match="boom r") as raised:
        run_jobs(raise_errors=True)

    assert any("tests.testapp.jobs.always_fails" in note for note in raised.value.__notes__)
    assert (fresh(failing).status, fresh(failing).error) == ("scheduled", "ValueError: boom r")
    assert fresh(after).status == "scheduled" and runs("low_echo") == 0


def test_raise_errors_for_a_failure_that_is_not_an_exception_of_the_job() -> None:
    job = jobs.returns_set.delay()

    with pytest.raises(JobFailed, match="TypeError") as raised:
        run_jobs(raise_errors=True)

    assert raised.value.job.id == job.id and fresh(job).error.startswith("TypeError")


def test_an_unregistered_job_fails_with_a_clear_error() -> None:
    job = Job.objects.enqueue(
        name="tests.gone", args=[], kwargs={}, queue="default", priority=0, max_retries=3,
        timeout_seconds=None,
    )  # fmt: skip

    (ran,) = run_jobs()

    assert (ran.id, ran.status, ran.attempts) == (job.id, "failed", 0)
    assert "job name 'tests.gone' is not registered" in ran.error

    other = Job.objects.run_again(job)
    with pytest.raises(JobNotRegistered, match=r"tests\.gone"):
        run_jobs(raise_errors=True)
    assert fresh(other).status == "failed"


@pytest.mark.parametrize(
    ("definition", "status"),
    [(jobs.interrupted, "scheduled"), (jobs.interrupted_once, "failed")],
)
def test_an_interrupted_run_hands_the_job_back_like_a_stopping_worker(
    definition: Any, status: str
) -> None:
    job = definition.delay("ctrl-c")

    with pytest.raises(KeyboardInterrupt):
        run_jobs()

    # Due again at once (the interruption does not use up an attempt), except at_most_once.
    row = fresh(job)
    assert (row.status, row.attempts, row.interruptions) == (status, 0, 1)
    assert JobAttempt.objects.get(job_id=job.id).outcome == "interrupted"
    assert row.error.startswith("interrupted: run_jobs() was stopped")
    assert runs(definition.__name__, "ctrl-c") == 1


# -- what runs, and in which order ---------------------------------------------------------------


def test_dependents_are_released_and_run_in_the_same_call() -> None:
    first = jobs.add.delay(1, 2)
    second = jobs.echo.using(depends_on=[first]).delay("second", key="second")
    third = jobs.echo.using(depends_on=[second]).delay("third", key="third")
    assert fresh(third).blocked

    ran = run_jobs()

    assert [(j.id, j.status) for j in ran] == [
        (first.id, "succeeded"),
        (second.id, "succeeded"),
        (third.id, "succeeded"),
    ]


def test_dependents_of_a_failed_job_are_cancelled_not_run() -> None:
    failing = jobs.fails_now.delay("dep")
    dependent = jobs.echo.using(depends_on=[failing]).delay("never", key="never")

    ran = run_jobs()

    assert [(j.id, j.status) for j in ran] == [(failing.id, "failed")]
    row = fresh(dependent)
    assert row.status == "cancelled" and row.error.startswith("Cancelled: dependency")
    assert runs("echo", "never") == 0


def test_jobs_enqueued_by_jobs_run_in_the_same_call() -> None:
    jobs.enqueues_next.delay("chain", 3)

    ran = run_jobs()

    assert [(j.status, j.result) for j in ran] == [("succeeded", h) for h in (3, 2, 1, 0)]


def test_max_jobs_stops_a_job_that_enqueues_itself_forever() -> None:
    # Exactly max_jobs jobs is fine.
    jobs.enqueues_next.delay("five", 4)
    assert len(run_jobs(max_jobs=5)) == 5

    jobs.enqueues_next.delay("forever", 10**6)
    with pytest.raises(TooManyJobs, match=r"max_jobs=5 .*enqueues_next x5"):
        run_jobs(max_jobs=5)

    assert runs("enqueues_next", "forever") == 5
    # The sixth was not started.
    assert list(Job.objects.values_list("status", flat=True).filter(status="scheduled")) == [
        "scheduled"
    ]


def test_jobs_run_in_queue_then_priority_order() -> None:
    jobs.low_echo.delay("low")
    jobs.echo.delay("default-0", key="default-0")
    jobs.echo.using(priority=9).delay("default-9", key="default-9")
    jobs.echo.using(queue="high", priority=-1).delay("high--1", key="high--1")
    jobs.high_echo.delay("high-5")  # priority 5

    ran = run_jobs()

    assert [j.result for j in ran] == ["high-5", "high--1", "default-9", "default-0", "low"]


def test_names_and_queues_restrict_what_runs() -> None:
    add = jobs.add.delay(1, 1)
    echo = jobs.echo.delay("e", key="e")
    high = jobs.high_echo.delay("h")
    low = jobs.low_echo.delay("l")
    hello = jobs.SayHello.delay(name="Ada")  # type: ignore[attr-defined]

    assert {j.id for j in run_jobs(names=[jobs.high_echo, "tests.echo"])} == {high.id, echo.id}
    assert [j.id for j in run_jobs(names=[jobs.SayHello])] == [hello.id]
    assert fresh(add).status == fresh(low).status == "scheduled"

    assert [j.id for j in run_jobs(queues=["lo*"])] == [low.id]
    assert fresh(add).status == "scheduled"
    assert [j.id for j in run_jobs()] == [add.id]


def test_names_that_run_nothing_are_refused() -> None:
    with pytest.raises(ValueError, match=r"no job named 'tests\.nope'"):
        run_jobs(names=["tests.nope"])
    with pytest.raises(TypeError, match="list of job names"):
        run_jobs(names="tests.echo")
    with pytest.raises(TypeError, match="list of queue names"):
        run_jobs(queues="high")
    with pytest.raises(ValueError, match="max_jobs"):
        run_jobs(max_jobs=0)


def test_a_unique_job_runs_once_and_can_be_enqueued_again_after() -> None:
    first = jobs.sync_account.delay(7)
    assert jobs.sync_account.delay(7).id == first.id

    assert [j.id for j in run_jobs()] == [first.id]
    assert runs("sync_account", "7") == 1

    again = jobs.sync_account.delay(7)
    assert again.id != first.id
    assert [(j.id, j.result) for j in run_jobs()] == [(again.id, 7)]


@pytest.mark.parametrize("definition", [jobs.progressing, jobs.async_progressing])
def test_current_job_and_report_progress_work_inside(definition: Any) -> None:
    job = definition.delay(3)

    (ran,) = run_jobs()

    assert ran.status == "succeeded", ran.error
    assert ran.result is not None and ran.result["attempt"] == 1
    # Throttled like under a worker: the first and the final report are written.
    assert ran.result["written"] == [True, False, True]
    progress = fresh(job).progress
    assert progress is not None
    assert (progress["done"], progress["total"], progress["message"]) == (3, 3, "step 3")


def test_the_sync_job_sees_its_own_context() -> None:
    jobs.progressing.delay(1)
    (ran,) = run_jobs()
    assert ran.result == {"attempt": 1, "name": "tests.testapp.jobs.progressing", "written": [True]}


# -- signals --------------------------------------------------------------------------------------


@pytest.fixture
def received() -> Iterator[list[tuple[str, str]]]:
    """Record ``(signal, job status)`` for the job signals run_jobs sends."""
    seen: list[tuple[str, str]] = []
    watched: dict[str, Signal] = {
        "started": signals.job_started,
        "succeeded": signals.job_succeeded,
        "retrying": signals.job_retrying,
    }
    handlers = {}
    for label, signal in watched.items():

        def handler(sender: Any, job: Job, _label: str = label, **kwargs: Any) -> None:
            seen.append((_label, job.status))

        signal.connect(handler, weak=False)
        handlers[label] = handler
    yield seen
    for label, signal in watched.items():
        signal.disconnect(handlers[label])


def test_signals_are_sent_when_the_test_captures_commit_callbacks(
    received: list[tuple[str, str]], django_capture_on_commit_callbacks: CaptureCallbacks
) -> None:
    job = jobs.add.delay(1, 2)
    with django_capture_on_commit_callbacks(execute=True):
        run_jobs()

    assert received == [("started", "running"), ("succeeded", "succeeded")]
    transitions = Transition.objects.filter(job_id=job.id).order_by("id")
    assert [(t.old_status, t.new_status) for t in transitions] == [
        ("scheduled", "queued"),
        ("queued", "running"),
        ("running", "succeeded"),
    ]


def test_without_capturing_no_signal_is_sent(received: list[tuple[str, str]]) -> None:
    jobs.add.delay(1, 2)
    jobs.always_fails.delay("s")

    assert [j.status for j in run_jobs()] == ["succeeded", "scheduled"]

    assert received == []


class RunJobsInATestCase(TestCase):
    """The same from a Django ``TestCase``, with ``captureOnCommitCallbacks``."""

    def test_runs_and_sends_signals(self) -> None:
        job = jobs.echo.delay("tc", key="tc")
        with self.captureOnCommitCallbacks(execute=True) as callbacks:
            ran = run_jobs()
        assert [(j.id, j.result) for j in ran] == [(job.id, "tc")]
        assert len(callbacks) == 3  # queued, running, succeeded
        assert Transition.objects.filter(job_id=job.id).count() == 3
