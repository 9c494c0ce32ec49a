"""The scheduler and worker loops in-process: claims, duplicates, retries, timeouts, priorities.

These use the in-memory transport for speed, and SQS (moto_server) where the behaviour depends on
SQS itself. tests/processes/test_flows.py proves the same flows with real processes.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.dispatch import Signal
from django.test import override_settings

from django_asyncjobs import signals
from django_asyncjobs.models import Job
from django_asyncjobs.payload import Doorbell
from django_asyncjobs.scheduler import Scheduler
from django_asyncjobs.transports.base import OutgoingMessage
from django_asyncjobs.transports.memory import MemoryTransport
from django_asyncjobs.transports.sqs import SQSTransport
from django_asyncjobs.worker import EXIT_UNFINISHED, Worker
from tests.conftest import _current_asyncjobs, drain, relay
from tests.support.processes import wait_until
from tests.testapp import jobs
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)


def runs(job: str, key: str = "") -> int:
    """Return how many times a test job's body ran (the job writes the ledger itself)."""
    query = Execution.objects.filter(job=job)
    return (query.filter(key=key) if key else query).count()


def fresh(job: Job) -> Job:
    return Job.objects.get(pk=job.pk)


def test_job_runs_and_records_result(memory_transport: MemoryTransport) -> None:
    job = jobs.add.delay(2, 3)
    assert relay(memory_transport) == 1
    assert fresh(job).status == "queued"
    drain(memory_transport)
    row = fresh(job)
    assert (row.status, row.result, row.attempts, row.worker) == ("succeeded", 5, 1, "test-worker")
    assert row.enqueued_at and row.started_at and row.finished_at
    assert row.created_at <= row.enqueued_at <= row.started_at <= row.finished_at
    assert row.heartbeat_at is not None and row.error == "" and row.traceback == ""
    assert memory_transport.depth("default") == 0


def test_async_function_and_class_jobs(memory_transport: MemoryTransport) -> None:
    a = jobs.async_add.delay(20, 22)
    b = jobs.SayHello.delay(name="Ada", punctuation="?")  # type: ignore[attr-defined]
    c = jobs.AsyncGreeter.delay(name="Bob")  # type: ignore[attr-defined]
    relay(memory_transport)
    drain(memory_transport, concurrency=3)
    assert [fresh(j).result for j in (a, b, c)] == [42, "Hello, Ada?", "Hi Bob"]


def test_message_delivered_twice_runs_the_job_once(sqs_transport: SQSTransport) -> None:
    job = jobs.echo.delay("x", key="dup")
    relay(sqs_transport)
    token = fresh(job).dispatch_token
    body = Doorbell(job_id=job.id, dispatch_token=token).encode()  # type: ignore[arg-type]
    sqs_transport.send_batch("default", [OutgoingMessage(id="copy", body=body)])
    drain(sqs_transport)
    assert runs("echo", "dup") == 1
    assert fresh(job).status == "succeeded"
    assert sqs_transport.receive("default", max_messages=10, wait_seconds=0) == []


def test_message_with_a_stale_token_runs_nothing(memory_transport: MemoryTransport) -> None:
    job = jobs.echo.delay("x", key="stale")
    relay(memory_transport)
    memory_transport.purge()
    stale = Doorbell(job_id=job.id, dispatch_token=uuid.uuid4()).encode()
    memory_transport.send_batch("default", [OutgoingMessage(id="1", body=stale)])
    # The job's own message is lost: the burst worker waits for it as long as a message can
    # stay out of sight (shortened here), then says so in its exit code.
    short = {"VISIBILITY_TIMEOUT_SECONDS": 1, "CLAIM_LOCK_TIMEOUT_SECONDS": 0.5}
    with override_settings(ASYNCJOBS={**_current_asyncjobs(), **short}):
        worker = drain(memory_transport)
    assert worker.exit_code == EXIT_UNFINISHED
    assert runs("echo", "stale") == 0
    assert fresh(job).status == "queued"
    assert memory_transport.depth("default") == 0  # dropped, not left to loop


def test_cancelled_job_is_not_run(memory_transport: MemoryTransport) -> None:
    job = jobs.echo.delay("x", key="cancel")
    relay(memory_transport)
    cancelled = Job.objects.cancel(job.id)
    assert cancelled is not None and cancelled.status == "cancelled"
    drain(memory_transport)
    assert runs("echo", "cancel") == 0
    assert fresh(job).status == "cancelled"


