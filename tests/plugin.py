"""Provide PostgreSQL, moto_server and LocalStack to the test run (``-p tests.plugin``).

Services missing from the environment are started before pytest-django loads
the Django settings, which read ``DATABASE_URL`` and the SQS endpoint from
``os.environ``, and are stopped when pytest exits. LocalStack, the second SQS
endpoint, is started only when a selected test needs it (one marked
``localstack``), in the background as soon as the tests are collected, and
stopped at the end of the run.

Services named by the environment (a team's own servers, CI service containers, tox passing
the variables on) are used as they are. The tests that restart PostgreSQL always get a private
throwaway server (``postgres_server``), and so do the tests that pause SQS when the endpoint is
not this run's (``moto_server``); they fail when none can be started.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, TypeVar

import pytest

from tests.localstack import BackgroundStart, default_venv
from tests.services import MotoServer, PostgresServer, ensure_services, stop_services

if TYPE_CHECKING:
    from pytest_django import DjangoDbBlocker

_started_key = pytest.StashKey[list[PostgresServer | MotoServer]]()
_localstack_key = pytest.StashKey[BackgroundStart]()
_T = TypeVar("_T", PostgresServer, MotoServer)


def _owned(config: pytest.Config, kind: type[_T]) -> _T | None:
    for server in config.stash.get(_started_key, []):
        if isinstance(server, kind):
            return server
    return None


# tryfirst: pytest-django's own implementation of this hook imports the
# settings, so the environment must be complete before it runs.
@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, parser: pytest.Parser, args: list[str]
) -> None:
    """Start the services the environment lacks.

    Under pytest-xdist (``-n N``) the controlling process starts nothing: each worker process
    starts its own PostgreSQL, moto_server (and LocalStack when it needs one), so that tests that
    reset, pause or restart a service never disturb another worker's tests.
    """
    options = parser.parse_known_args(args)
    if options.help or options.version:
        return
    if getattr(options, "numprocesses", None) and "PYTEST_XDIST_WORKER" not in os.environ:
        return
    early_config.stash[_started_key] = ensure_services()


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Show which services this run started."""
    return [f"started: {server!r}" for server in config.stash.get(_started_key, [])]


def _start_localstack(config: pytest.Config) -> BackgroundStart:
    reporter = config.pluginmanager.get_plugin("terminalreporter")

    def log(message: str) -> None:
        if reporter is not None:
            reporter.write_line(f"tests.localstack: {message}")

    start = config.stash[_localstack_key] = BackgroundStart(log=log)
    return start


# trylast: -m and -k deselect tests in pytest_collection_modifyitems, before this hook.
@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Start LocalStack in the background if a selected test needs it (``localstack_url``)."""
    config = session.config
    if config.option.collectonly or os.environ.get("ASYNCJOBS_TEST_LOCALSTACK_URL"):
        return
    if any(item.get_closest_marker("localstack") for item in session.items):
        _start_localstack(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the services started by this plugin."""
    try:
        stop_services(config.stash.get(_started_key, []))
        config.stash[_started_key] = []
    finally:
        localstack = config.stash.get(_localstack_key, None)
        if localstack is not None:
            localstack.stop()


#: The test that ran last in this process, named when the next one finds a dead connection.
_previous: list[str] = []


@pytest.fixture(autouse=True)
def _working_connections(request: pytest.FixtureRequest) -> Iterator[None]:
    """Start every test on connections that work.

    Django keeps a connection per thread across tests and only replaces one it knows is
    closed; a session the server ended looks open until it is used, and the next test's first
    query would fail with "terminating connection due to administrator command" (and so would
    every later test of this process). An open connection is tested (``SELECT 1``) and replaced
    if dead, with a warning naming the test that ran before, which left it so.
    """
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        if (
            connection.connection is not None
            and not connection.in_atomic_block
            and not connection.is_usable()
        ):
            connection.close()
            before = _previous[-1] if _previous else "(none)"
            request.node.warn(
                pytest.PytestWarning(
                    f"the {connection.alias!r} database connection this test inherited was "
                    f"dead (replaced); the test before it in this process: {before}"
                )
            )
    yield
    _previous[:] = [request.node.nodeid]


