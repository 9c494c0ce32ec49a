"""What the management commands share: their base class, help formatter, argparse validators
and the refusal of the memory transport by the long-running commands."""

from __future__ import annotations

import argparse
import re
import textwrap
from typing import Any

from django.core.management.base import (
    BaseCommand,
    CommandError,
    CommandParser,
    DjangoHelpFormatter,
)

from ...conf import get_settings, queue_name_error


class HelpFormatter(DjangoHelpFormatter):
    """Django's help layout, with the description's line breaks kept.

    argparse reflows a description into one paragraph, which runs the examples at the end of
    our ``help`` texts together. Here each line is wrapped on its own: prose still fits the
    terminal, blank lines stay, and an indented line (an example) is printed as written, so
    that it can be copied.
    """

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        # The hook argparse.RawDescriptionHelpFormatter overrides, for the same reason.
        lines = []
        for line in text.splitlines():
            if not line.strip() or line[:1].isspace():
                lines.append(indent + line if line.strip() else "")
            else:
                lines.append(
                    textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent)
                )
        return "\n".join(lines)


class AsyncJobsCommand(BaseCommand):
    """The base of our commands: ``--help`` keeps the line breaks of ``help``.

    Subcommands (``add_subparsers``) get the same formatter as their command.
    """

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        kwargs.setdefault("formatter_class", HelpFormatter)
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        _share_formatter(parser)
        return parser


def refuse_memory_transport(command: str) -> None:
    """Raise :class:`CommandError` when ``ASYNCJOBS["TRANSPORT"]`` is ``"memory"``.

    The memory transport keeps messages in the memory of one process. ``runscheduler`` and
    ``runworker`` are separate processes: the scheduler's messages would never reach a worker,
    and every job would stay ``queued`` without a word.
    """
    if get_settings().transport == "memory":
        raise CommandError(
            f'{command} cannot use ASYNCJOBS["TRANSPORT"] = "memory": the memory transport '
            "only carries messages inside one process (a test that runs a Scheduler and a "
            "Worker itself), so the scheduler's messages would never reach a worker process. "
            'Set ASYNCJOBS["TRANSPORT"] = "sqs".'
        )


def _share_formatter(parser: argparse.ArgumentParser) -> None:
    """Give every subcommand parser below *parser* (add_arguments made them) its formatter."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.formatter_class = parser.formatter_class
                _share_formatter(sub)


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


def queue_name(value: str) -> str:
    """Parse one queue name (no pattern)."""
    problem = queue_name_error(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


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
