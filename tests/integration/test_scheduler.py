"""The scheduler's relay: due jobs only, priority order, batches, failures put back, concurrency."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence

import pytest
from django.db import connection, connections
from django.test import override_settings

from django_asyncjobs.exceptions import TransportError
from django_asyncjobs.models import Job
from django_asyncjobs.payload import Doorbell, decode_message
from django_asyncjobs.queries import ClaimResult, DueJob
from django_asyncjobs.scheduler import Scheduler
from django_asyncjobs.transports.base import OutgoingMessage
from django_asyncjobs.transports.memory import MemoryTransport
from django_asyncjobs.worker import Worker
from tests.conftest import _current_asyncjobs, relay
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


class RecordingTransport(MemoryTransport):
    """Records every batch; can refuse entries or fail whole calls."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[tuple[str, list[uuid.UUID]]] = []
        self.refuse: set[str] = set()  # entry ids (position in batch) SQS "refuses"
        self.fail_after_batches: int | None = None
        self.lock = threading.Lock()

    def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> set[str]:
        with self.lock:
            if self.fail_after_batches is not None and len(self.batches) >= self.fail_after_batches:
                raise TransportError("SQS SendMessageBatch on queue 'x' failed: unreachable")
            self.batches.append((queue, [Doorbell.decode(m.body).job_id for m in messages]))
        super().send_batch(queue, [m for m in messages if m.id not in self.refuse])
        return {m.id for m in messages if m.id in self.refuse}

    def sent_ids(self) -> list[uuid.UUID]:
        return [job_id for _, ids in self.batches for job_id in ids]


def test_only_due_jobs_are_relayed() -> None:
    transport = RecordingTransport()
    now = jobs.add.delay(1, 1)
    later = jobs.add.using(run_after=3600).delay(1, 1)
    assert relay(transport) == 1
    assert transport.sent_ids() == [now.id]
    assert Job.objects.get(pk=later.pk).status == "scheduled"
    assert Job.objects.get(pk=now.pk).dispatch_token is not None


def test_jobs_are_sent_in_batches_of_ten_highest_priority_first() -> None:
    transport = RecordingTransport()
    low = [jobs.echo.using(priority=0).delay(key=str(i)).id for i in range(15)]
    high = [jobs.echo.using(priority=5).delay(key=str(i)).id for i in range(15)]
    assert relay(transport) == 30
    assert [len(ids) for _, ids in transport.batches] == [10, 10, 10]
    assert set(transport.sent_ids()[:15]) == set(high)
    assert set(transport.sent_ids()[15:]) == set(low)


def test_refused_entries_are_put_back_and_sent_next_pass() -> None:
    transport = RecordingTransport()
    transport.refuse = {"0"}
    created = [jobs.add.delay(i, i).id for i in range(3)]
    assert relay(transport) == 2
    statuses = Counter(Job.objects.values_list("status", flat=True))
    assert statuses == {"queued": 2, "scheduled": 1}
    transport.refuse = set()
    assert relay(transport) == 1
    assert set(Job.objects.filter(status="queued").values_list("id", flat=True)) == set(created)


def test_sqs_unreachable_keeps_jobs_scheduled_then_relays_them() -> None:
    transport = RecordingTransport()
    transport.fail_after_batches = 1
    for i in range(25):
        jobs.add.delay(i, i)
    with pytest.raises(TransportError, match="unreachable"):
        relay(transport)
    # The batch that got out stays queued; the rest waits, nothing is lost.
    assert Counter(Job.objects.values_list("status", flat=True)) == {"queued": 10, "scheduled": 15}
    assert Job.objects.filter(status="scheduled", dispatch_token__isnull=False).count() == 0
    transport.fail_after_batches = None
    assert relay(transport) == 15
    assert Job.objects.filter(status="queued").count() == 25


