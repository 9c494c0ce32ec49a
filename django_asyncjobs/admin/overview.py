"""The admin's queue overview: per queue, jobs by status, age of the oldest waiting job,
throughput over the last hour, what SQS holds (dead-letter queues included), and whether it is
paused, with the buttons that pause and resume it (permission ``pause_queue``).

It also owns the banner that the overview, the job list and the process list show when due
jobs wait and no scheduler is alive, or a queue with waiting jobs has no live worker
(:func:`attention_context`, template ``admin/django_asyncjobs/attention.html``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import connections
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from .. import held, queues
from ..conf import get_settings, queue_name_error
from ..exceptions import TransportError, UnknownQueue
from ..models import Job, QueueState
from ..processes import attention
from ..queues import WAITING_STATUSES
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
    #: SQS has no queue of this name yet (the scheduler creates it on its first send).
    sqs_missing: bool = False
    #: The queue's pause (or the last one, resumed since); ``None``: never paused.
    state: QueueState | None = None
    #: Due jobs a concurrency or rate limit holds back in PostgreSQL now.
    held: int = 0
    #: The queue's rate limit (``QUEUE_RATE_LIMITS``), as written; "" when it has none.
    rate_limit: str = ""

    @property
    def paused(self) -> bool:
        """Return whether the queue is paused."""
        return self.state is not None and self.state.paused

    @property
    def waiting(self) -> int:
        """Return how many jobs wait to be sent or started (scheduled or queued)."""
        return sum(self.count(status) for status in WAITING_STATUSES)

    def count(self, status: str) -> int:
        """Return how many jobs of this queue have *status*."""
        return self.counts.get(status, 0)

    @property
    def status_counts(self) -> list[tuple[str, int]]:
        """Return ``(status, count)`` for every status, in the status machine's order."""
        return [(status, self.count(status)) for status in JobStatus.values]

    @property
    def chart(self) -> SafeString:
        """A small SVG chart of jobs finished per minute over the last hour: succeeded (green),
        and failed (red) only when some failed; the x axis runs from an hour ago to now, the y
        axis from 0 to the peak."""
        width, height, left, bottom = 240, 40, 22, 12
        plot_width, plot_height = width - left, height - bottom
        peak = max([1, *self.succeeded_per_minute, *self.failed_per_minute])

        def points(values: list[int]) -> str:
            step = plot_width / (len(values) - 1)
            return " ".join(
                f"{left + i * step:.1f},{plot_height - 1 - (v / peak) * (plot_height - 3):.1f}"
                for i, v in enumerate(values)
            )

        failed = sum(self.failed_per_minute)
        failed_line = (
            format_html(
                '<polyline class="asyncjobs-chart-failed" fill="none" stroke="#dc3545" '
                'stroke-width="1.5" points="{}"/>',
                points(self.failed_per_minute),
            )
            if failed
            else ""
        )
        return format_html(
            '<svg class="asyncjobs-chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
            'role="img" aria-label="jobs finished per minute, last hour" '
            'font-size="9" fill="#666">'
            '<line x1="{l}" y1="0" x2="{l}" y2="{ph}" stroke="#999" stroke-width="0.5"/>'
            '<line x1="{l}" y1="{ph}" x2="{w}" y2="{ph}" stroke="#999" stroke-width="0.5"/>'
            '<text class="asyncjobs-chart-y" x="{lt}" y="8" text-anchor="end">{peak}</text>'
            '<text x="{lt}" y="{ph}" text-anchor="end">0</text>'
            '<text class="asyncjobs-chart-x" x="{l}" y="{h}">-60 min</text>'
            '<text x="{w}" y="{h}" text-anchor="end">now</text>'
            '<polyline class="asyncjobs-chart-succeeded" fill="none" stroke="#198754" '
            'stroke-width="1.5" points="{ok}"/>{failed_line}</svg>'
            '<div style="font-size:11px">jobs / min; {succeeded} succeeded{failed_text} '
            "in the hour</div>",
            w=width,
            h=height,
            l=left,
            lt=left - 2,
            ph=plot_height,
            peak=peak,
            ok=points(self.succeeded_per_minute),
            failed_line=failed_line,
            succeeded=sum(self.succeeded_per_minute),
            failed_text=f", {failed} failed" if failed else "",
        )