@pytest.mark.parametrize(
    "body",
    ["not json", "{}", json.dumps({"func": "os.system", "args": ["touch /tmp/pwned"]}), "x" * 5000],
)
def test_malformed_message_is_set_aside_and_the_worker_goes_on(
    memory_transport: MemoryTransport, body: str, caplog: pytest.LogCaptureFixture
) -> None:
    memory_transport.send_batch("default", [OutgoingMessage(id="bad", body=body)])
    job = jobs.add.delay(1, 1)
    relay(memory_transport)
    drain(memory_transport)
    assert fresh(job).status == "succeeded"
    assert "malformed message moved to the dead-letter queue" in caplog.text
    assert memory_transport.depth("default") == 0
    assert memory_transport.depth("default-dlq") == 1


def test_message_for_a_deleted_job_is_dropped(
    memory_transport: MemoryTransport, caplog: pytest.LogCaptureFixture
) -> None:
    job = jobs.add.delay(1, 1)
    relay(memory_transport)
    Job.objects.filter(pk=job.pk).delete()
    drain(memory_transport)
    assert f"dropping message job_id={job.id} queue=default reason=no such job" in caplog.text
    assert memory_transport.depth("default") == 0


def test_higher_priority_first_from_a_backlog(memory_transport: MemoryTransport) -> None:
    for i in range(5):
        jobs.low_echo.delay(f"low{i}")
    for i in range(5):
        jobs.echo.using(priority=0).delay(key=f"default{i}")
        jobs.echo.using(priority=9).delay(key=f"urgent{i}")
    for i in range(5):
        jobs.high_echo.delay(f"high{i}")
    relay(memory_transport)
    drain(memory_transport, concurrency=1)
    order = list(Execution.objects.order_by("id").values_list("key", flat=True))
    assert [k.rstrip("0123456789") for k in order] == (
        ["high"] * 5 + ["urgent"] * 5 + ["default"] * 5 + ["low"] * 5
    )


def test_retry_then_success(memory_transport: MemoryTransport) -> None:
    job = jobs.fails_then_succeeds.delay("r1", failures=2)
    for _ in range(3):
        _wait_until_due(job)
        relay(memory_transport)
        drain(memory_transport)
    row = fresh(job)
    assert (row.status, row.attempts, row.result) == ("succeeded", 3, "ok after 3")
    assert runs("fails_then_succeeds", "r1") == 3


def test_retries_exhausted_fails_with_traceback(memory_transport: MemoryTransport) -> None:
    job = jobs.always_fails.delay("x")
    relay(memory_transport)
    drain(memory_transport)
    row = fresh(job)
    assert row.status == "scheduled"  # waiting for its first retry
    assert row.started_at is not None and row.run_at > row.started_at
    assert row.error == "ValueError: boom x"
    for _ in range(2):
        _wait_until_due(job)
        relay(memory_transport)
        drain(memory_transport)
    row = fresh(job)
    assert (row.status, row.attempts) == ("failed", 3)
    assert row.error == "ValueError: boom x"
    assert 'raise ValueError(f"boom {key}")' in row.traceback
    assert "Traceback (most recent call last)" in row.traceback
    assert row.finished_at is not None


def _wait_until_due(job: Job, timeout: float = 10.0) -> None:
    wait_until(
        lambda: Job.objects.due().filter(pk=job.pk).exists(),
        timeout=timeout,
        message=lambda: f"job not due: {fresh(job).status} {fresh(job).run_at}",
    )


def test_async_job_past_its_timeout_is_cancelled(memory_transport: MemoryTransport) -> None:
    slow = jobs.async_sleeper.delay(30)
    quick = jobs.async_add.delay(1, 1)
    relay(memory_transport)
    drain(memory_transport, concurrency=2)
    row = fresh(slow)
    assert (row.status, row.attempts) == ("failed", 1)
    assert "timed out after 1 s" in row.error
    assert fresh(quick).status == "succeeded"