def test_a_message_sent_before_a_crashed_commit_claims_nothing() -> None:
    transport = RecordingTransport()
    job = jobs.echo.delay(key="crash")

    class Crash(Exception):
        pass

    def send_then_crash(due: list[DueJob]) -> set[uuid.UUID]:
        Scheduler(transport=transport)._send(due)
        raise Crash

    with pytest.raises(Crash):
        Job.objects.relay_due(queue="default", limit=10, send=send_then_crash)
    assert Job.objects.get(pk=job.pk).status == "scheduled"
    (message,) = transport.receive("default", max_messages=10, wait_seconds=0)
    bell = Doorbell.decode(message.body)
    claim = claim_bell(bell, job, lock_timeout_seconds=1)
    assert claim.job is None


def claim_bell(bell: Doorbell, job: Job, *, lock_timeout_seconds: float) -> ClaimResult[Job]:
    """Claim the job *bell* names as worker "w" would, knowing *job*'s name."""
    return Job.objects.claim(
        job_id=bell.job_id,
        dispatch_token=bell.dispatch_token,
        worker="w",
        registered_names={job.name},
        lock_timeout_seconds=lock_timeout_seconds,
    )


def test_several_schedulers_never_send_a_job_twice() -> None:
    transport = RecordingTransport()
    created = {jobs.add.delay(i, i).id for i in range(300)}
    errors: list[BaseException] = []

    def run() -> None:
        try:
            scheduler = Scheduler(transport=transport, batch_size=20)
            scheduler.max_queued_per_queue = 0  # all 300 due at once: no flow control here
            scheduler.run_once()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    sent = transport.sent_ids()
    assert len(sent) == len(set(sent)) == 300
    assert set(sent) == created


@contextlib.contextmanager
def relay_held_open(*, per_message: int = 1) -> Iterator[MemoryTransport]:
    """Relay the due jobs of "default" in a thread whose send is held: yield the transport
    once the message is sent and the relay's transaction is still open; it commits 0.5 s
    later."""
    sent = threading.Event()
    release = threading.Event()
    transport = MemoryTransport()

    def send(due: list[DueJob]) -> set[uuid.UUID]:
        failed = Scheduler(transport=transport)._send(due, per_message=per_message)
        sent.set()
        release.wait(10)
        return failed

    def relay_slowly() -> None:
        try:
            Job.objects.relay_due(queue="default", limit=10, send=send)
        finally:
            connections.close_all()

    thread = threading.Thread(target=relay_slowly)
    thread.start()
    try:
        assert sent.wait(10)
        threading.Timer(0.5, release.set).start()
        yield transport
    finally:
        release.set()
        thread.join(10)


def test_a_claim_waits_for_the_relay_to_commit() -> None:
    """A message that arrives before the scheduler commits waits on the row lock, then claims."""
    job = jobs.add.delay(1, 1)
    with relay_held_open() as transport:
        (message,) = transport.receive("default", max_messages=1, wait_seconds=0)
        bell = Doorbell.decode(message.body)
        claim = claim_bell(bell, job, lock_timeout_seconds=5)
    assert claim.job is not None and claim.job.status == "running"


def test_jobs_handed_back_before_the_scheduler_commits_go_back_once_it_has() -> None:
    """A worker may hand a message's jobs back before the relay that sent it commits: the hand
    back waits for the commit and puts the jobs back, instead of reading them as still
    scheduled, changing nothing, and leaving them queued without a message."""
    created = [jobs.add.delay(i, i) for i in range(3)]
    with relay_held_open(per_message=3) as transport:
        (message,) = transport.receive("default", max_messages=1, wait_seconds=0)
        pairs = [(d.job_id, d.dispatch_token) for d in decode_message(message.body)]
        handed_back = Job.objects.return_queued(pairs, lock_timeout_seconds=5)
    assert handed_back == 3
    assert {Job.objects.get(pk=job.pk).status for job in created} == {"scheduled"}


