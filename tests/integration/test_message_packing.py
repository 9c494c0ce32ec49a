"""Messages naming several jobs: the scheduler packs a busy queue's jobs, a worker claims what it
can start soon and hands the rest back through the ledger, and a message is deleted only once
every job it names is settled. The in-memory transport, and SQS (moto_server) for the counts.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

import pytest
from django.test import override_settings

from django_asyncjobs.flow import QueueFlow
from django_asyncjobs.models import Job
from django_asyncjobs.payload import Doorbell, decode_message, encode_message
from django_asyncjobs.scheduler import Scheduler
from django_asyncjobs.transports.base import OutgoingMessage, ReceivedMessage
from django_asyncjobs.transports.memory import MemoryTransport
from django_asyncjobs.transports.sqs import SQSTransport
from django_asyncjobs.worker import Worker
from tests.conftest import _current_asyncjobs, drain
from tests.support.processes import wait_until
from tests.testapp import jobs
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)


def peek(transport: MemoryTransport, queue: str = "default") -> list[list[Doorbell]]:
    """Return the jobs each waiting message names, leaving the messages where they are."""
    got: list[ReceivedMessage] = []
    while batch := transport.receive(queue, max_messages=10, wait_seconds=0):
        got += batch
    for message in got:
        transport.change_visibility(message, timeout_seconds=0)
    return [decode_message(message.body) for message in got]


def busy_scheduler(transport: object, *, rate: float = 1000.0) -> Scheduler:
    """A scheduler that has seen the default queue's jobs start at *rate* per second."""
    scheduler = Scheduler(transport=transport)  # type: ignore[arg-type]
    scheduler.flow("default").rate = rate
    return scheduler


def test_an_idle_queue_sends_each_job_in_a_message_of_its_own(
    memory_transport: MemoryTransport,
) -> None:
    for i in range(3):
        jobs.add.delay(i, i)
    assert Scheduler(transport=memory_transport).run_once() == 3
    assert [len(m) for m in peek(memory_transport)] == [1, 1, 1]


def test_a_busy_queue_is_sent_in_messages_naming_many_jobs_highest_priority_first(
    memory_transport: MemoryTransport,
) -> None:
    enqueued = jobs.add.delay_many(((i, i), {}) for i in range(240))
    urgent = jobs.add.using(priority=9).delay(1, 1)
    scheduler = busy_scheduler(memory_transport)
    sent = scheduler.run_once()
    messages = peek(memory_transport)
    # Half a second of a 1,000-jobs/s queue in flight, 100 jobs (0.1 s of it) per message.
    assert sent == 241
    assert [len(m) for m in messages] == [100, 100, 41]
    assert messages[0][0].job_id == urgent.id and messages[0][0].priority == 9
    named = {bell.job_id for message in messages for bell in message}
    assert named == {j.id for j in [*enqueued, urgent]}
    tokens = dict(Job.objects.filter(status="queued").values_list("id", "dispatch_token"))
    assert all(tokens[bell.job_id] == bell.dispatch_token for m in messages for bell in m)


def test_a_worker_claims_what_it_can_start_and_hands_the_rest_back_through_the_ledger(
    memory_transport: MemoryTransport, caplog: pytest.LogCaptureFixture
) -> None:
    keys = [f"k{i}" for i in range(30)]
    enqueued = jobs.echo.delay_many(((), {"key": k}) for k in keys)
    # Relayed by a scheduler that believes the queue is busy: one message names all 30.
    busy_scheduler(memory_transport).run_once()
    assert [len(m) for m in peek(memory_transport)] == [30]

    restarted = Scheduler(transport=memory_transport)
    thread = threading.Thread(target=restarted.run, daemon=True)
    thread.start()
    try:
        prefetch = {**_current_asyncjobs(), "PREFETCH": 5}
        with (
            caplog.at_level(logging.DEBUG, logger="django_asyncjobs.worker"),
            override_settings(ASYNCJOBS=prefetch),
        ):
            # Two slots and five held ahead: the other 23 go back to the ledger at once, for
            # the scheduler to send again to whichever worker is free.
            drain(memory_transport, queues=["default"], concurrency=2)
    finally:
        restarted.stop()
        thread.join(10)
    rows = Job.objects.filter(id__in=[j.id for j in enqueued])
    assert {row.status for row in rows} == {"succeeded"}
    assert {row.attempts for row in rows} == {1}
    assert sorted(Execution.objects.filter(job="echo").values_list("key", flat=True)) == sorted(
        keys
    )
    assert "handed jobs back for another worker count=23" in caplog.text
    assert memory_transport.depth("default") == 0


