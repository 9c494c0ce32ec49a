"""``manage.py runworker``: receive jobs from SQS and run them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.management.base import CommandParser

from ...conf import get_settings
from ...supervisor import Supervisor, supervisor_signals
from ...transports import get_transport
from ...worker import Worker
from ._logformat import add_log_format_option, apply_log_format
from ._metrics import add_metrics_arguments, metrics_served, require_metrics
from ._options import (
    AsyncJobsCommand,
    non_negative_float,
    positive_int,
    queue_specs,
    refuse_memory_transport,
)
from ._startup import check_database, check_transport, startup_line, unknown_queue_warnings


class Command(AsyncJobsCommand):
    help = (
        "Receive jobs from SQS and run them in supervised worker processes. Queues are drained "
        "in the order given. SIGTERM or SIGINT stops receiving and lets running jobs finish "
        "within --grace seconds, then hands the rest back; a second one hands back at once.\n\n"
        "Examples:\n  manage.py runworker\n  manage.py runworker --queues high,default "
        "--processes 2 --concurrency 8\n  manage.py runworker --burst"
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--queues",
            type=queue_specs,
            default=None,
            help="Comma-separated queues, highest priority first (default: ASYNCJOBS['QUEUES']). "
            "Glob patterns such as 'reports-*' take every matching queue, including queues "
            "created later.",
        )
        parser.add_argument(
            "--concurrency",
            type=positive_int,
            default=1,
            help="Jobs run at once: sync jobs in threads, async jobs on an event loop.",
        )
        parser.add_argument(
            "--processes",
            type=positive_int,
            default=1,
            help="Worker processes, each with its own database connection and SQS client "
            "(default 1). A process that dies is replaced.",
        )
        parser.add_argument(
            "--grace",
            type=non_negative_float,
            default=30.0,
            metavar="SECONDS",
            help="On SIGTERM, how long running jobs may finish before they are handed back "
            "(default 30).",
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
            "--worker-id",
            default=None,
            help="Prefix of the names recorded on jobs, followed by :pid (default: the host name).",
        )
        parser.add_argument(
            "--wait",
            type=int,
            choices=range(0, 21),
            default=None,
            metavar="SECONDS",
            help="Long-poll wait, 0-20 (default: ASYNCJOBS['WAIT_TIME_SECONDS']).",
        )
        add_log_format_option(parser)
        add_metrics_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        apply_log_format(self, "runworker", options["log_format"])
        refuse_memory_transport("runworker")
        require_metrics("runworker", options)
        check_database("runworker", stderr=self.stderr.write)
        queues = options["queues"] or list(get_settings().queues)
        transport = get_transport()
        try:
            check_transport("runworker", transport, queues=queues)
            for warning in unknown_queue_warnings(
                "runworker", queues, existing=transport.list_queues
            ):
                self.stderr.write(warning)
            where = transport.describe()
        finally:
            # The worker processes build their own: a client must not cross a fork.
            transport.close()

        def started(pids: list[int]) -> None:
            self.stdout.write(
                startup_line(
                    "runworker",
                    f"worker processes {','.join(map(str, pids))}",
                    f"queues {','.join(queues)}",
                    f"concurrency {options['concurrency']}",
                    f"transport {where}",
                    *metrics_details,
                )
            )
            # Under systemd stdout is a pipe, block-buffered: the line must not wait for 8 KiB.
            self.stdout.flush()

        def make_worker(worker_id: str, on_alive: Callable[[], None]) -> Worker:
            return Worker(
                transport=get_transport(),
                queues=options["queues"],
                concurrency=options["concurrency"],
                burst=options["burst"],
                max_jobs=options["max_jobs"],
                worker_id=worker_id,
                wait_seconds=options["wait"],
                grace_seconds=options["grace"],
                supervised=True,
                on_alive=on_alive,
            )

        supervisor = Supervisor(
            processes=options["processes"],
            make_worker=make_worker,
            grace_seconds=options["grace"],
            respawn=not (options["burst"] or options["max_jobs"]),
            worker_id_base=options["worker_id"],
            on_started=started,
        )
        # Served by the supervisor, from the files its worker processes write.
        with (
            metrics_served("runworker", options, processes=True) as metrics_details,
            supervisor_signals(supervisor),
        ):
            code = supervisor.run()
        if code:
            raise SystemExit(code)
