"""argparse validators shared by the management commands."""

from __future__ import annotations

import argparse
import re

from ...conf import queue_name_error


def positive_int(value: str) -> int:
    """Parse an int of 1 or more."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {number}")
    return number


def positive_float(value: str) -> float:
    """Parse a number of seconds above zero."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {value}")
    return number


def non_negative_float(value: str) -> float:
    """Parse a number of seconds of 0 or more."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return number


def queue_list(value: str) -> list[str]:
    """Parse ``high,default,low`` into queue names, highest priority first."""
    queues = [q.strip() for q in value.split(",") if q.strip()]
    if not queues:
        raise argparse.ArgumentTypeError("name at least one queue")
    for queue in queues:
        problem = queue_name_error(queue)
        if problem:
            raise argparse.ArgumentTypeError(problem)
    if len(set(queues)) != len(queues):
        raise argparse.ArgumentTypeError(f"a queue is listed twice in {value!r}")
    return queues


def queue_specs(value: str) -> list[str]:
    """Parse ``high,reports-*,low``: queue names and glob patterns, highest priority first."""
    specs = [q.strip() for q in value.split(",") if q.strip()]
    if not specs:
        raise argparse.ArgumentTypeError("name at least one queue")
    for spec in specs:
        # Check a pattern as a name with its wildcards replaced by a letter.
        problem = queue_name_error(re.sub(r"[*?\[\]]", "x", spec))
        if problem:
            raise argparse.ArgumentTypeError(
                f"{problem} (SQS queue names hold no '.'; write 'reports-*', not 'reports.*')"
                if "." in spec
                else problem
            )
    if len(set(specs)) != len(specs):
        raise argparse.ArgumentTypeError(f"a queue is listed twice in {value!r}")
    return specs
