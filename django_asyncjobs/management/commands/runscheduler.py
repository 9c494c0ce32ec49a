"""``manage.py runscheduler``: relay due jobs from PostgreSQL to SQS."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from ...conf import get_settings
from ...exceptions import TransportError
from ...periodic import schedules
from ...scheduler import Scheduler
from ...transports import get_transport
from ._logformat import add_log_format_option, apply_log_format
from ._metrics import add_metrics_arguments, metrics_served, require_metrics
from ._options import AsyncJobsCommand, positive_float, positive_int, refuse_memory_transport
from ._signals import graceful_stop
from ._startup import check_database, check_transport, startup_line


class Command(AsyncJobsCommand):
    help = (
        "Relay due jobs (new, delayed and retried) to their SQS queues, highest priority first. "
        "Woken by NOTIFY when a job is enqueued; polls every --interval seconds as a fallback. "
        "Several schedulers may run at once.\n\n"
        "Examples:\n  manage.py runscheduler\n  manage.py runscheduler --once"
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--interval",
            type=positive_float,
            default=None,
            help="Seconds between polls when no NOTIFY arrives (default: "
            "ASYNCJOBS['SCHEDULER_INTERVAL_SECONDS']).",
        )
        parser.add_argument(
            "--batch-size",
            type=positive_int,
            default=None,
            help="Most jobs relayed per transaction (default: ASYNCJOBS['SCHEDULER_BATCH_SIZE']).",
        )
        parser.add_argument("--once", action="store_true", help="Relay what is due now, then exit.")
        add_log_format_option(parser)
        add_metrics_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        apply_log_format(self, "runscheduler", options["log_format"])
        refuse_memory_transport("runscheduler")
        require_metrics("runscheduler", options)
        check_database("runscheduler", stderr=self.stderr.write)
        scheduler = Scheduler(
            transport=get_transport(),
            batch_size=options["batch_size"],
            interval_seconds=options["interval"],
        )
        try:
            if options["once"]:
                try:
                    sent = scheduler.run_once()
                except TransportError as exc:
                    raise CommandError(f"could not relay jobs: {exc}") from exc
                self.stdout.write(self.style.SUCCESS(f"Relayed {sent} job(s)."))
                return
            # Before the first SQS call, so that the metrics count it.
            with metrics_served("runscheduler", options, jobs=False) as metrics_details:
                # The scheduler sends to every queue; the default one stands for them all.
                check_transport(
                    "runscheduler", scheduler.transport, queues=[get_settings().default_queue]
                )
                self.stdout.write(
                    startup_line(
                        "runscheduler",
                        f"interval {scheduler.interval_seconds:g}s",
                        f"batch size {scheduler.batch_size}",
                        f"schedules {len(schedules())}",
                        f"transport {scheduler.transport.describe()}",
                        *metrics_details,
                    )
                )
                # Under systemd stdout is a pipe, block-buffered: the line must not wait for 8 KiB.
                self.stdout.flush()
                with graceful_stop(scheduler.stop, on_first=self._stopping):
                    scheduler.run()
        finally:
            scheduler.transport.close()

    def _stopping(self, signal_name: str) -> None:
        self.stderr.write(f"{signal_name} received; stopping after this pass.")
