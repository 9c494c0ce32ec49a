"""``--log-format text|json`` of the long-running commands (runworker, runscheduler, runjobs).

``text`` (the default) leaves the project's ``LOGGING`` as it is. ``json`` switches every log
handler to one JSON object per line (:mod:`django_asyncjobs.logs`), and what the command prints
itself (its start-up line, warnings, a refusal) becomes such a line too, so that every line of
its output parses as JSON.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser, OutputWrapper

from ...logs import LOG_FORMATS, json_line, use_json_format


def add_log_format_option(parser: CommandParser) -> None:
    """Add ``--log-format`` to a long-running command's *parser*."""
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="text",
        help="text (default): log as the project's LOGGING says. json: one JSON object per "
        "line (time, level, logger, message, and job_id, job_name, queue, attempt, worker on "
        "lines about a job), on the handlers LOGGING configured; the command's own lines too.",
    )


class _JsonOutput(OutputWrapper):
    """A command's stdout or stderr that writes each message as one JSON line."""

    def __init__(self, wrapped: OutputWrapper, *, level: str, logger: str) -> None:
        # The stream the command was given (sys.stdout, or call_command's stdout=).
        super().__init__(wrapped._out)  # type: ignore[arg-type]
        self._level = level
        self._logger = logger

    def write(  # type: ignore[override]
        self, msg: str = "", style_func: Any = None, ending: str | None = None
    ) -> None:
        """Write *msg* (unstyled) as one JSON line; a refusal (``CommandError: ...``) is ERROR."""
        level = "ERROR" if msg.startswith("CommandError") else self._level
        super().write(
            json_line(msg.rstrip("\n"), level=level, logger=self._logger),
            style_func=lambda text: text,
            ending="\n",
        )


def apply_log_format(command: BaseCommand, name: str, log_format: str) -> None:
    """Set up *log_format* for *command* (named *name*); call first in ``handle()``.

    Example::

        apply_log_format(self, "runworker", options["log_format"])
    """
    if log_format != "json":
        return
    use_json_format()
    logger = f"django_asyncjobs.commands.{name}"
    command.stdout = _JsonOutput(command.stdout, level="INFO", logger=logger)
    command.stderr = _JsonOutput(command.stderr, level="WARNING", logger=logger)
