"""Provide PostgreSQL and moto_server to the test run (``-p tests.plugin``).

Services missing from the environment are started before pytest-django loads
the Django settings, which read ``DATABASE_URL`` and the SQS endpoint from
``os.environ``, and are stopped when pytest exits.
"""

from __future__ import annotations

from typing import TypeVar

import pytest

from tests.services import MotoServer, PostgresServer, ensure_services, stop_services

_started_key = pytest.StashKey[list[PostgresServer | MotoServer]]()
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
    """Start the services the environment lacks."""
    options = parser.parse_known_args(args)
    if options.help or options.version:
        return
    early_config.stash[_started_key] = ensure_services()


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Show which services this run started."""
    return [f"started: {server!r}" for server in config.stash.get(_started_key, [])]


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the services started by this plugin."""
    stop_services(config.stash.get(_started_key, []))
    config.stash[_started_key] = []


@pytest.fixture(scope="session")
def postgres_server(request: pytest.FixtureRequest) -> PostgresServer:
    """Return the PostgreSQL server of this run; skip if supplied via env."""
    server = _owned(request.config, PostgresServer)
    if server is None:
        pytest.skip("PostgreSQL supplied externally via DATABASE_URL")
    return server


@pytest.fixture(scope="session")
def moto_server(request: pytest.FixtureRequest) -> MotoServer:
    """Return the moto_server of this run; skip if supplied via env."""
    server = _owned(request.config, MotoServer)
    if server is None:
        pytest.skip("SQS endpoint supplied externally via AWS_ENDPOINT_URL(_SQS)")
    return server


@pytest.fixture
def sqs_reset(request: pytest.FixtureRequest) -> None:
    """Empty moto's state before the test, if this run owns moto_server."""
    server = _owned(request.config, MotoServer)
    if server is not None:
        if server.paused:
            # A test that paused SQS and failed must not wedge the next one.
            server.resume()
        server.reset()
