"""The admin's queue overview: per queue, jobs by status, age of the oldest waiting job,
throughput over the last hour, and what SQS holds (dead-letter queues included).

It also owns the banner that the overview, the job list and the process list show when due
jobs wait and no scheduler is alive, or a queue with waiting jobs has no live worker
(:func:`attention_context`, template ``admin/django_asyncjobs/attention.html``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db import connections
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from ..exceptions import TransportError
from ..models import Job
from ..processes import attention
from ..status import JobStatus
from ..transports import get_transport

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[Job]
else:  # generic only in django-stubs
    _ModelAdmin = admin.ModelAdmin

#: Throughput is counted per minute over this many minutes.
WINDOW_MINUTES = 60


@dataclass(slots=True, kw_only=True)
class QueueStats:
    """What the overview shows for one queue."""

    queue: str
    counts: dict[str, int] = field(default_factory=dict)
    oldest_waiting_seconds: float | None = None
    succeeded_per_minute: list[int] = field(default_factory=lambda: [0] * WINDOW_MINUTES)
    failed_per_minute: list[int] = field(default_factory=lambda: [0] * WINDOW_MINUTES)
    sqs_visible: int | None = None
    sqs_in_flight: int | None = None
    sqs_dead: int | None = None
    sqs_error: str = ""

    def count(self, status: str) -> int:
        """Return how many jobs of this queue have *status*."""
        return self.counts.get(status, 0)

    @property
    def status_counts(self) -> list[tuple[str, int]]:
        """Return ``(status, count)`` for every status, in the status machine's order."""
        return [(status, self.count(status)) for status in JobStatus.values]

    @property
    def chart(self) -> SafeString:
        """A small SVG chart: succeeded (green) and failed (red) jobs per minute, last hour."""
        width, height = 240, 40
        peak = max([1, *self.succeeded_per_minute, *self.failed_per_minute])

        def points(values: list[int]) -> str:
            step = width / (len(values) - 1)
            return " ".join(
                f"{i * step:.1f},{height - 2 - (v / peak) * (height - 4):.1f}"
                for i, v in enumerate(values)
            )

        return format_html(
            '<svg class="asyncjobs-chart" width="{}" height="{}" viewBox="0 0 {} {}" role="img" '
            'aria-label="succeeded and failed jobs per minute, last hour">'
            '<polyline fill="none" stroke="#198754" stroke-width="1.5" points="{}"/>'
            '<polyline fill="none" stroke="#dc3545" stroke-width="1.5" points="{}"/></svg>'
            '<div style="font-size:11px">peak {} / min; {} succeeded, {} failed in the hour</div>',
            width,
            height,
            width,
            height,
            points(self.succeeded_per_minute),
            points(self.failed_per_minute),
            peak,
            sum(self.succeeded_per_minute),
            sum(self.failed_per_minute),
        )


def queue_overview() -> list[QueueStats]:
    """Return the statistics of every queue that has jobs, by queue name."""
    alias = Job.objects.db
    table = connections[alias].ops.quote_name(Job._meta.db_table)
    stats: dict[str, QueueStats] = {}
    with connections[alias].cursor() as cursor:
        cursor.execute(f"SELECT queue, status, count(*) FROM {table} GROUP BY queue, status")
        for queue, status, count in cursor.fetchall():
            stats.setdefault(queue, QueueStats(queue=queue)).counts[status] = count
        cursor.execute(
            f"SELECT queue, EXTRACT(EPOCH FROM now() - min(run_at)) FROM {table} "
            f"WHERE status IN ('scheduled', 'queued') AND run_at <= now() GROUP BY queue"
        )
        for queue, seconds in cursor.fetchall():
            stats.setdefault(queue, QueueStats(queue=queue)).oldest_waiting_seconds = float(seconds)
        cursor.execute(
            f"""
            SELECT queue, status,
                   floor(EXTRACT(EPOCH FROM now() - finished_at) / 60)::int AS minutes_ago,
                   count(*)
            FROM {table}
            WHERE status IN ('succeeded', 'failed')
              AND finished_at > now() - %s * interval '1 minute'
            GROUP BY 1, 2, 3
            """,
            [WINDOW_MINUTES],
        )
        for queue, status, minutes_ago, count in cursor.fetchall():
            entry = stats.setdefault(queue, QueueStats(queue=queue))
            series = (
                entry.succeeded_per_minute if status == "succeeded" else entry.failed_per_minute
            )
            index = WINDOW_MINUTES - 1 - min(WINDOW_MINUTES - 1, max(0, minutes_ago))
            series[index] += count
    _add_sqs_counts(list(stats.values()))
    return [stats[q] for q in sorted(stats)]


def attention_context(request: HttpRequest) -> dict[str, Any]:
    """Return the banner's template context: ``attention`` (the problems, possibly none; see
    :class:`~django_asyncjobs.processes.Attention`) and ``processes_url`` (the process list,
    for users who may view it)."""
    url = ""
    if request.user.has_perm("django_asyncjobs.view_process"):
        url = reverse("admin:django_asyncjobs_process_changelist")
    return {"attention": attention(), "processes_url": url}


def _add_sqs_counts(stats: list[QueueStats]) -> None:
    transport = get_transport()
    try:
        if not transport.can_inspect_queues:
            return
        for entry in stats:
            try:
                counts = transport.queue_counts(entry.queue)
                entry.sqs_visible, entry.sqs_in_flight = counts.visible, counts.in_flight
                entry.sqs_dead, _ = transport.dead_letters(entry.queue, limit=0)
            except TransportError as exc:
                entry.sqs_error = str(exc)
    finally:
        transport.close()


class QueueOverviewAdmin(_ModelAdmin):
    """Adds the queue overview page (``overview/`` under the job list) to the job admin."""

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "overview/",
                self.admin_site.admin_view(self.overview_view),
                name="django_asyncjobs_job_overview",
            ),
            *super().get_urls(),
        ]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The job list, with the banner (see :func:`attention_context`)."""
        if request.method == "GET":
            extra_context = {**attention_context(request), **(extra_context or {})}
        return super().changelist_view(request, extra_context)

    def overview_view(self, request: HttpRequest) -> HttpResponse:
        """Per queue: counts by status, oldest waiting job, throughput chart, SQS depth."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": "Queue overview",
            "opts": self.model._meta,
            "queues": queue_overview(),
            "statuses": JobStatus.values,
            **attention_context(request),
        }
        return TemplateResponse(request, "admin/django_asyncjobs/job/overview.html", context)
