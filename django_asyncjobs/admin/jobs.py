"""The job list and the job detail page: fast on a million rows, and read-only.

State changes go through the confirmed actions (:mod:`.actions`); the queue overview is a page
of its own (:mod:`.overview`).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString

from ..models import Job, JobAttempt
from ..queries import uuid_prefix_range
from ..status import JobStatus
from .actions import JobActionsAdmin
from .display import (
    STATUS_COLOURS,
    describe_cancel_request,
    describe_progress,
    duration,
    preformatted,
    relative,
)
from .overview import QueueOverviewAdmin

if TYPE_CHECKING:
    _AttemptInline = admin.TabularInline[JobAttempt, Job]
else:  # generic only in django-stubs
    _AttemptInline = admin.TabularInline

#: Counting stops here: with a million rows an exact COUNT(*) on every page is too slow.
COUNT_LIMIT = 10_000
#: A refused delete names at most this many of the jobs that wait for the ones selected.
WAITING_SHOWN = 20
#: A hex term this long is tried as an id prefix alone first (see get_search_results).
ID_PREFIX_DIGITS = 8


class CappedCountPaginator(Paginator):
    """Counts at most COUNT_LIMIT + 1 rows, so that a filter over a million rows stays fast."""

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return len(queryset)
        return queryset.order_by()[: COUNT_LIMIT + 1].count()


class DistinctFilter(admin.SimpleListFilter):
    """A filter whose choices are the distinct values of an indexed column (loose index scan)."""

    column = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        table = connections[Job.objects.db].ops.quote_name(Job._meta.db_table)
        column = connections[Job.objects.db].ops.quote_name(self.column)
        sql = f"""
            WITH RECURSIVE v AS (
                (SELECT {column} AS value FROM {table} ORDER BY {column} LIMIT 1)
                UNION ALL
                SELECT (SELECT {column} FROM {table} WHERE {column} > v.value
                        ORDER BY {column} LIMIT 1)
                FROM v WHERE v.value IS NOT NULL
            )
            SELECT value FROM v WHERE value IS NOT NULL LIMIT 200
        """
        with connections[Job.objects.db].cursor() as cursor:
            cursor.execute(sql)
            return [(row[0], row[0]) for row in cursor.fetchall()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(**{self.column: value}) if value else queryset


class QueueFilter(DistinctFilter):
    title = "queue"
    parameter_name = "queue"
    column = "queue"


class NameFilter(DistinctFilter):
    title = "job name"
    parameter_name = "name"
    column = "name"


class CreatedFilter(admin.SimpleListFilter):
    """Created within the last hour, day, week or month (the created_at index)."""

    title = "created"
    parameter_name = "created"
    _spans = {"1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("1h", "last hour"), ("24h", "last 24 hours"), ("7d", "last 7 days"),
                ("30d", "last 30 days")]  # fmt: skip

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        seconds = self._spans.get(self.value() or "")
        if seconds is None:
            return queryset
        return queryset.filter(created_at__gte=timezone.now() - dt.timedelta(seconds=seconds))


class AttemptInline(_AttemptInline):
    """The history of every attempt, oldest first."""

    model = JobAttempt
    extra = 0
    can_delete = False
    fields = ("number", "worker", "started_at", "finished_at", "outcome", "error")
    readonly_fields = fields
    ordering = ("started_at",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Part of the job's page: whoever may view jobs may view their attempts.
        return request.user.has_perm("django_asyncjobs.view_job")


@admin.register(Job)
class JobAdmin(QueueOverviewAdmin, JobActionsAdmin):
    """Read-only job rows; state changes go through the confirmed actions, never the form."""

    list_display = (
        "status_badge",
        "name",
        "queue",
        "priority",
        "attempts_display",
        "created_at",
        "due",
        "duration_display",
    )
    list_display_links = ("name",)
    list_filter = ("status", QueueFilter, NameFilter, CreatedFilter)
    search_fields = ("name",)
    search_help_text = "Search by job id (or its first characters), name or error text."
    ordering = ("-created_at",)
    show_full_result_count = False
    paginator = CappedCountPaginator
    list_per_page = 50
    inlines = (AttemptInline,)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "name",
                    "status_badge",
                    "cancel_request",
                    "progress_display",
                    "queue",
                    "priority",
                    "worker",
                )
            },
        ),
        ("Arguments and result", {"fields": ("args_pretty", "kwargs_pretty", "result_pretty")}),
        ("Error", {"fields": ("error", "traceback_pretty")}),
        ("Timeline", {"fields": ("timeline",)}),
        (
            "Scheduling",
            {
                "fields": (
                    "run_at",
                    "attempts_display",
                    "interruptions",
                    "timeout",
                    "unique_key",
                    "depends_on",
                    "blocked",
                    "heartbeat_at",
                ),
                "classes": ("collapse",),
            },
        ),
    )
    # Everything shown is read-only: the fields are exactly those of the fieldsets.
    readonly_fields = tuple(
        name for _, options in fieldsets for name in options["fields"] if isinstance(name, str)
    )

    # -- list ------------------------------------------------------------------------------------

    @admin.display(description="status", ordering="status")
    def status_badge(self, job: Job) -> SafeString:
        colour = STATUS_COLOURS.get(JobStatus(job.status), "#6c757d")
        return format_html(
            '<span class="asyncjobs-status" style="background:{};color:#fff;padding:2px 8px;'
            'border-radius:10px;font-size:11px;white-space:nowrap">{}</span>',
            colour,
            job.status,
        )

    @admin.display(description="attempts")
    def attempts_display(self, job: Job) -> str:
        return f"{job.attempts} / {job.max_retries + 1}"

    @admin.display(description="due", ordering="run_at")
    def due(self, job: Job) -> str:
        return relative(job.run_at) if job.status == JobStatus.SCHEDULED else "-"

    @admin.display(description="duration")
    def duration_display(self, job: Job) -> str:
        end = job.finished_at or (timezone.now() if job.status == JobStatus.RUNNING else None)
        return duration(job.started_at, end)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Job], search_term: str
    ) -> tuple[QuerySet[Job], bool]:
        """Match a whole job id exactly; any other term against id prefix, name and error text.

        A term of 4+ hex digits ("cafe", "2026") may be an id prefix or a word, so it matches
        either way; from 8 digits on, jobs whose id starts so are shown alone when there are
        any. A whole id (32 hex digits) is only looked up by primary key: that is what an
        operator pasting an id means, and it stays instant on a million rows.
        """
        term = search_term.strip()
        if not term:
            return queryset, False
        bounds = uuid_prefix_range(term)
        if bounds is not None and len(term.replace("-", "")) >= ID_PREFIX_DIGITS:
            # Eight or more hex digits are almost always a copied id: an index range answers
            # at once, where matching names and errors too scans the table (0.5 s at 1M rows).
            # Only when no id starts so are they searched as words.
            by_id = queryset.filter(pk__range=bounds)
            if by_id.exists():
                return by_id, False
        return queryset.filter(_search_condition(term)), False

    # -- detail ----------------------------------------------------------------------------------

    @admin.display(description="args")
    def args_pretty(self, job: Job) -> SafeString:
        return preformatted(json.dumps(job.args, indent=2, ensure_ascii=False))

    @admin.display(description="kwargs")
    def kwargs_pretty(self, job: Job) -> SafeString:
        return preformatted(json.dumps(job.kwargs, indent=2, ensure_ascii=False))

    @admin.display(description="cancel requested")
    def cancel_request(self, job: Job) -> str:
        return describe_cancel_request(job)

    @admin.display(description="progress")
    def progress_display(self, job: Job) -> str:
        return describe_progress(job.progress)

    @admin.display(description="result")
    def result_pretty(self, job: Job) -> SafeString:
        return preformatted(json.dumps(job.result, indent=2, ensure_ascii=False))

    @admin.display(description="traceback")
    def traceback_pretty(self, job: Job) -> SafeString:
        return preformatted(job.traceback or "-")

    @admin.display(description="timeline")
    def timeline(self, job: Job) -> SafeString:
        steps = [
            ("created", job.created_at, None),
            ("enqueued", job.enqueued_at, job.created_at),
            ("started", job.started_at, job.enqueued_at),
            ("finished", job.finished_at, job.started_at),
        ]
        parts = [
            format_html(
                '<span class="asyncjobs-step"><b>{}</b> {}{}</span>',
                label,
                timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
                f" (+{duration(previous, moment)})" if previous else "",
            )
            for label, moment, previous in steps
            if moment is not None
        ]
        return format_html("{}", SafeString(" &rarr; ".join(parts)))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Rows change only through the state transitions; the detail page is read-only.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.status == JobStatus.RUNNING:
            return False
        return super().has_delete_permission(request, obj)

    def get_deleted_objects(
        self, objs: Sequence[Job] | QuerySet[Job], request: HttpRequest
    ) -> tuple[list[Any], dict[str, int], set[str], list[Any]]:
        """Refuse to delete a job that blocked jobs still wait for, naming them.

        Deleting a dependency cancels its dependents (the scheduler's next pass), which an
        operator cleaning up old rows rarely means to do: they are listed as protected instead,
        which makes the delete page and the "delete selected" action refuse, also on a POST
        that skipped the confirmation. The operator cancels them first, or lets the job run.
        """
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        ids = [obj.pk for obj in objs]
        waiting = Job.objects.waiting_for(ids, limit=WAITING_SHOWN + 1)
        if waiting:
            selected = {str(pk) for pk in ids}
            protected = [
                *protected,
                *(
                    f"{job.name} {job.pk} (scheduled) waits for "
                    + ", ".join(str(d) for d in job.depends_on if str(d) in selected)
                    for job in waiting[:WAITING_SHOWN]
                ),
            ]
            if len(waiting) > WAITING_SHOWN:
                protected.append("... and more")
        return deleted, counts, perms_needed, protected


def _search_condition(term: str) -> Q:
    """Return the condition the admin search puts on jobs for *term* (see get_search_results).

    The id prefix is a primary-key range (what ``JobQuerySet.with_id_prefix`` filters on), never
    a cast of the id to text, so a whole id is an index lookup.
    """
    try:
        return Q(pk=uuid.UUID(term))
    except ValueError:
        pass
    text = Q(name__icontains=term) | Q(error__icontains=term)
    bounds = uuid_prefix_range(term)
    return text if bounds is None else Q(pk__range=bounds) | text
