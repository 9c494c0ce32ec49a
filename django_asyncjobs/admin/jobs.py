"""The job list and the job detail page: fast on a million rows, and read-only.

State changes go through the confirmed actions (:mod:`.actions`); the queue overview is a page
of its own (:mod:`.overview`).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Exists, OuterRef, Q, QuerySet, prefetch_related_objects
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString

from .. import describe, held
from ..models import Job, JobAttempt, QueueState
from ..queries import ATTEMPT_RELATION, uuid_prefix_range
from ..queues import WAITING_STATUSES, paused_queues, waiting_note
from ..status import JobStatus
from .actions import JOB_PAGE_FIELD, JobActionsAdmin
from .display import (
    STATUS_COLOURS,
    describe_cancel_request,
    describe_progress,
    duration,
    preformatted,
    relative,
    timestamp,
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

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        paused = paused_queues()
        return [
            (value, f"{label} (paused)" if value in paused else label)
            for value, label in super().lookups(request, model_admin)
        ]


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


class JobChangeList(ChangeList):
    """The job list, with the attempt history of the jobs on the page (one more query): a job's
    duration is its latest attempt's, not the time until an operator ended it."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        # Evaluates the page once; the template iterates the same cached rows.
        prefetch_related_objects(list(self.result_list), ATTEMPT_RELATION)


def attempts_of(job: Job) -> list[JobAttempt]:
    """Return *job*'s attempts, oldest first (prefetched on the list and the job page)."""
    return list(job.attempt_history.all())


@dataclass(frozen=True, slots=True)
class DeleteRefusal:
    """Why a job may not be deleted, as the delete pages list it (their "protected" objects).

    ``reason`` groups them on the page: ``"running"`` or ``"waited for"``.
    """

    reason: str
    text: str

    def __str__(self) -> str:
        return self.text