def test_sync_job_past_its_timeout_is_failed_and_the_worker_goes_on(
    memory_transport: MemoryTransport,
) -> None:
    threads_before = set(threading.enumerate())
    slow = jobs.sync_sleeper.delay(3)
    relay(memory_transport)
    started = time.monotonic()
    drain(memory_transport)
    assert time.monotonic() - started < 2.5
    row = fresh(slow)
    assert row.status == "failed"
    assert "timed out after 1 s" in row.error
    after = jobs.add.delay(1, 1)
    relay(memory_transport)
    drain(memory_transport)
    assert fresh(after).status == "succeeded"
    # The abandoned thread finishes its sleep a moment later: what it returns must change nothing.
    job_threads = [
        t for t in threading.enumerate() if t.name == "asyncjobs-job" and t not in threads_before
    ]
    assert job_threads, "no job thread ran the sleeper"
    wait_until(
        lambda: not any(t.is_alive() for t in job_threads),
        timeout=10,
        message="the abandoned job thread never finished",
    )
    assert fresh(slow).status == "failed"


def test_result_that_is_not_json_fails_the_attempt(memory_transport: MemoryTransport) -> None:
    job = jobs.returns_set.delay()
    relay(memory_transport)
    drain(memory_transport)
    row = fresh(job)
    assert row.status == "scheduled"
    assert "the job's return value is a set" in row.error


def test_a_result_with_a_lone_surrogate_fails_the_attempt_saying_so(
    memory_transport: MemoryTransport,
) -> None:
    job = jobs.returns_lone_surrogate.delay()
    relay(memory_transport)
    drain(memory_transport)
    row = fresh(job)
    assert row.status == "failed"
    assert (
        "the job's return value['text'] contains a lone surrogate ('\\ud800'), which is not "
        "valid UTF-8" in row.error
    )


def test_an_error_text_with_a_lone_surrogate_or_a_nul_is_stored_escaped(
    memory_transport: MemoryTransport,
) -> None:
    failing = jobs.raises_lone_surrogate.delay()
    after = jobs.add.delay(1, 2)
    relay(memory_transport)
    drain(memory_transport)
    row = fresh(failing)
    assert (row.status, row.error) == (
        "failed",
        "RuntimeError: half of a pair: \\ud800, and a NUL: \\x00",
    )
    assert "raise RuntimeError" in row.traceback
    assert fresh(after).status == "succeeded"  # the worker carried on


def test_a_stale_worker_cannot_overwrite_a_newer_outcome() -> None:
    job = jobs.add.delay(1, 1)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE asyncjobs_job SET status='queued', dispatch_token=%s WHERE id=%s",
            [uuid.UUID(int=1), job.id],
        )
    claim = Job.objects.claim(
        job_id=job.id,
        dispatch_token=uuid.UUID(int=1),
        worker="w1",
        registered_names={job.name},
        lock_timeout_seconds=1,
    )
    assert claim.job is not None and claim.job.lease_token is not None
    # Another attempt took over (as a rescue will): the first worker's lease is gone.
    Job.objects.filter(pk=job.pk).update(lease_token=uuid.uuid4())
    assert (
        Job.objects.record_success(job_id=job.id, lease_token=claim.job.lease_token, result=99)
        is None
    )
    assert Job.objects.heartbeat([(job.id, claim.job.lease_token)]).lost == {job.id}
    assert fresh(job).result is None


def test_unregistered_job_name_is_handed_back_then_failed(
    memory_transport: MemoryTransport,
) -> None:
    job = jobs.add.delay(1, 1)
    Job.objects.filter(pk=job.pk).update(name="billing.not_deployed_yet")
    relay(memory_transport)
    memory_transport.visibility_timeout_seconds = 0
    for _ in range(4):
        drain(memory_transport)
        # handed back with a delay for a newer worker; make it visible again for the test
        for stored in memory_transport._queue("default").messages:
            stored.visible_at = 0
    assert fresh(job).status == "queued"
    drain(memory_transport)
    row = fresh(job)
    assert row.status == "failed"
    assert "job name 'billing.not_deployed_yet' is not registered in this worker" in row.error


def _show_messages_again(transport: MemoryTransport) -> None:
    for stored in transport._queue("default").messages:
        stored.visible_at = 0