def queue_overview() -> list[QueueStats]:
    """Return the statistics of every queue that has jobs, is configured (``QUEUES``) or is
    paused, by queue name."""
    alias = Job.objects.db
    table = connections[alias].ops.quote_name(Job._meta.db_table)
    # A configured queue without jobs shows too: "0 everywhere" is an answer, a missing row
    # looks like a misconfiguration.
    stats = {q: QueueStats(queue=q) for q in get_settings().queues}
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
    for state in QueueState.objects.db_manager(alias).all():
        # A paused queue shows even without jobs: a pause must never be out of sight.
        if state.paused or state.name in stats:
            stats.setdefault(state.name, QueueStats(queue=state.name)).state = state
    for queue, count in held.held_by_limits(using=alias).items():
        stats.setdefault(queue, QueueStats(queue=queue)).held = count
    for queue, rate in get_settings().queue_rates().items():
        if queue in stats:
            stats[queue].rate_limit = str(rate)
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
                if not counts.exists:
                    entry.sqs_missing = True
                    continue
                entry.sqs_visible, entry.sqs_in_flight = counts.visible, counts.in_flight
                entry.sqs_dead, _ = transport.dead_letters(entry.queue, limit=0)
            except TransportError as exc:
                entry.sqs_error = str(exc)
    finally:
        transport.close()


class QueueOverviewAdmin(_ModelAdmin):
    """Adds the queue overview page (``overview/`` under the job list) to the job admin, and
    its pause and resume buttons (``overview/<queue>/pause/`` and ``.../resume/``)."""

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "overview/",
                self.admin_site.admin_view(self.overview_view),
                name="django_asyncjobs_job_overview",
            ),
            path(
                "overview/<str:queue>/pause/",
                self.admin_site.admin_view(self.pause_view),
                name="django_asyncjobs_job_pause_queue",
            ),
            path(
                "overview/<str:queue>/resume/",
                self.admin_site.admin_view(self.resume_view),
                name="django_asyncjobs_job_resume_queue",
            ),
            *super().get_urls(),
        ]

    def has_pause_permission(self, request: HttpRequest) -> bool:
        """Return whether the user may pause and resume queues."""
        return request.user.has_perm("django_asyncjobs.pause_queue")

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The job list, with the banner (see :func:`attention_context`)."""
        if request.method == "GET":
            extra_context = {**attention_context(request), **(extra_context or {})}
        return super().changelist_view(request, extra_context)

    def overview_view(self, request: HttpRequest) -> HttpResponse:
        """Per queue: counts by status, oldest waiting job, throughput chart, SQS depth, pause."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": "Queue overview",
            "opts": self.model._meta,
            "queues": queue_overview(),
            "statuses": JobStatus.values,
            "can_pause": self.has_pause_permission(request),
            **attention_context(request),
        }
        return TemplateResponse(request, "admin/django_asyncjobs/job/overview.html", context)

    def pause_view(self, request: HttpRequest, queue: str) -> HttpResponse:
        """Pause *queue* after a confirmation page that asks why (POST only)."""
        return self._change_queue(request, queue, pausing=True)

    def resume_view(self, request: HttpRequest, queue: str) -> HttpResponse:
        """Resume *queue* after a confirmation page (POST only)."""
        return self._change_queue(request, queue, pausing=False)

    def _change_queue(self, request: HttpRequest, queue: str, *, pausing: bool) -> HttpResponse:
        """The pause and resume buttons: a POST shows the confirmation, its "yes" changes."""
        if not (self.has_view_permission(request) and self.has_pause_permission(request)):
            raise PermissionDenied
        if request.method != "POST":
            # A state change behind a link would be one click (or one prefetch) away.
            return HttpResponseNotAllowed(["POST"])
        overview = reverse(f"{self.admin_site.name}:django_asyncjobs_job_overview")
        problem = queue_name_error(queue)
        if problem:
            self.message_user(request, problem, messages.ERROR)
            return HttpResponseRedirect(overview)
        verb = "pause" if pausing else "resume"
        if request.POST.get("confirmed") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "title": f"Are you sure you want to {verb} queue {queue!r}?",
                "opts": self.model._meta,
                "queue": queue,
                "verb": verb,
                "pausing": pausing,
                "state": QueueState.objects.filter(name=queue).first(),
                "waiting": Job.objects.filter(queue=queue, status__in=WAITING_STATUSES).count(),
            }
            return TemplateResponse(
                request, "admin/django_asyncjobs/job/queue_confirmation.html", context
            )
        by = f"{request.user.get_username()} (admin)"
        try:
            if pausing:
                reason = request.POST.get("reason", "").strip()
                change = queues.pause(queue, by=by, reason=reason)
            else:
                change = queues.resume(queue, by=by)
        except UnknownQueue as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(overview)
        if not change.changed:
            state = change.state
            already = state.describe() if state else f"queue {queue!r} is not paused"
            self.message_user(request, f"{already}; nothing changed.", messages.WARNING)
            return HttpResponseRedirect(overview)
        assert change.state is not None
        # The admin log of a queue state, as the actions log jobs (log_change takes any row).
        self.log_change(request, change.state, f"{verb}d")  # type: ignore[arg-type]
        if pausing:
            done = f"{change.state.describe()}. No job of it is sent or started until resumed."
        else:
            done = f"Queue {queue!r} resumed: its due jobs are sent now."
        self.message_user(request, done, messages.SUCCESS)
        return HttpResponseRedirect(overview)
