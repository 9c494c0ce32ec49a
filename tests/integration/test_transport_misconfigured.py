"""A transport that turns out to be configured wrong while the loops run (credentials expired
or revoked, a policy changed) is logged once as what it is, with the fix, and retried."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import pytest
from django.db import connections

from django_asyncjobs.exceptions import TransportMisconfigured
from django_asyncjobs.scheduler import Scheduler
from django_asyncjobs.transports.base import OutgoingMessage, ReceivedMessage
from django_asyncjobs.transports.memory import MemoryTransport
from django_asyncjobs.transports.sqs_errors import REJECTED_CREDENTIALS_HINT
from django_asyncjobs.worker import Worker
from tests.support.processes import wait_until
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


class RevokedTransport(MemoryTransport):
    """Refuses every send and receive, as SQS does once the credentials are revoked."""

    def __init__(self) -> None:
        super().__init__()
        self.refusals = 0

    def _refuse(self, operation: str, queue: str) -> TransportMisconfigured:
        self.refusals += 1
        return TransportMisconfigured(
            f"SQS {operation} on queue {queue!r} failed: An error occurred "
            "(InvalidClientTokenId): The security token included in the request is invalid.",
            hint=REJECTED_CREDENTIALS_HINT,
        )

    def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> set[str]:
        raise self._refuse("SendMessageBatch", queue)

    def receive(
        self, queue: str, *, max_messages: int, wait_seconds: float
    ) -> list[ReceivedMessage]:
        raise self._refuse("ReceiveMessage", queue)


def errors_logged(
    caplog: pytest.LogCaptureFixture,
    *,
    run: Callable[[], None],
    stop: Callable[[], None],
    until: Callable[[], bool],
) -> list[str]:
    """Run the loop *run* in a thread until *until* holds, *stop* it, and return the ERROR lines
    it logged meanwhile."""

    def target() -> None:
        try:
            run()
        finally:
            connections.close_all()  # the thread's own

    thread = threading.Thread(target=target)
    with caplog.at_level(logging.INFO, logger="django_asyncjobs"):
        thread.start()
        try:
            wait_until(until, timeout=30, message="the transport was not called enough")
        finally:
            stop()
            thread.join(30)
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_worker_logs_revoked_credentials_once_as_a_configuration_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport = RevokedTransport()
    worker = Worker(transport=transport, queues=["high", "default"], worker_id="test-worker")
    # Several refusals, by both queues' pollers: still one line.
    (line,) = errors_logged(
        caplog,
        run=worker.run,
        stop=lambda: worker.stop(force=True),
        until=lambda: transport.refusals >= 4,
    )
    assert line.startswith("worker's transport is misconfigured, retrying error=SQS ReceiveMessage")
    assert line.endswith(f"({REJECTED_CREDENTIALS_HINT})")
    assert "cannot reach" not in caplog.text


def test_a_scheduler_logs_revoked_credentials_once_as_a_configuration_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    jobs.echo.delay(key="revoked")
    transport = RevokedTransport()
    scheduler = Scheduler(transport=transport, interval_seconds=0.1)
    (line,) = errors_logged(
        caplog, run=scheduler.run, stop=scheduler.stop, until=lambda: transport.refusals >= 2
    )
    assert line.startswith(
        "scheduler's transport is misconfigured, retrying error=SQS SendMessageBatch"
    )
    assert "credentials chain" in line
    assert "cannot relay" not in caplog.text
