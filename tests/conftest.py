"""The kinds of test, and shared fixtures: transports, a worker/scheduler pass, processes.

Each test lives in the folder of its kind and gets that kind's marker, so ``pytest -m KIND`` runs
one kind and the five kinds together are the whole suite:

- ``unit``: pure Python; no database, no SQS, no subprocess
- ``integration``: in-process against PostgreSQL, with the memory transport or SQS (moto_server)
- ``processes``: real ``runscheduler`` / ``runworker`` subprocesses, PostgreSQL and moto_server
- ``faults``: processes with a fault injected (kills, stops, service restarts, hostile messages)
- ``browser``: Chromium driven through Playwright against a live server

Tests that take the ``sqs_endpoint`` fixture run once against the run's SQS (moto_server) and
once against LocalStack; the LocalStack runs carry the ``localstack`` marker as well as their
kind's, so ``-m "not localstack"`` leaves them out.
"""

from __future__ import annotations

import os
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

TESTS = Path(__file__).resolve().parent
#: One folder of tests/ each, named as its marker (declared in setup.cfg).
KINDS = ("unit", "integration", "processes", "faults", "browser")
#: The kinds that may start ``runscheduler`` / ``runworker`` (the ``processes`` fixture).
PROCESS_KINDS = frozenset({"processes", "faults", "browser"})
#: Fixtures that reach the database, which a unit test must not use.
DATABASE_FIXTURES = frozenset(
    {
        "db",
        "transactional_db",
        "django_db_reset_sequences",
        "django_db_serialized_rollback",
        "live_server",
        "admin_client",
        "admin_user",
        "postgres_server",
    }
)


def kind_of(path: Path) -> str | None:
    """Return the kind of the test file at *path*: its folder under tests/, if that is a kind."""
    try:
        folder = path.resolve().relative_to(TESTS).parts[0]
    except (ValueError, IndexError):
        return None
    return folder if folder in KINDS else None


# tryfirst: -m selects by marker in its own implementation of this hook, which must see the
# kind markers.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with the kind of its folder; refuse one that has no kind, or two.

    A test outside the kind folders, one marked with another kind, a unit test that uses the
    database and a test outside the process kinds that starts processes would each be missed by
    ``-m`` (or run in the wrong company), so collection stops and names them.
    """
    problems: list[str] = []
    for item in items:
        kind = kind_of(item.path)
        if kind is None:
            problems.append(f"{item.nodeid}: not in a kind folder (tests/{{{','.join(KINDS)}}}/)")
            continue
        fixtures = set(getattr(item, "fixturenames", ()))
        others = sorted({m.name for m in item.iter_markers() if m.name in KINDS} - {kind})
        if others:
            problems.append(
                f"{item.nodeid}: marked {', '.join(others)} in tests/{kind}/; a test has one kind,"
                " its folder's: move it, or drop the marker"
            )
        if kind == "unit" and (
            item.get_closest_marker("django_db") or fixtures & DATABASE_FIXTURES
        ):
            problems.append(
                f"{item.nodeid}: a unit test uses the database; move it to integration/"
            )
        if kind not in PROCESS_KINDS and "processes" in fixtures:
            problems.append(f"{item.nodeid}: starts processes; move it to processes/")
        item.add_marker(kind)
    if problems:
        raise pytest.UsageError("tests outside their kind:\n  " + "\n  ".join(problems))


#: The SQS endpoints of ``sqs_endpoint``: the run's own (moto_server, or the endpoint that
#: ``AWS_ENDPOINT_URL_SQS`` names), and LocalStack, whose runs are marked ``localstack``.
SQS_ENDPOINTS = (
    pytest.param("moto", id="moto"),
    pytest.param("localstack", id="localstack", marks=pytest.mark.localstack),
)


def use_sqs_endpoint(request: pytest.FixtureRequest, endpoint: str) -> str:
    """Point this test's SQS clients at *endpoint* (``moto`` or ``localstack``); return its URL.

    boto3 reads ``AWS_ENDPOINT_URL_SQS`` whenever it builds a client, and the ``processes``
    fixture hands the variable on: the test's transports, ``sqs_client()`` and the processes it
    starts all meet the same endpoint, until the test ends.
    """
    if endpoint == "localstack":
        url: str = request.getfixturevalue("localstack_url")
        request.getfixturevalue("monkeypatch").setenv("AWS_ENDPOINT_URL_SQS", url)
    return os.environ["AWS_ENDPOINT_URL_SQS"]


@pytest.fixture(params=SQS_ENDPOINTS)
def sqs_endpoint(request: pytest.FixtureRequest) -> str:
    """Run the test against each SQS endpoint in turn; return the URL of this run's one.

    Example::

        @pytest.mark.usefixtures("sqs_endpoint")
        def test_jobs_run(processes: ProcessGroup) -> None: ...  # [moto] and [localstack]
    """
    return use_sqs_endpoint(request, request.param)


@pytest.fixture
def processes(
    request: pytest.FixtureRequest, transactional_db: None, queue_prefix: str, tmp_path: Path
) -> Iterator[ProcessGroup]:
    """Start management commands for one test; stop them all afterwards, even if it failed."""
    # A test that restarts or pauses a service may get a private one (tests/plugin.py), and a
    # test may choose its SQS endpoint; either repoints this test's database connection or SQS
    # endpoint: set it up first, so that the processes are pointed there too (and are stopped
    # before it is).
    for service in ("postgres_server", "moto_server", "sqs_endpoint"):
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
def sqs_transport(request: pytest.FixtureRequest, queue_prefix: str) -> Iterator[SQSTransport]:
    """An SQS transport talking to moto_server (or the endpoint in the environment, or the one
    ``sqs_endpoint`` chose)."""
    if "sqs_endpoint" in request.fixturenames:
        request.getfixturevalue("sqs_endpoint")
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