@pytest.fixture
def postgres_server(
    django_db_setup: None, django_db_blocker: DjangoDbBlocker
) -> Iterator[PostgresServer]:
    """Return a PostgreSQL server this test may restart, holding a migrated test database.

    Always a private throwaway server, never the run's own (nor one ``DATABASE_URL`` names): a
    restart ends every session of its server, and the sessions of the other tests of this
    process (their threads' connections, a live server's) must not be among them. This test's
    database connection points at it until the test ends (the ``processes`` fixture points
    the processes it starts there too). A private server that cannot be started fails the
    test: a skipped fault test would prove nothing.
    """
    with (
        _private(PostgresServer(), what="PostgreSQL") as private,
        _test_database_on(private, django_db_blocker),
    ):
        yield private


@pytest.fixture
def moto_server(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[MotoServer]:
    """Return a moto_server this test may reset or pause.

    That is the run's own server when it started one. An endpoint named by
    ``AWS_ENDPOINT_URL(_SQS)`` is not ours to pause: the test then gets a private moto_server,
    and ``AWS_ENDPOINT_URL_SQS`` names it until the test ends (boto3 reads it for every client
    it makes, and the ``processes`` fixture passes it on). A private server that cannot be
    started fails the test.
    """
    server = _owned(request.config, MotoServer)
    if server is not None:
        yield server
        return
    with _private(MotoServer(), what="SQS (moto_server)") as private:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", private.url)
        yield private


@pytest.fixture(scope="session")
def localstack_url(request: pytest.FixtureRequest) -> str:
    """Return the URL of LocalStack's SQS, which runs until the end of the run.

    ``ASYNCJOBS_TEST_LOCALSTACK_URL`` names a LocalStack already running (for example its Docker
    image), which is used as it is. Otherwise LocalStack runs from its venv (tests/localstack.py,
    built first if need be), started in the background when the tests were collected (or now,
    for a test that needs it without the ``localstack`` marker). When it can be neither built
    nor started, every test that needs it fails saying why: a skipped test would prove nothing.
    ``-m "not localstack"`` leaves those tests out.
    """
    configured = os.environ.get("ASYNCJOBS_TEST_LOCALSTACK_URL")
    if configured:
        return configured.rstrip("/")
    start = request.config.stash.get(_localstack_key, None) or _start_localstack(request.config)
    try:
        return start.server().url
    except Exception as exc:
        error = exc  # failed below, outside this block: the error says it all, without a chain
    pytest.fail(
        f"LocalStack (the second SQS endpoint, from the venv {default_venv()}) cannot run: "
        f"{error}\nFix that, name a running LocalStack in ASYNCJOBS_TEST_LOCALSTACK_URL, or "
        'leave the LocalStack tests out with -m "not localstack".',
        pytrace=False,
    )


@contextlib.contextmanager
def _private(server: _T, *, what: str) -> Iterator[_T]:
    """Start *server* for one test and stop it afterwards; fail the test if it cannot start."""
    try:
        server.start()
    except Exception as exc:
        error: Exception | None = exc
    else:
        error = None
    if error is not None:
        pytest.fail(
            f"this test restarts or pauses {what}, on a private server of its own, which "
            f"could not be started: {error}",
            pytrace=False,
        )
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def _test_database_on(server: PostgresServer, blocker: DjangoDbBlocker) -> Iterator[None]:
    """Point the default connection at a migrated copy of the test database on *server*."""
    from django.core.management import call_command
    from django.db import connection

    settings_dict = connection.settings_dict
    saved = dict(settings_dict)
    # The test database's name (test_...), which subprocess_env() hands to the processes.
    name = str(saved["NAME"]).replace('"', '""')
    server.psql(f'CREATE DATABASE "{name}"')
    connection.close()
    # The same dict as settings.DATABASES["default"], so connections of other threads follow.
    settings_dict.update(HOST="127.0.0.1", PORT=str(server.port), USER="postgres", PASSWORD="")
    try:
        with blocker.unblock():
            call_command("migrate", interactive=False, verbosity=0)
        yield
    finally:
        connection.close()
        settings_dict.clear()
        settings_dict.update(saved)


@pytest.fixture
def sqs_reset(request: pytest.FixtureRequest) -> None:
    """Empty moto's state before the test, if this run owns moto_server."""
    server = _owned(request.config, MotoServer)
    if server is not None:
        if server.paused:
            # A test that paused SQS and failed must not wedge the next one.
            server.resume()
        server.reset()