def test_the_relay_uses_the_due_index() -> None:
    for i in range(2000):
        jobs.add.using(run_after=3600).delay(i, i)
        jobs.add.using(queue="low").delay(i, i)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE asyncjobs_job")
        cursor.execute(
            "EXPLAIN SELECT id FROM asyncjobs_job WHERE status = 'scheduled' AND NOT blocked "
            "AND queue = 'default' "
            "AND run_at <= now() ORDER BY priority DESC, run_at LIMIT 500 FOR UPDATE SKIP LOCKED"
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Seq Scan" not in plan, plan
    assert "asyncjobs_relay_idx" in plan or "asyncjobs_next_due_idx" in plan, plan


def test_a_claim_gives_up_on_a_row_locked_too_long() -> None:
    from django_asyncjobs.queries import ClaimOutcome

    job = jobs.add.delay(1, 1)
    with row_locked(job):
        claim = Job.objects.claim(
            job_id=job.id,
            dispatch_token=uuid.uuid4(),
            worker="w",
            registered_names={job.name},
            lock_timeout_seconds=0.2,
        )
    assert claim.outcome is ClaimOutcome.BUSY


@contextlib.contextmanager
def row_locked(job: Job) -> Iterator[None]:
    """Hold *job*'s row lock (SELECT ... FOR UPDATE in another session) inside the block."""
    locked = threading.Event()
    done = threading.Event()

    def hold_lock() -> None:
        from django.db import transaction

        try:
            with transaction.atomic():
                list(Job.objects.select_for_update().filter(pk=job.pk))
                locked.set()
                done.wait(30)
        finally:
            connections.close_all()

    thread = threading.Thread(target=hold_lock)
    thread.start()
    assert locked.wait(10)
    try:
        yield
    finally:
        done.set()
        thread.join(10)


def test_a_claim_of_a_sent_job_whose_row_is_held_gives_up_after_its_lock_timeout() -> None:
    """The one-statement claim sees the job queued and waits for its row lock: its own lock
    timeout bounds the wait, then the careful path reports the message busy."""
    import time

    from django_asyncjobs.queries import ClaimOutcome

    transport = MemoryTransport()
    job = jobs.add.delay(1, 1)
    Scheduler(transport=transport).run_once()
    (message,) = transport.receive("default", max_messages=1, wait_seconds=0)
    bell = Doorbell.decode(message.body)
    with row_locked(job):
        started = time.monotonic()
        claim = claim_bell(bell, job, lock_timeout_seconds=0.3)
        waited = time.monotonic() - started
    assert claim.outcome is ClaimOutcome.BUSY
    assert waited < 5, waited  # two lock timeouts, not the 30 s the holder would take
    assert Job.objects.get(pk=job.pk).status == "queued"
    # Once the row is free, the same message claims the job.
    claim = claim_bell(bell, job, lock_timeout_seconds=1)
    assert claim.outcome is ClaimOutcome.CLAIMED


def test_flow_control_keeps_at_most_max_queued_jobs_per_queue_in_the_transport() -> None:
    transport = MemoryTransport()
    for i in range(20):
        jobs.add.delay(i, i)
    for i in range(3):
        jobs.high_echo.delay(f"h{i}")
    with override_settings(ASYNCJOBS={**_current_asyncjobs(), "MAX_QUEUED_PER_QUEUE": 5}):
        scheduler = Scheduler(transport=transport)
        assert sorted(Job.objects.due_queues()) == ["default", "high"]
        assert scheduler.run_once() == 5 + 3
        assert scheduler.throttled
        assert transport.depth("default") == 5 and transport.depth("high") == 3
        assert scheduler.run_once() == 0  # no room until workers start jobs

        worker = Worker(transport=transport, queues=["default"], burst=True, max_jobs=2)
        worker.run()
        assert scheduler.run_once() == 2
        assert Job.objects.filter(status="queued", queue="default").count() == 5
    assert Job.objects.filter(status="scheduled").count() == 20 - 5 - 2
