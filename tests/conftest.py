"""Shared fixtures: transports, a worker/scheduler pass, and ledger helpers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import override_settings

from django_asyncjobs.conf import get_settings
from django_asyncjobs.scheduler import Scheduler
from django_asyncjobs.transports.memory import MemoryTransport
from django_asyncjobs.transports.sqs import SQSTransport
from django_asyncjobs.worker import Worker
from tests.support.processes import ProcessGroup, subprocess_env


@pytest.fixture
def processes(
    request: pytest.FixtureRequest, transactional_db: None, queue_prefix: str, tmp_path: Path
) -> Iterator[ProcessGroup]:
    """Start management commands for one test; stop them all afterwards, even if it failed."""
    # A test that restarts or pauses a service may get a private one (tests/plugin.py), which
    # repoints this test's database connection or SQS endpoint: set it up first, so that the
    # processes are pointed there too (and are stopped before it is).
    for service in ("postgres_server", "moto_server"):
        if service in request.fixturenames:
            request.getfixturevalue(service)
    group = ProcessGroup(env=subprocess_env(queue_prefix=queue_prefix), log_dir=tmp_path)
    try:
        yield group
    finally:
        problems = group.close()
        # pytest shows a test's captured output only when it fails: that is when it is wanted.
        for problem in problems:
            print(problem)
        print(group.report())


@pytest.fixture
def memory_transport() -> Iterator[MemoryTransport]:
    """A fresh in-process transport shared by the scheduler and worker of one test."""
    transport = MemoryTransport(visibility_timeout_seconds=5)
    yield transport
    transport.purge()


@pytest.fixture
def queue_prefix() -> Iterator[str]:
    """A unique SQS queue prefix, so tests never see each other's messages."""
    prefix = f"t{uuid.uuid4().hex[:10]}-"
    with override_settings(ASYNCJOBS={**_current_asyncjobs(), "QUEUE_PREFIX": prefix}):
        yield prefix


def _current_asyncjobs() -> dict[str, object]:
    from django.conf import settings

    return dict(getattr(settings, "ASYNCJOBS", {}))


@pytest.fixture
def sqs_transport(queue_prefix: str) -> Iterator[SQSTransport]:
    """An SQS transport talking to moto_server (or the endpoint in the environment)."""
    transport = SQSTransport(get_settings())
    yield transport
    transport.close()


def relay(transport: object) -> int:
    """Run one scheduler pass over *transport* and return how many jobs it sent."""
    return Scheduler(transport=transport).run_once()  # type: ignore[arg-type]


def drain(transport: object, *, queues: list[str] | None = None, concurrency: int = 1) -> Worker:
    """Run a burst worker over *transport* until its queues are empty and nothing runs."""
    worker = Worker(
        transport=transport,  # type: ignore[arg-type]
        queues=queues or ["high", "default", "low"],
        concurrency=concurrency,
        burst=True,
        worker_id="test-worker",
    )
    worker.run()
    return worker