def test_refused_deliveries_are_counted_on_the_row_across_resent_messages(
    memory_transport: MemoryTransport,
) -> None:
    # REQUEUE_AFTER_SECONDS shorter than the hand-back: every delivery comes in a new message
    # (SQS's receive count is 1 each time), yet the job still fails after five.
    job = jobs.add.delay(1, 1)
    Job.objects.filter(pk=job.pk).update(name="billing.not_deployed_yet")
    scheduler = Scheduler(transport=memory_transport)
    for refused in range(1, 5):
        scheduler.run_once()
        drain(memory_transport)
        row = fresh(job)
        assert (row.status, row.refused_deliveries, row.attempts) == ("queued", refused, 0)
        assert row.error == (
            "Waiting: job name 'billing.not_deployed_yet' is not registered in this worker "
            f"(worker test-worker); refused {refused} of 5 deliveries, waiting for a worker "
            "that knows it"
        )
        assert Job.objects.resend_lost(requeue_after_seconds=0) == 1  # a new message
    scheduler.run_once()
    drain(memory_transport)
    row = fresh(job)
    assert (row.status, row.refused_deliveries) == ("failed", 5)
    assert row.error == (
        "job name 'billing.not_deployed_yet' is not registered in this worker "
        "(worker test-worker); gave up after 5 deliveries"
    )
    _show_messages_again(memory_transport)
    drain(memory_transport)  # the stale messages are dropped, and count nothing
    assert fresh(job).refused_deliveries == 5 and memory_transport.depth("default") == 0
    # An operator's retry (once the code is deployed) starts a fresh count.
    retried = Job.objects.retry(job.pk)
    assert retried is not None and retried.refused_deliveries == 0