class AttemptInline(_AttemptInline):
    """The history of every attempt, oldest first, numbered on across operator retries."""

    model = JobAttempt
    extra = 0
    can_delete = False
    fields = ("number", "worker", "started_at", "finished_at", "run_duration", "outcome", "error")
    readonly_fields = fields
    ordering = ("started_at", "id")

    @admin.display(description="duration")
    def run_duration(self, attempt: JobAttempt) -> str:
        if attempt.finished_at is None:  # still running: the time so far
            return f"{duration(attempt.started_at, timezone.now())} so far"
        return duration(attempt.started_at, attempt.finished_at)

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
        "short_id",
        "status_badge",
        "name",
        "queue_display",
        "priority",
        "attempts_display",
        "created_display",
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
    change_form_template = "admin/django_asyncjobs/job/change_form.html"
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
                    "queue_display",
                    "priority",
                    "worker",
                )
            },
        ),
        (
            "Arguments and result",
            {"fields": ("args_pretty", "kwargs_pretty", "result_pretty", "note")},
        ),
        ("Error", {"fields": ("error_display", "traceback_pretty")}),
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
                    "limits_display",
                    "depends_on",
                    "blocked",
                    "heartbeat_at",
                ),
                "classes": ("collapse",),
            },
        ),
    )
    # Everything shown is read-only: the fields are exactly those of the fieldsets, and the
    # note a waiting job of a paused queue gets (get_fieldsets).
    readonly_fields = (
        *(name for _, options in fieldsets for name in options["fields"] if isinstance(name, str)),
        "waiting_display",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Job]:
        # One primary-key probe of the small queue state table per row shown.
        paused = QueueState.objects.filter(name=OuterRef("queue"), paused=True)
        return super().get_queryset(request).annotate(queue_paused=Exists(paused))

    def get_fieldsets(self, request: HttpRequest, obj: Job | None = None) -> Any:
        """The fieldsets, and right under the status, why the job waits if its queue is paused
        or a concurrency or rate limit holds it."""
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or obj.status not in WAITING_STATUSES:
            return fieldsets
        if not self._waiting_note(obj):
            return fieldsets
        (title, options), *rest = fieldsets
        fields = list(options["fields"])
        fields.insert(fields.index("status_badge") + 1, "waiting_display")
        return [(title, {**options, "fields": fields}), *rest]

    # -- list ------------------------------------------------------------------------------------

    @admin.display(description="id")
    def short_id(self, job: Job) -> SafeString:
        """The id's first characters, as ``asyncjobs show`` and the search take them."""
        return format_html(
            '<code class="asyncjobs-id" title="{}">{}</code>',
            job.id,
            str(job.id)[:ID_PREFIX_DIGITS],
        )

    @admin.display(description="created", ordering="created_at")
    def created_display(self, job: Job) -> SafeString:
        return format_html('<span style="white-space:nowrap">{}</span>', timestamp(job.created_at))

    @admin.display(description="status", ordering="status")
    def status_badge(self, job: Job) -> SafeString:
        colour = STATUS_COLOURS.get(JobStatus(job.status), "#6c757d")
        return format_html(
            '<span class="asyncjobs-status" style="background:{};color:#fff;padding:2px 8px;'
            'border-radius:10px;font-size:11px;white-space:nowrap">{}</span>',
            colour,
            job.status,
        )

    @admin.display(description="queue", ordering="queue")
    def queue_display(self, job: Job) -> SafeString:
        if not getattr(job, "queue_paused", False):
            return format_html("{}", job.queue)
        return format_html(
            '{} <span class="asyncjobs-paused" title="no job of this queue is sent or started '
            'until it is resumed">(paused)</span>',
            job.queue,
        )

    @admin.display(description="waiting")
    def waiting_display(self, job: Job) -> str:
        return self._waiting_note(job) or "-"

    def _waiting_note(self, job: Job) -> str | None:
        """Why *job* waits: its queue's pause, else a limit; read once per page."""
        if not hasattr(job, "_waiting_note"):
            paused = (
                waiting_note(job, paused_queues()) if getattr(job, "queue_paused", False) else None
            )
            job._waiting_note = paused or held.limit_note(job)  # type: ignore[attr-defined]
        note: str | None = job._waiting_note  # type: ignore[attr-defined]
        return note

    @admin.display(description="limits")
    def limits_display(self, job: Job) -> str:
        return held.limits_summary(job) or "-"

    @admin.display(description="attempts")
    def attempts_display(self, job: Job) -> SafeString:
        return format_html(
            '<span class="asyncjobs-attempts" title="ran {} time(s); {} of the {} attempts '
            'allowed are used ({})">{}</span>',
            describe.times_run(job),
            job.attempts,
            job.max_retries + 1,
            describe.COUNTED_EXPLAINED,
            describe.attempts_summary(job),
        )

    @admin.display(description="due", ordering="run_at")
    def due(self, job: Job) -> str:
        if job.status != JobStatus.SCHEDULED:
            return "-"
        # "in 3 min" broken over two lines reads as two values.
        return format_html(
            '<span style="white-space:nowrap" title="{}">{}</span>',
            timestamp(job.run_at),
            relative(job.run_at),
        )

    @admin.display(description="duration")
    def duration_display(self, job: Job) -> SafeString:
        text = describe.run_duration(job, attempts_of(job), now=timezone.now())
        return format_html('<span style="white-space:nowrap">{}</span>', text)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return JobChangeList

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

    @admin.display(description="error")
    def error_display(self, job: Job) -> SafeString:
        if not job.error:
            return format_html("{}", "-")
        origin = describe.error_origin(job, attempts_of(job))
        if not origin:
            return preformatted(job.error)
        return format_html(
            '<p class="asyncjobs-error-origin">{}</p>{}',
            origin[0].upper() + origin[1:] + ".",
            preformatted(job.error),
        )

    @admin.display(description="traceback")
    def traceback_pretty(self, job: Job) -> SafeString:
        return preformatted(job.traceback or "-")

    @admin.display(description="timeline")
    def timeline(self, job: Job) -> SafeString:
        parts = [
            format_html(
                '<span class="asyncjobs-step"><b>{}</b> {}{}</span>',
                step.label,
                timezone.localtime(step.moment).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
                step.after,
            )
            for step in describe.timeline(job, attempts_of(job))
        ]
        return format_html("{}", SafeString(" &rarr; ".join(parts)))

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> Job | None:
        job = super().get_object(request, object_id, from_field)
        if job is not None:
            # The error, timeline and durations of the page all read the history.
            prefetch_related_objects([job], ATTEMPT_RELATION)
        return job

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Job | None = None,
    ) -> HttpResponse:
        """Add the buttons of the actions that apply to the job and that the user may take."""
        if obj is not None:
            context["job_actions"] = self.actions_for(request, obj)
            context["action_checkbox_name"] = ACTION_CHECKBOX_NAME
            context["job_page_field"] = JOB_PAGE_FIELD
        return super().render_change_form(request, context, add, change, form_url, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Rows change only through the state transitions; the detail page is read-only.
        return False

    def get_deleted_objects(
        self, objs: Sequence[Job] | QuerySet[Job], request: HttpRequest
    ) -> tuple[list[Any], dict[str, int], set[str], list[Any]]:
        """Refuse to delete a running job, or a job that blocked jobs still wait for, saying so.

        A running job is its worker's until the attempt ends. Deleting a dependency cancels its
        dependents (the scheduler's next pass), which an operator cleaning up old rows rarely
        means to do. Both are listed as protected (:class:`DeleteRefusal`), which makes the
        delete page and the "delete selected" action refuse, with the reason, also on a POST
        that skipped the confirmation. (Refusing through ``has_delete_permission`` instead would
        tell the operator they lack a permission they have.)
        """
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        jobs = list(objs)
        running = [
            DeleteRefusal(
                "running",
                f"{job.name} {job.pk} is running (attempt {job.total_attempts}, worker "
                f"{job.worker or '-'})",
            )
            for job in jobs
            if job.status == JobStatus.RUNNING
        ]
        refusals: list[Any] = running[:WAITING_SHOWN]
        if len(running) > WAITING_SHOWN:
            refusals.append(DeleteRefusal("running", "... and more"))
        ids = [job.pk for job in jobs]
        waiting = Job.objects.waiting_for(ids, limit=WAITING_SHOWN + 1)
        if waiting:
            selected = {str(pk) for pk in ids}
            refusals += [
                DeleteRefusal(
                    "waited for",
                    f"{job.name} {job.pk} (scheduled) waits for "
                    + ", ".join(str(d) for d in job.depends_on if str(d) in selected),
                )
                for job in waiting[:WAITING_SHOWN]
            ]
            if len(waiting) > WAITING_SHOWN:
                refusals.append(DeleteRefusal("waited for", "... and more"))
        return deleted, counts, perms_needed, [*protected, *refusals]


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
