"""``manage.py asyncjobs <subcommand>``: operator tools for jobs and their SQS queues."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import re
import socket
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db.models import Count, Min
from django.db.models.functions import Now
from django.utils import timezone

from ... import describe, held, queues
from ...conf import get_settings
from ...exceptions import TransportError, UnknownQueue
from ...models import Job, JobAttempt, Process, ProcessKind, QueueState
from ...processes import attention
from ...status import FINAL_STATUSES, JobStatus
from ...timebounds import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP
from ...transports import Transport, get_transport
from ..progress import Progress
from ._options import AsyncJobsCommand, positive_int, queue_list, queue_name

#: Dead-letter bodies are shown up to this many characters: they may be anything.
BODY_PREVIEW_CHARS = 200
#: ``show`` prints a JSON value up to this long on one line, a longer one indented.
PRETTY_LINE_CHARS = 80
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(value: str) -> float:
    """Parse ``90s``, ``15m``, ``12h`` or ``30d`` into seconds."""
    match = _DURATION.match(value.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{value!r} is not a duration like 90s, 15m, 12h or 30d")
    seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
    # Longer than every storable timestamp is apart: PostgreSQL's interval would overflow.
    if seconds > (LATEST_TIMESTAMP - EARLIEST_TIMESTAMP).total_seconds():
        raise argparse.ArgumentTypeError(
            f"{value!r} is longer than the years 1 to 9999 that job timestamps span"
        )
    return seconds


def status_list(value: str) -> list[str]:
    """Parse ``failed,cancelled`` into job statuses."""
    statuses = [s.strip() for s in value.split(",") if s.strip()]
    unknown = [s for s in statuses if s not in JobStatus.values]
    if unknown or not statuses:
        choices = ", ".join(JobStatus.values)
        raise argparse.ArgumentTypeError(
            f"unknown status {', '.join(unknown) or value!r}; choose from {choices}"
        )
    return statuses


def operator_name(value: str) -> str:
    """Parse the ``--by`` of ``cancel``: a name of 1 to 255 characters."""
    name = value.strip()
    if not 1 <= len(name) <= 255:
        raise argparse.ArgumentTypeError(f"{value!r} is not a name of 1 to 255 characters")
    return name


def os_user() -> str:
    """Return the name of the user running the command, or "unknown" when it has none.

    >>> isinstance(os_user(), str)
    True
    """
    try:
        return getpass.getuser() or "unknown"
    except (KeyError, OSError):  # a container's uid without a passwd entry or $USER
        return "unknown"


class Command(AsyncJobsCommand):
    help = (
        "Operator tools for django-asyncjobs: list, show, retry, cancel and purge jobs, queue "
        "statistics, and the SQS queues.\n\n"
        "Examples:\n"
        "  manage.py asyncjobs list --status failed --limit 20\n"
        "  manage.py asyncjobs list --name app.jobs.send_receipt --json\n"
        "  manage.py asyncjobs show 3f2a9c1e\n"
        "  manage.py asyncjobs retry 3f2a9c1e\n"
        "  manage.py asyncjobs retry --all-failed --name app.jobs.send_receipt\n"
        "  manage.py asyncjobs cancel 3f2a9c1e 7b0d4e22\n"
        "  manage.py asyncjobs purge --older-than 30d\n"
        "  manage.py asyncjobs stats\n"
        "  manage.py asyncjobs pause emails --reason 'SMTP provider down'\n"
        "  manage.py asyncjobs resume emails\n"
        "  manage.py asyncjobs processes --json\n"
        "  manage.py asyncjobs api-token deploy-bot\n"
        "  manage.py asyncjobs create-queues\n"
        "  manage.py asyncjobs dead-letters --queue default\n"
        "  manage.py asyncjobs redrive --queue default"
    )

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
        listing = commands.add_parser("list", help="List jobs, newest first.")
        listing.add_argument("--status", type=status_list, default=None, help="e.g. failed,queued")
        listing.add_argument("--name", default=None, help="Job name.")
        listing.add_argument("--queue", default=None, help="Queue name.")
        listing.add_argument("--limit", type=positive_int, default=50, help="Rows (50).")
        listing.add_argument("--json", action="store_true", help="One JSON object per line.")

        show = commands.add_parser(
            "show",
            help="Print one job whole: arguments, result, error, traceback, timeline and "
            "attempt history.",
        )
        show.add_argument("id", help="Job id or unique id prefix.")
        show.add_argument("--json", action="store_true", help="One JSON object.")

        retry = commands.add_parser("retry", help="Retry failed or cancelled jobs, due now.")
        retry.add_argument("ids", nargs="*", help="Job ids or unique id prefixes.")
        retry.add_argument("--all-failed", action="store_true", help="Every failed job.")
        retry.add_argument("--name", default=None, help="With --all-failed: only this job.")

        cancel = commands.add_parser(
            "cancel",
            help="Cancel jobs: scheduled or queued ones at once; for running ones, ask their "
            "worker to stop them. Exit status 0 when each was cancelled or its cancel "
            "requested, 1 at the first that cannot be (it has finished).",
        )
        cancel.add_argument("ids", nargs="+", help="Job ids or unique id prefixes.")
        cancel.add_argument(
            "--by",
            type=operator_name,
            default=None,
            help="Who cancels, recorded on the job (default: the user running the command).",
        )

        purge = commands.add_parser("purge", help="Delete finished jobs, in batches.")
        purge.add_argument(
            "--older-than", type=duration_seconds, required=True, help="e.g. 30d, 12h."
        )
        purge.add_argument(
            "--status",
            type=status_list,
            default=None,
            help="Finished statuses to delete (default: succeeded,failed,cancelled).",
        )
        purge.add_argument("--batch-size", type=positive_int, default=1000)
        purge.add_argument(
            "--dry-run",
            action="store_true",
            help="Only count the jobs that would be deleted; delete nothing.",
        )

        commands.add_parser(
            "stats",
            help="Jobs per queue and status, jobs held by a concurrency or rate limit, oldest "
            "waiting, pauses, SQS depth; and whether a scheduler and a worker for each queue with "
            "waiting jobs are alive.",
        )
        pause = commands.add_parser(
            "pause",
            help="Pause a queue: no job of it is sent or started until it is resumed; running "
            "jobs finish. Exits 0 when the queue is paused afterwards (also if it was already).",
        )
        pause.add_argument("queue", type=queue_name, help="The queue, e.g. default.")
        pause.add_argument("--reason", default="", help="Why; shown wherever the queue shows.")
        pause.add_argument(
            "--force",
            action="store_true",
            help="Pause a queue nobody uses yet (not configured, no job has used it).",
        )
        resume = commands.add_parser(
            "resume",
            help="Resume a paused queue: its due jobs are sent at once. Exits 0 when the queue "
            "is not paused afterwards (also if it was not).",
        )
        resume.add_argument("queue", type=queue_name, help="The queue, e.g. default.")
        for sub in (pause, resume):
            sub.add_argument(
                "--by",
                default=None,
                help="Who, as shown with the pause (default: the OS user and host).",
            )
        processes = commands.add_parser(
            "processes",
            help="The registered workers and schedulers, alive or dead, and the jobs each one "
            "runs now.",
        )
        processes.add_argument("--json", action="store_true", help="One JSON object per line.")
        token = commands.add_parser(
            "api-token", help="Print a bearer token of the HTTP jobs API for a user."
        )
        token.add_argument("username")
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
        handler = getattr(self, "_" + options["subcommand"].replace("-", "_"))
        handler(options)

    # -- jobs ------------------------------------------------------------------------------------

    def _list(self, options: dict[str, Any]) -> None:
        jobs = Job.objects.order_by("-created_at")
        if options["status"]:
            jobs = jobs.filter(status__in=options["status"])
        if options["name"]:
            jobs = jobs.filter(name=options["name"])
        if options["queue"]:
            jobs = jobs.filter(queue=options["queue"])
        rows = list(jobs[: options["limit"]])
        paused = queues.paused_queues()
        if options["json"]:
            for job in rows:
                self.stdout.write(json.dumps(_as_dict(job, paused)))
            return
        if not rows:
            self.stdout.write("no jobs match")
            return
        # Count only when the page is full: a shorter page is all there is.
        total = jobs.count() if len(rows) == options["limit"] else len(rows)
        table = [("ID", "NAME", "STATUS", "QUEUE", "PRIO", "ATTEMPTS", "CREATED", "ERROR")]
        for job in rows:
            table.append(
                (
                    str(job.id)[:8],
                    job.name,
                    job.status,
                    f"{job.queue} (paused)" if job.queue in paused else job.queue,
                    str(job.priority),
                    describe.attempts_summary(job),
                    timezone.localtime(job.created_at).strftime("%Y-%m-%d %H:%M:%S"),
                    job.error.splitlines()[0][:60] if job.error else "",
                )
            )
        self._print_table(table)
        more = " (newest first; --limit shows more)" if total > len(rows) else ""
        self.stdout.write(f"{len(rows):,} of {total:,} matching job(s){more}")
        self._explain_pauses(paused, rows)

    def _explain_pauses(self, paused: dict[str, QueueState], rows: Sequence[Job]) -> None:
        """Say, under a table of *rows*, why those of a paused queue wait, and how to resume."""
        for queue, state in sorted(paused.items()):
            waiting = sum(
                1 for job in rows if job.queue == queue and job.status in queues.WAITING_STATUSES
            )
            if not waiting:
                continue
            self.stdout.write(
                self.style.WARNING(
                    f"{state.describe()}; {waiting} job(s) above wait for "
                    f"'manage.py asyncjobs resume {queue}'"
                )
            )

    def _show(self, options: dict[str, Any]) -> None:
        (job_id,) = self._resolve([options["id"]])
        job = Job.objects.get(id=job_id)
        attempts = list(job.attempt_history.order_by("started_at", "id"))
        paused = queues.paused_queues()
        if options["json"]:
            self.stdout.write(json.dumps(_as_full_dict(job, attempts, paused), indent=2))
            return
        heading = self.style.MIGRATE_HEADING
        self.stdout.write(heading(f"Job {job.id}"))
        fields = [
            ("name", job.name),
            ("status", job.status),
            ("queue", f"{job.queue} (priority {job.priority}{', paused' * (job.queue in paused)})"),
            ("attempts", _attempts_line(job)),
            ("worker", job.worker or "-"),
            ("run at", _local(job.run_at)),
            ("timeout", f"{job.timeout:g} s" if job.timeout is not None else "-"),
            ("at most once", "yes" if job.at_most_once else "no"),
            ("unique key", job.unique_key or "-"),
            ("depends on", ", ".join(str(d) for d in job.depends_on) or "-"),
            ("heartbeat", _local(job.heartbeat_at)),
        ]
        limits = held.limits_summary(job)
        if limits:
            fields.append(("limits", limits))
        waiting = queues.waiting_note(job, paused) or held.limit_note(job)
        if waiting:
            fields.append(("waiting", waiting))
        if job.progress:
            fields.append(("progress", json.dumps(job.progress, ensure_ascii=False)))
        if job.note:
            fields.append(("note", job.note))
        self._print_fields(fields)
        self._section("Arguments")
        self._print_fields(
            [("args", _pretty(job.args)), ("kwargs", _pretty(job.kwargs))],
        )
        self._section("Result")
        self._indented(_pretty(job.result))
        origin = describe.error_origin(job, attempts)
        self._section(f"Error, {origin}" if origin else "Error")
        self._indented(job.error or "-")
        self._section("Traceback")
        self._indented(job.traceback or "-")
        self._section("Timeline")
        steps = describe.timeline(job, attempts)
        self._print_fields([(step.label, _local(step.moment) + step.after) for step in steps])
        self._section("Attempts")
        if not attempts:
            self._indented("none")
            return
        now = timezone.now()
        table = [("#", "WORKER", "STARTED", "DURATION", "OUTCOME", "ERROR")]
        for attempt in attempts:
            table.append(
                (
                    str(attempt.number),
                    attempt.worker,
                    _local(attempt.started_at),
                    describe.duration(attempt.started_at, attempt.finished_at or now)
                    + ("" if attempt.finished_at else " so far"),
                    attempt.get_outcome_display() if attempt.outcome else "running",
                    attempt.error.splitlines()[0][:80] if attempt.error else "",
                )
            )
        self._print_table(table, indent="  ")

    def _section(self, title: str) -> None:
        self.stdout.write("")
        self.stdout.write(self.style.MIGRATE_HEADING(title))

    def _indented(self, text: str) -> None:
        for line in text.splitlines() or [""]:
            self.stdout.write(f"  {line}".rstrip())

    def _print_fields(self, fields: Sequence[tuple[str, str]]) -> None:
        """Write *fields* as aligned ``label  value`` lines; a value of many lines is indented."""
        width = max(len(label) for label, _ in fields)
        for label, value in fields:
            first, *rest = value.splitlines() or [""]
            self.stdout.write(f"  {label.ljust(width)}  {first}".rstrip())
            for line in rest:
                self.stdout.write(f"  {' ' * width}  {line}".rstrip())

    def _print_table(self, table: Sequence[Sequence[str]], *, indent: str = "") -> None:
        """Write *table* (a header row, then rows) with aligned columns."""
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        for index, row in enumerate(table):
            line = indent + "  ".join(
                cell.ljust(width) for cell, width in zip(row, widths, strict=True)
            )
            line = line.rstrip()
            self.stdout.write(self.style.MIGRATE_HEADING(line) if index == 0 else line)

    def _retry(self, options: dict[str, Any]) -> None:
        if options["all_failed"]:
            if options["ids"]:
                raise CommandError("give job ids or --all-failed, not both")
            failed = Job.objects.filter(status=JobStatus.FAILED)
            if options["name"]:
                failed = failed.filter(name=options["name"])
            progress = Progress(self.stdout, total=failed.count(), verb="retried")
            for count in Job.objects.retry_failed(name=options["name"]):
                progress.advance(count)
            progress.finish()
            self.stdout.write(self.style.SUCCESS(f"{progress.done:,} failed job(s) retried"))
            return
        if options["name"]:
            raise CommandError("--name only goes with --all-failed")
        if not options["ids"]:
            raise CommandError("give job ids to retry, or --all-failed")
        self._apply(
            options["ids"],
            Job.objects.retry,
            "retried",
            "only failed or cancelled jobs can be retried (or another active job holds its "
            "unique key)",
        )

    def _cancel(self, options: dict[str, Any]) -> None:
        """Cancel each job, or request the cancel of a running one; say which for each.

        Stops with exit status 1 at the first job that has finished (the ones before it were
        cancelled); a running job whose cancel was requested already is reported, not refused.
        """
        by = options["by"] or os_user()
        for job_id in self._resolve(options["ids"]):
            job = Job.objects.cancel(job_id, by=by)
            if job is not None and job.status == JobStatus.CANCELLED:
                self.stdout.write(self.style.SUCCESS(f"{job_id} cancelled ({job.name})"))
                continue
            if job is not None:
                self.stdout.write(
                    self.style.WARNING(
                        f"{job_id} cancel requested ({job.name}): running on {job.worker or '?'}"
                        ", which stops it (an async job at once, a sync job at its next check "
                        "or progress report, or at its timeout)"
                    )
                )
                continue
            current = Job.objects.get(id=job_id)
            if current.status == JobStatus.RUNNING and current.cancel_requested_at is not None:
                when = timezone.localtime(current.cancel_requested_at)
                self.stdout.write(
                    self.style.WARNING(
                        f"{job_id} cancel already requested ({current.name}) by "
                        f"{current.cancel_requested_by or '?'} at {when:%Y-%m-%d %H:%M:%S}; "
                        "its worker stops it"
                    )
                )
                continue
            raise CommandError(
                f"job {job_id} is {current.status}; only scheduled, queued or running jobs can "
                "be cancelled"
            )

    def _apply(
        self,
        ids: list[str],
        transition: Callable[[uuid.UUID], Job | None],
        done: str,
        refusal: str,
    ) -> None:
        """Apply *transition* to each job; stop with *refusal* at the first it does not fit."""
        for job_id in self._resolve(ids):
            job = transition(job_id)
            if job is None:
                current = Job.objects.get(id=job_id)
                raise CommandError(f"job {job_id} is {current.status}; {refusal}")
            self.stdout.write(self.style.SUCCESS(f"{job_id} {done} ({job.name})"))

    def _purge(self, options: dict[str, Any]) -> None:
        statuses = options["status"] or [s.value for s in FINAL_STATUSES]
        unfinished = [s for s in statuses if s not in {f.value for f in FINAL_STATUSES}]
        if unfinished:
            raise CommandError(f"purge deletes finished jobs only, not {', '.join(unfinished)}")
        total = Job.objects.purgeable_count(
            older_than_seconds=options["older_than"], statuses=statuses
        )
        if options["dry_run"]:
            which = ", ".join(sorted(statuses))
            self.stdout.write(
                f"{total:,} job(s) would be deleted ({which}, finished more than "
                f"{_ago(options['older_than'])}); dry run, nothing deleted"
            )
            return
        progress = Progress(self.stdout, total=total, verb="deleted")
        for count in Job.objects.purge(
            older_than_seconds=options["older_than"],
            statuses=statuses,
            batch_size=options["batch_size"],
        ):
            progress.advance(count)
        progress.finish()
        self.stdout.write(self.style.SUCCESS(f"{progress.done:,} job(s) deleted"))

    def _stats(self, options: dict[str, Any]) -> None:
        counts = Job.objects.order_by().values("queue", "status").annotate(n=Count("id"))
        by_queue: dict[str, dict[str, int]] = {}
        for count in counts:
            by_queue.setdefault(count["queue"], {})[count["status"]] = count["n"]
        waiting = dict(
            Job.objects.filter(status__in=["scheduled", "queued"], run_at__lte=Now())
            .order_by()
            .values_list("queue")
            .annotate(oldest=Min("run_at"))
        )
        paused = queues.paused_queues()
        now = timezone.now()
        statuses = JobStatus.values
        limited = held.held_by_limits()
        header = [
            "QUEUE",
            *[s.upper() for s in statuses],
            "HELD",
            "OLDEST DUE",
            "SQS",
            "DEAD",
            "PAUSED",
        ]
        table = [header]
        transport = get_transport()
        for queue in sorted(by_queue.keys() | paused.keys()):
            in_status = by_queue.get(queue, {})
            oldest = waiting.get(queue)
            sqs, dead = self._sqs_counts(transport, queue)
            table.append(
                [
                    queue,
                    *[str(in_status.get(s, 0)) for s in statuses],
                    str(limited.get(queue, 0)),
                    f"{(now - oldest).total_seconds():.0f}s" if oldest else "-",
                    sqs,
                    dead,
                    "yes" if queue in paused else "-",
                ]
            )
        transport.close()
        self._print_table(table)
        for queue, state in sorted(paused.items()):
            in_status = by_queue.get(queue, {})
            waiting_jobs = sum(in_status.get(s, 0) for s in queues.WAITING_STATUSES)
            self.stdout.write(self.style.WARNING(f"{state.describe()}; {waiting_jobs} job(s) wait"))
        self._print_processes_summary()

    def _print_processes_summary(self) -> None:
        """Write how many processes are alive, then what needs attention, one line each."""
        alive = dict(Process.objects.live().order_by().values_list("kind").annotate(n=Count("id")))
        dead = Process.objects.count() - sum(alive.values())
        self.stdout.write(
            f"processes alive: {alive.get(ProcessKind.SCHEDULER, 0)} scheduler(s), "
            f"{alive.get(ProcessKind.WORKER, 0)} worker(s)"
            + (f"; {dead} dead" if dead else "")
            + " (see `asyncjobs processes`)"
        )
        for line in attention().messages:
            self.stdout.write(self.style.WARNING(f"WARNING: {line}"))

    def _processes(self, options: dict[str, Any]) -> None:
        rows = list(Process.objects.get_queryset().with_state().order_by("kind", "host", "pid"))
        if options["json"]:
            for process in rows:
                self.stdout.write(json.dumps(_process_as_dict(process)))
            return
        if not rows:
            self.stdout.write(
                "no processes registered: start `manage.py runscheduler` and `manage.py runworker`"
            )
        else:
            now = timezone.now()
            table = [
                (
                    "STATE", "KIND", "NAME", "HOST", "PID", "QUEUES", "CONCURRENCY", "VERSION",
                    "STARTED", "HEARTBEAT", "RUNNING NOW",
                )
            ]  # fmt: skip
            for process in rows:
                running = process.running_jobs or []
                table.append(
                    (
                        "alive" if process.alive else "dead",
                        process.kind,
                        process.name,
                        process.host,
                        str(process.pid),
                        ",".join(process.queues or []) or "-",
                        "-" if process.concurrency is None else str(process.concurrency),
                        process.version,
                        timezone.localtime(process.started_at).strftime("%Y-%m-%d %H:%M:%S"),
                        _ago((now - process.heartbeat_at).total_seconds()),
                        f"{len(running)}: " + ", ".join(job["name"] for job in running)
                        if running
                        else "0",
                    )
                )
            self._print_table(table)
        for line in attention().messages:
            self.stdout.write(self.style.WARNING(f"WARNING: {line}"))

    @staticmethod
    def _sqs_counts(transport: Transport, queue: str) -> tuple[str, str]:
        if not transport.can_inspect_queues:
            return "-", "-"
        try:
            counts = transport.queue_counts(queue)
            dead, _ = transport.dead_letters(queue, limit=0)
        except TransportError:
            return "unreachable", "-"
        if not counts.exists:
            return "no-queue", "-"
        return f"{counts.visible}+{counts.in_flight}", str(dead)

    def _pause(self, options: dict[str, Any]) -> None:
        queue = options["queue"]
        by = options["by"] or _operator()
        unused = options["force"] and not queues.is_known(queue)
        try:
            change = queues.pause(queue, by=by, reason=options["reason"], force=options["force"])
        except UnknownQueue as exc:
            raise CommandError(
                f"{exc}; pass --force to pause it anyway (jobs enqueued to it later will wait)"
            ) from None
        assert change.state is not None
        if not change.changed:
            self.stdout.write(f"{change.state.describe()}; nothing changed")
            return
        if unused:
            self.stderr.write(
                self.style.WARNING(
                    f"warning: queue {queue!r} is not in ASYNCJOBS['QUEUES'] and no job has "
                    "used it so far; paused anyway (--force)"
                )
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"{change.state.describe()}; no job of it is sent or started until "
                f"'manage.py asyncjobs resume {queue}' (running jobs finish)"
            )
        )

    def _resume(self, options: dict[str, Any]) -> None:
        queue = options["queue"]
        try:
            change = queues.resume(queue, by=options["by"] or _operator())
        except UnknownQueue as exc:
            raise CommandError(str(exc)) from None
        if not change.changed:
            self.stdout.write(f"queue {queue!r} is not paused; nothing changed")
            return
        waiting = Job.objects.filter(queue=queue, status=JobStatus.SCHEDULED).count()
        self.stdout.write(
            self.style.SUCCESS(
                f"queue {queue!r} resumed; its {waiting} scheduled job(s) are sent when due"
            )
        )

    def _resolve(self, ids: list[str]) -> list[uuid.UUID]:
        resolved = []
        for text in ids:
            prefix = text.strip().lower()
            if not re.fullmatch(r"[0-9a-f-]{4,36}", prefix):
                raise CommandError(f"{text!r} is not a job id or an id prefix of 4+ hex digits")
            try:
                resolved.append(uuid.UUID(prefix))
                continue
            except ValueError:
                pass
            matches = list(
                Job.objects.get_queryset().with_id_prefix(prefix).values_list("id", flat=True)[:2]
            )
            if not matches:
                raise CommandError(f"no job id starts with {text!r}")
            if len(matches) > 1:
                raise CommandError(f"several job ids start with {text!r}; give more digits")
            resolved.append(matches[0])
        for job_id in resolved:
            if not Job.objects.filter(id=job_id).exists():
                raise CommandError(f"no job {job_id}")
        return resolved

    def _api_token(self, options: dict[str, Any]) -> None:
        from django.contrib.auth import get_user_model

        from ...api.auth import make_token

        model = get_user_model()
        user = model._default_manager.filter(
            **{model.USERNAME_FIELD: options["username"], "is_active": True}
        ).first()
        if user is None:
            raise CommandError(f"no active user {options['username']!r}")
        days = get_settings().api_token_max_age_seconds / 86400
        self.stderr.write(f"valid for {days:g} days; send it as 'Authorization: Bearer <token>'")
        self.stdout.write(make_token(user))

    # -- queues ----------------------------------------------------------------------------------

    def _inspecting_transport(self) -> Transport:
        transport = get_transport()
        if not transport.can_inspect_queues:
            transport.close()
            raise CommandError("these tools need ASYNCJOBS['TRANSPORT'] = 'sqs'")
        return transport

    def _create_queues(self, options: dict[str, Any]) -> None:
        transport = self._inspecting_transport()
        queues = options["queues"] or list(get_settings().queues)
        try:
            for queue in queues:
                self.stdout.write(f"{queue}: {transport.ensure_queue(queue)}")
        except TransportError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            transport.close()
        self.stdout.write(self.style.SUCCESS(f"{len(queues)} queue(s) ready"))

    def _dead_letters(self, options: dict[str, Any]) -> None:
        transport = self._inspecting_transport()
        try:
            for queue in options["queues"] or list(get_settings().queues):
                count, sample = transport.dead_letters(queue, limit=options["limit"])
                self.stdout.write(f"{queue}: {count} dead-lettered message(s)")
                for letter in sample:
                    body = letter.body[:BODY_PREVIEW_CHARS]
                    more = "..." if len(letter.body) > BODY_PREVIEW_CHARS else ""
                    self.stdout.write(
                        f"  {letter.message_id} receives={letter.receive_count} body={body!r}{more}"
                    )
        except TransportError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            transport.close()

    def _redrive(self, options: dict[str, Any]) -> None:
        transport = self._inspecting_transport()
        limit = options["limit"]
        total = 0
        try:
            for queue in options["queues"] or list(get_settings().queues):
                # SQS's count is approximate: "~" says so, and more may be moved than it said.
                waiting, _ = transport.dead_letters(queue, limit=0)
                moved = transport.redrive(queue, limit=None if limit is None else limit - total)
                total += moved
                self.stdout.write(
                    f"{queue}: {moved} of ~{waiting} dead-lettered message(s) moved back"
                )
                if limit is not None and total >= limit:
                    break
        except TransportError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            transport.close()
        self.stdout.write(self.style.SUCCESS(f"{total} message(s) redriven"))


def _operator() -> str:
    """Return who runs this command, as ``user@host``, for the pause's "by"."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _ago(seconds: float) -> str:
    """Return an age as one word and "ago": "12s ago", "5m ago", "3h ago", "2d ago".

    >>> _ago(7213)
    '2h ago'
    """
    for unit, size, below in (("s", 1, 120), ("m", 60, 7200), ("h", 3600, 172800)):
        if seconds < below:
            return f"{max(0.0, seconds) / size:.0f}{unit} ago"
    return f"{seconds / 86400:.0f}d ago"


