"""``manage.py runworker``: receive jobs from SQS and run them."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ...transports import get_transport
from ...worker import Worker
from ._options import positive_int, queue_list
from ._signals import graceful_stop


class Command(BaseCommand):
    help = (
        "Receive jobs from SQS and run them. Queues are drained in the order given. SIGTERM or "
        "SIGINT stops receiving and lets running jobs finish; a second one exits at once.\n\n"
        "Examples:\n  manage.py runworker\n  manage.py runworker --queues high,default "
        "--concurrency 8\n  manage.py runworker --burst"
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--queues",
            type=queue_list,
            default=None,
            help="Comma-separated queues, highest priority first (default: ASYNCJOBS['QUEUES']).",
        )
        parser.add_argument(
            "--concurrency",
            type=positive_int,
            default=1,
            help="Jobs run at once: sync jobs in threads, async jobs on an event loop.",
        )
        parser.add_argument(
            "--burst",
            action="store_true",
            help="Exit once the queues are empty and no job runs.",
        )
        parser.add_argument(
            "--max-jobs",
            type=positive_int,
            default=None,
            help="Exit after this many jobs have run.",
        )
        parser.add_argument(
            "--worker-id", default=None, help="Name recorded on jobs (default: host:pid)."
        )
        parser.add_argument(
            "--wait",
            type=int,
            choices=range(0, 21),
            default=None,
            metavar="SECONDS",
            help="Long-poll wait, 0-20 (default: ASYNCJOBS['WAIT_TIME_SECONDS']).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        worker = Worker(
            transport=get_transport(),
            queues=options["queues"],
            concurrency=options["concurrency"],
            burst=options["burst"],
            max_jobs=options["max_jobs"],
            worker_id=options["worker_id"],
            wait_seconds=options["wait"],
        )
        try:
            with graceful_stop(worker.stop, on_first=self._stopping):
                worker.run()
        finally:
            worker.transport.close()

    def _stopping(self, signal_name: str) -> None:
        self.stderr.write(
            f"{signal_name} received; finishing running jobs (send it again to exit at once)."
        )
