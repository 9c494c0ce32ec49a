"""``--metrics-port`` and ``--metrics-host`` of ``runworker`` and ``runscheduler``."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any

from django.core.management.base import CommandError, CommandParser

from ... import metrics


def port_number(value: str) -> int:
    """Parse a TCP port, 0-65535 (0: any free port, named in the start-up line)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0-65535, not {number}")
    return number


def add_metrics_arguments(parser: CommandParser, *, port_help: str | None = None) -> None:
    """Add ``--metrics-port`` and ``--metrics-host`` to a long-running command's parser."""
    port_help = port_help or (
        "Serve Prometheus metrics at http://HOST:PORT/metrics (0: any free port, shown in the "
        "start-up line)."
    )
    parser.add_argument(
        "--metrics-port",
        type=port_number,
        default=None,
        metavar="PORT",
        help=f"{port_help} Needs prometheus_client: {metrics.INSTALL_HINT}.",
    )
    parser.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="Address the metrics server listens on (default 127.0.0.1, this host only; "
        "0.0.0.0 for a Prometheus on another host or outside a container).",
    )


def require_metrics(command: str, options: dict[str, Any]) -> None:
    """Refuse to start (:class:`CommandError`) when ``--metrics-port`` is given without
    prometheus_client installed, before anything else is done."""
    if options.get("metrics_port") is None:
        return
    try:
        metrics.require()
    except metrics.MetricsUnavailable as exc:
        raise CommandError(f"{command}: --metrics-port: {exc}") from exc


@contextlib.contextmanager
def metrics_served(
    command: str, options: dict[str, Any], *, jobs: bool = True, processes: bool = False
) -> Iterator[list[str]]:
    """Serve metrics while the block runs when ``--metrics-port`` was given.

    Yields the details for the start-up line: ``["metrics http://127.0.0.1:9100/metrics"]``,
    or ``[]`` without the option. A port that cannot be bound is a :class:`CommandError`.
    """
    if options.get("metrics_port") is None:
        yield []
        return
    require_metrics(command, options)
    host, port = options["metrics_host"], options["metrics_port"]
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(
                metrics.serve(port=port, host=host, jobs=jobs, processes=processes)
            )
        except OSError as exc:
            raise CommandError(
                f"{command}: cannot serve metrics on {host}:{port}: {exc.strerror or exc}; "
                "choose another --metrics-port (or --metrics-host)"
            ) from exc
        yield [f"metrics {server.url}"]