def _process_as_dict(process: Process) -> dict[str, Any]:
    """A process row of ``with_state()`` as JSON: its fields, ``alive`` and ``running_jobs``."""
    return {
        "id": str(process.id),
        "kind": process.kind,
        "name": process.name,
        "host": process.host,
        "pid": process.pid,
        "queues": process.queues,
        "concurrency": process.concurrency,
        "version": process.version,
        "started_at": process.started_at.isoformat(),
        "heartbeat_at": process.heartbeat_at.isoformat(),
        "alive": process.alive,
        "running_jobs": process.running_jobs,
    }


def _as_dict(job: Job, paused: dict[str, QueueState]) -> dict[str, Any]:
    state = paused.get(job.queue)
    return {
        "id": str(job.id),
        "name": job.name,
        "status": job.status,
        "queue": job.queue,
        "priority": job.priority,
        "attempts": job.attempts,
        "total_attempts": job.total_attempts,
        "max_retries": job.max_retries,
        "args": job.args,
        "kwargs": job.kwargs,
        "result": job.result,
        "error": job.error,
        "created_at": job.created_at.isoformat(),
        "run_at": job.run_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "queue_paused": state.as_json() if state else None,
    }


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _as_full_dict(
    job: Job, attempts: Sequence[JobAttempt], paused: dict[str, QueueState]
) -> dict[str, Any]:
    """Return everything ``asyncjobs show --json`` prints: the job, its timeline, its attempts."""
    return {
        **_as_dict(job, paused),
        "interruptions": job.interruptions,
        "at_most_once": job.at_most_once,
        "timeout": job.timeout,
        "unique_key": job.unique_key,
        "concurrency_key": job.concurrency_key,
        "concurrency_limit": job.concurrency_limit,
        "limits": held.limits_summary(job),
        "waiting": queues.waiting_note(job, paused) or held.limit_note(job),
        "depends_on": [str(d) for d in job.depends_on],
        "blocked": job.blocked,
        "worker": job.worker,
        "progress": job.progress,
        "traceback": job.traceback,
        "note": job.note,
        "error_origin": describe.error_origin(job, attempts),
        "enqueued_at": _iso(job.enqueued_at),
        "heartbeat_at": _iso(job.heartbeat_at),
        "timeline": [
            {"step": step.label, "at": step.moment.isoformat()}
            for step in describe.timeline(job, attempts)
        ],
        "attempt_history": [
            {
                "number": attempt.number,
                "worker": attempt.worker,
                "started_at": attempt.started_at.isoformat(),
                "finished_at": _iso(attempt.finished_at),
                "duration_seconds": (
                    (attempt.finished_at - attempt.started_at).total_seconds()
                    if attempt.finished_at
                    else None
                ),
                "outcome": attempt.outcome or "running",
                "error": attempt.error,
                "traceback": attempt.traceback,
            }
            for attempt in attempts
        ],
    }


def _attempts_line(job: Job) -> str:
    """Return the attempts of ``show``: how often the job ran, and its retry limit."""
    line = f"ran {describe.times_run(job)} time(s); {job.attempts} of {job.max_retries + 1} used"
    if describe.times_run(job) != job.attempts:
        line += f" ({describe.COUNTED_EXPLAINED})"
    return line


def _local(moment: dt.datetime | None) -> str:
    if moment is None:
        return "-"
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _pretty(value: Any) -> str:
    """Return *value* as JSON: on one line when it is short, else indented."""
    line = json.dumps(value, ensure_ascii=False)
    return (
        line if len(line) <= PRETTY_LINE_CHARS else json.dumps(value, indent=2, ensure_ascii=False)
    )