def test_a_message_whose_jobs_were_partly_run_claims_only_the_rest(
    memory_transport: MemoryTransport,
) -> None:
    done, waiting = jobs.echo.delay(key="done"), jobs.echo.delay(key="waiting")
    Scheduler(transport=memory_transport).run_once()
    bells = {bell.job_id: bell for message in peek(memory_transport) for bell in message}
    memory_transport.purge()
    send = memory_transport.send_batch
    send("default", [OutgoingMessage(id="0", body=bells[done.id].encode())])
    drain(memory_transport, queues=["default"])
    assert Job.objects.get(pk=done.pk).status == "succeeded"
    # A message naming both (delivered again after a worker died before deleting it), and one
    # naming the waiting job with a stale token next to an unknown id.
    both = encode_message([bells[done.id], bells[waiting.id]])
    stale = encode_message(
        [
            Doorbell(job_id=waiting.id, dispatch_token=uuid.uuid4()),
            Doorbell(job_id=uuid.uuid4(), dispatch_token=uuid.uuid4()),
        ]
    )
    send("default", [OutgoingMessage(id="1", body=stale), OutgoingMessage(id="2", body=both)])
    drain(memory_transport, queues=["default"], concurrency=4)
    assert Execution.objects.filter(job="echo", key="done").count() == 1
    assert Execution.objects.filter(job="echo", key="waiting").count() == 1
    assert Job.objects.get(pk=waiting.pk).status == "succeeded"
    assert memory_transport.depth("default") == 0


def test_a_drain_of_a_busy_queue_through_sqs_costs_few_requests_per_job(
    sqs_transport: SQSTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: dict[str, int] = {}
    for name in ("send_batch", "receive", "delete", "change_visibility"):
        method = getattr(sqs_transport, name)

        def counted(*args: Any, _name: str = name, _method: Any = method, **kw: Any) -> Any:
            calls[_name] = calls.get(_name, 0) + 1
            return _method(*args, **kw)

        setattr(sqs_transport, name, counted)
    # The rate is what a quiet machine measures (about 500 starts a second); it is held there,
    # so that the figure does not depend on how busy the machine running the tests is.
    monkeypatch.setattr(QueueFlow, "observe", lambda self, **kwargs: None)
    scheduler = busy_scheduler(sqs_transport, rate=500.0)
    worker = Worker(transport=sqs_transport, queues=["default"], concurrency=8, worker_id="w")
    threads = [threading.Thread(target=p.run, daemon=True) for p in (scheduler, worker)]
    for thread in threads:
        thread.start()
    try:
        enqueued = jobs.add.delay_many(((i, i), {}) for i in range(500))
        wait_until(
            lambda: not Job.objects.exclude(status="succeeded").exists(),
            timeout=300,
            message=lambda: f"not all succeeded: {calls}",
        )
    finally:
        scheduler.stop()
        worker.stop()
        for thread in threads:
            thread.join(30)
    rows = Job.objects.filter(id__in=[j.id for j in enqueued])
    assert {row.attempts for row in rows} == {1}
    # 100 jobs to a message: a send, a receive and a delete serve 100 jobs (the idle long polls
    # of a short drain add a few); a message per job, ten to a request, cost 0.4 per job.
    assert sum(calls.values()) / 500 <= 0.1, calls
