"""``manage.py asyncjobs <subcommand>``: operator tools for the SQS side of django-asyncjobs."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ...conf import get_settings
from ...exceptions import TransportError
from ...transports import get_transport
from ...transports.sqs import SQSTransport
from ._options import positive_int, queue_list

#: Dead-letter bodies are shown up to this many characters: they may be anything.
BODY_PREVIEW_CHARS = 200


class Command(BaseCommand):
    help = (
        "Operator tools for django-asyncjobs' SQS queues.\n\n"
        "Examples:\n"
        "  manage.py asyncjobs create-queues\n"
        "  manage.py asyncjobs dead-letters --queue default --limit 20\n"
        "  manage.py asyncjobs redrive --queue default"
    )

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
        create = commands.add_parser(
            "create-queues",
            help="Create the SQS queues (and their dead-letter queues) that are missing.",
        )
        dead = commands.add_parser(
            "dead-letters",
            help="Show how many messages each dead-letter queue holds, and a sample of them.",
        )
        dead.add_argument("--limit", type=positive_int, default=10, help="Messages shown.")
        redrive = commands.add_parser(
            "redrive",
            help="Move dead-lettered messages back to their queue. Safe: a message whose job "
            "was sent again meanwhile carries a stale token and runs nothing.",
        )
        redrive.add_argument("--limit", type=positive_int, default=None, help="Most moved.")
        for sub in (create, dead, redrive):
            sub.add_argument(
                "--queues",
                "--queue",
                type=queue_list,
                default=None,
                help="Comma-separated job queues (default: ASYNCJOBS['QUEUES']).",
            )

    def handle(self, *args: Any, **options: Any) -> None:
        transport = get_transport()
        if not isinstance(transport, SQSTransport):
            raise CommandError("these tools need ASYNCJOBS['TRANSPORT'] = 'sqs'")
        queues = options["queues"] or list(get_settings().queues)
        try:
            if options["subcommand"] == "create-queues":
                self._create_queues(transport, queues)
            elif options["subcommand"] == "dead-letters":
                self._dead_letters(transport, queues, limit=options["limit"])
            else:
                self._redrive(transport, queues, limit=options["limit"])
        except TransportError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            transport.close()

    def _create_queues(self, transport: SQSTransport, queues: list[str]) -> None:
        for queue in queues:
            transport.ensure_queue(queue)
            self.stdout.write(f"{queue}: {transport.queue_url(queue)}")
        self.stdout.write(self.style.SUCCESS(f"{len(queues)} queue(s) ready"))

    def _dead_letters(self, transport: SQSTransport, queues: list[str], *, limit: int) -> None:
        for queue in queues:
            count, sample = transport.dead_letters(queue, limit=limit)
            self.stdout.write(f"{queue}: {count} dead-lettered message(s)")
            for letter in sample:
                body = letter.body[:BODY_PREVIEW_CHARS]
                more = "..." if len(letter.body) > BODY_PREVIEW_CHARS else ""
                self.stdout.write(
                    f"  {letter.message_id} receives={letter.receive_count} body={body!r}{more}"
                )

    def _redrive(self, transport: SQSTransport, queues: list[str], *, limit: int | None) -> None:
        total = 0
        for queue in queues:
            moved = transport.redrive(queue, limit=None if limit is None else limit - total)
            total += moved
            self.stdout.write(f"{queue}: {moved} message(s) moved back")
            if limit is not None and total >= limit:
                break
        self.stdout.write(self.style.SUCCESS(f"{total} message(s) redriven"))