def test_a_worker_that_knows_the_name_starts_a_refused_job_and_clears_the_note(
    memory_transport: MemoryTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django_asyncjobs.registry import registry

    job = jobs.add.delay(2, 2)
    relay(memory_transport)
    # An old worker of a rolling deploy, which does not know the job yet.
    known = registry.names()
    monkeypatch.setattr(registry, "names", lambda: known - {job.name})
    drain(memory_transport)
    waiting = fresh(job)
    assert waiting.status == "queued" and waiting.error.startswith("Waiting: job name ")
    token = waiting.dispatch_token
    assert token is not None

    claim = Job.objects.claim(
        job_id=job.id,
        dispatch_token=token,
        worker="new-worker",
        registered_names=known,
        lock_timeout_seconds=1,
    )
    assert claim.job is not None and claim.job.status == "running"
    assert claim.job.error == "" and claim.job.refused_deliveries == 1


@pytest.fixture
def recorded() -> Iterator[list[tuple[str, str | None, str]]]:
    """Every signal sent, as (signal name, old status, new status)."""
    events: list[tuple[str, str | None, str]] = []
    named: dict[str, Signal] = {
        name: getattr(signals, name)
        for name in (
            "job_enqueued",
            "job_started",
            "job_succeeded",
            "job_failed",
            "job_retrying",
            "job_cancelled",
        )
    }
    receivers = []
    for name, signal in named.items():

        def receiver(sender: Any, job: Job, _name: str = name, **kwargs: Any) -> None:
            events.append((_name, None, job.status))

        signal.connect(receiver, weak=False)
        receivers.append((signal, receiver))

    def changed(sender: Any, job: Job, old_status: str | None, new_status: str, **kw: Any) -> None:
        events.append(("changed", old_status, new_status))

    signals.job_status_changed.connect(changed, weak=False)
    yield events
    signals.job_status_changed.disconnect(changed)
    for signal, receiver in receivers:
        signal.disconnect(receiver)


def test_signals_fire_on_every_status_change(
    memory_transport: MemoryTransport, recorded: list[tuple[str, str | None, str]]
) -> None:
    job = jobs.always_fails.delay("sig")
    relay(memory_transport)
    drain(memory_transport)
    assert recorded == [
        ("job_enqueued", None, "scheduled"),
        ("changed", None, "scheduled"),
        ("changed", "scheduled", "queued"),
        ("job_started", None, "running"),
        ("changed", "queued", "running"),
        ("job_retrying", None, "scheduled"),
        ("changed", "running", "scheduled"),
    ]
    recorded.clear()
    Job.objects.filter(pk=job.pk).update(status="failed")
    Job.objects.retry(job.id)
    Job.objects.cancel(job.id)
    assert recorded == [
        ("changed", "failed", "scheduled"),
        ("job_cancelled", None, "cancelled"),
        ("changed", "scheduled", "cancelled"),
    ]


def test_a_failing_receiver_never_breaks_the_worker(
    memory_transport: MemoryTransport, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    signals.job_started.connect(broken)
    signals.job_succeeded.connect(broken)
    try:
        job = jobs.add.delay(1, 2)
        relay(memory_transport)
        drain(memory_transport)
    finally:
        signals.job_started.disconnect(broken)
        signals.job_succeeded.disconnect(broken)
    assert fresh(job).status == "succeeded"
    assert caplog.text.count("signal receiver failed") == 2


def test_worker_logs_one_line_per_start_and_end(
    memory_transport: MemoryTransport, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="django_asyncjobs")
    job = jobs.add.delay(1, 2)
    relay(memory_transport)
    drain(memory_transport)
    lines = [r.getMessage() for r in caplog.records if r.name == "django_asyncjobs.worker"]
    assert (
        f"job started name=tests.testapp.jobs.add id={job.id} attempt=1 queue=default receives=1"
        in lines
    )
    assert any(
        line.startswith(
            f"job succeeded name=tests.testapp.jobs.add id={job.id} attempt=1 duration="
        )
        for line in lines
    )


def test_an_idle_worker_long_polls_instead_of_spinning() -> None:
    class Counting(MemoryTransport):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[float] = []

        def receive(self, queue: str, *, max_messages: int, wait_seconds: float) -> list[Any]:
            self.calls.append(wait_seconds)
            return super().receive(queue, max_messages=max_messages, wait_seconds=wait_seconds)

    transport = Counting()
    from django_asyncjobs.worker import Worker

    worker = Worker(transport=transport, queues=["high", "default", "low"], wait_seconds=1)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        time.sleep(3)  # the behaviour under test: three seconds of idling, counted below
        job = jobs.add.delay(1, 1)
        relay(transport)
        wait_until(
            lambda: fresh(job).status == "succeeded",
            timeout=10,
            message=lambda: f"job {fresh(job).status}",
        )
    finally:
        worker.stop()
        thread.join(10)
    short_polls = sum(1 for wait in transport.calls if wait == 0)
    # One sweep at start and one after the job; never one per tick while idle.
    assert short_polls <= 2 * 3, transport.calls
    assert sum(1 for wait in transport.calls if wait > 0) >= 3


def test_claims_are_batched_and_the_drain_makes_no_n_plus_one_queries(
    memory_transport: MemoryTransport,
) -> None:
    from django.test.utils import CaptureQueriesContext

    from django_asyncjobs.registry import registry

    created = jobs.add.delay_many([((i, i), {}) for i in range(10)])
    relay(memory_transport)
    messages = memory_transport.receive("default", max_messages=10, wait_seconds=0)
    bells = [Doorbell.decode(m.body) for m in messages]
    with CaptureQueriesContext(connection) as claiming:
        results = Job.objects.claim_many(
            [(b.job_id, b.dispatch_token) for b in bells],
            worker="w",
            registered_names=registry.names(),
            lock_timeout_seconds=1,
        )
    assert [r.outcome.value for r in results] == ["claimed"] * 10
    # One statement claims them all and commits (its lock timeout set in the statement).
    assert len(ours(claiming)) == 1, ours(claiming)
    assert {r.job.id for r in results if r.job} == {j.id for j in created}

    # A whole drain: the main loop's queries grow with the jobs, never with jobs x something.
    more = jobs.add.delay_many([((i, 1), {}) for i in range(40)])
    relay(memory_transport)
    with CaptureQueriesContext(connection) as draining:
        drain(memory_transport, concurrency=8)
    assert all(fresh(j).status == "succeeded" for j in more)
    # Per job one outcome statement; per received batch one claim statement.
    assert len(ours(draining)) <= 2 * len(more), len(ours(draining))


def ours(captured: Any) -> list[str]:
    """The captured SQL minus the test app's signal ledger (its receivers write per signal)."""
    return [q["sql"] for q in captured.captured_queries if "testapp_" not in q["sql"]]


def test_a_job_thread_starts_each_job_clean(memory_transport: MemoryTransport) -> None:
    """Job threads are reused: one job's translation or open transaction must not leak."""
    from django.conf import settings

    first = jobs.leaves_state_behind.delay("de")
    second = jobs.reports_state.delay()
    relay(memory_transport)
    drain(memory_transport, concurrency=1)  # one thread runs both, in this order
    first_started, second_started = fresh(first).started_at, fresh(second).started_at
    assert first_started is not None and second_started is not None
    assert first_started < second_started
    row = fresh(second)
    assert row.status == "succeeded", row.error
    # The first job's transaction was never committed: rolled back when its thread's
    # connections were closed, so only the second job's ledger row exists.
    assert row.result == {"language": settings.LANGUAGE_CODE, "ledger": 1}


def test_prefetched_low_jobs_do_not_hold_up_a_new_high_one_for_long(
    memory_transport: MemoryTransport,
) -> None:
    """A high-priority job that arrives while the worker holds prefetched low ones waits for at
    most those few, never for the whole backlog."""
    from django_asyncjobs.worker import Worker

    lows = [jobs.slow_low.delay(f"low{i}", 0.2) for i in range(30)]
    relay(memory_transport)
    worker = Worker(
        transport=memory_transport, queues=["high", "low"], concurrency=1, wait_seconds=0
    )
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        # Once a few lows ran, the worker holds as many messages as it started in the last second.
        wait_until(lambda: runs("slow_low") >= 5, timeout=30, message="the low jobs never ran")
        high = jobs.high_echo.delay("high")
        relay(memory_transport)
        wait_until(
            lambda: fresh(high).status == "succeeded",
            timeout=30,
            message=lambda: f"the high job is {fresh(high).status}",
        )
    finally:
        worker.stop(force=False)
        thread.join(30)
    row = fresh(high)
    assert row.enqueued_at is not None and row.started_at is not None
    low_ids = [j.id for j in lows]
    waiting = Job.objects.filter(id__in=low_ids).exclude(started_at__lte=row.enqueued_at).count()
    overtaking = Job.objects.filter(
        id__in=low_ids, started_at__gt=row.enqueued_at, started_at__lt=row.started_at
    ).count()
    # Without this margin the held few and the whole backlog would look alike.
    assert waiting >= 15, f"only {waiting} low jobs were left when the high one arrived"
    # One slot and 0.2 s jobs: at most 5 starts in any second (6 on its edges), so at most that
    # many messages were held (PREFETCH, capped by the last second's starts), and only held ones
    # may start between the high job's arrival and its start. Waiting for the backlog: ~24.
    assert overtaking <= 6, f"{overtaking} of {waiting} waiting low jobs started first"


@pytest.mark.parametrize("conn_max_age", [0, 60])
def test_job_code_gets_djangos_request_handling_of_connections(
    memory_transport: MemoryTransport, conn_max_age: int
) -> None:
    from django.db import connections

    # Read by each new connection of the job threads, as CONN_MAX_AGE in DATABASES would be.
    settings_dict = connections.settings["default"]
    previous = settings_dict["CONN_MAX_AGE"]
    settings_dict["CONN_MAX_AGE"] = conn_max_age
    try:
        batch = [
            jobs.session.using(priority=3).delay(),
            jobs.session.using(priority=2).delay(leave_autocommit_off=True),
            jobs.session.using(priority=1).delay(),
            jobs.session.using(priority=0).delay(),
        ]
        relay(memory_transport)
        drain(memory_transport, concurrency=1)  # one job thread runs them in turn
    finally:
        settings_dict["CONN_MAX_AGE"] = previous
    first, careless, after, last = (fresh(job).result for job in batch)
    assert all(r is not None and r["autocommit"] for r in (first, careless, after, last))
    assert first is not None and careless is not None and after is not None and last is not None
    # As for views: CONN_MAX_AGE = 0 closes a job's connection when it ends; a longer one keeps
    # it for the next job. A connection a job left in a bad state is closed either way.
    assert (first["pid"] == careless["pid"]) is (conn_max_age > 0)
    assert after["pid"] != careless["pid"]
    assert (after["pid"] == last["pid"]) is (conn_max_age > 0)


def test_a_pattern_worker_long_polls_each_queue_with_one_thread(
    memory_transport: MemoryTransport,
) -> None:
    """The first discovery and the start of the pollers used to start two threads a queue."""
    for queue in ("reports-daily", "reports-weekly"):
        memory_transport.ensure_queue(queue)
    worker = Worker(
        transport=memory_transport,
        queues=["high", "reports-*"],
        concurrency=1,
        worker_id="pattern-worker",
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()

    def pollers() -> list[str]:
        return sorted(t.name for t in threading.enumerate() if t.name.startswith("asyncjobs-poll-"))

    try:
        wait_until(lambda: len(pollers()) >= 3, timeout=10, message="the pollers never started")
        time.sleep(0.5)  # a second thread for a queue would start right after the first
        assert pollers() == [
            "asyncjobs-poll-high",
            "asyncjobs-poll-reports-daily",
            "asyncjobs-poll-reports-weekly",
        ]
    finally:
        worker.stop(force=False)
        thread.join(30)
