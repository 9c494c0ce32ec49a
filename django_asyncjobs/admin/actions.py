"""The job admin's actions: retry, cancel, mark succeeded, run again.

Each asks for confirmation, needs its own permission, changes rows only through the state
transitions of the job manager (which send the matching signals), and is written to Django's
admin log. A selection of any size is handled in batches.

The job page offers the same actions as buttons (:meth:`JobActionsAdmin.actions_for`): each
posts the job to the list's action, so it goes through the same permission check, confirmation
page and transition, and then returns to the job page.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.utils import quote
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from ..models import Job
from ..status import JobStatus

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[Job]
else:  # generic only in django-stubs
    _ModelAdmin = admin.ModelAdmin

#: An action reads the selected jobs this many at a time (by id), never all at once.
ACTION_BATCH_SIZE = 500
#: The confirmation page lists this many of the selected jobs and counts the rest.
CONFIRMATION_SAMPLE_SIZE = 100
#: The POST field a job page's button adds: the job whose page to return to after the action.
JOB_PAGE_FIELD = "_job_page"


@dataclass(frozen=True, slots=True, kw_only=True)
class JobPageAction:
    """A button of the job page: the list action it posts to, and the statuses it applies to.

    ``statuses`` are those the action's transition starts from (``queries/operator.py``);
    ``None`` is any status.
    """

    action: str
    label: str
    statuses: frozenset[str] | None


#: The job page's buttons, in the order shown.
JOB_PAGE_ACTIONS = (
    JobPageAction(
        action="retry_jobs",
        label="Retry",
        statuses=frozenset({JobStatus.FAILED, JobStatus.CANCELLED}),
    ),
    JobPageAction(
        action="cancel_jobs",
        label="Cancel",
        statuses=frozenset({JobStatus.SCHEDULED, JobStatus.QUEUED, JobStatus.RUNNING}),
    ),
    JobPageAction(
        action="mark_succeeded",
        label="Mark as succeeded",
        statuses=frozenset(
            {JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.SCHEDULED, JobStatus.QUEUED}
        ),
    ),
    JobPageAction(action="run_again", label="Run again", statuses=None),
)


class JobActionsAdmin(_ModelAdmin):
    """The confirmed, permission-guarded actions of :class:`~django_asyncjobs.admin.JobAdmin`."""

    actions = ("retry_jobs", "cancel_jobs", "mark_succeeded", "run_again")

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("django_asyncjobs.retry_job")

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("django_asyncjobs.cancel_job")

    def has_mark_succeeded_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("django_asyncjobs.mark_succeeded_job")

    def has_run_again_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("django_asyncjobs.run_again_job")

    def actions_for(self, request: HttpRequest, job: Job) -> list[JobPageAction]:
        """Return the buttons of *job*'s page: the actions that apply to its status and that
        the user may take (the permission check is the list's own, ``get_actions``).

        Example::

            [a.label for a in job_admin.actions_for(request, failed_job)]  # ['Retry', ...]
        """
        allowed = self.get_actions(request)
        return [
            button
            for button in JOB_PAGE_ACTIONS
            if button.action in allowed
            and (button.statuses is None or job.status in button.statuses)
            # A running job whose cancel was requested is being stopped: asking again does not.
            and not (button.action == "cancel_jobs" and job.cancel_requested_at is not None)
        ]

    @admin.action(description="Retry selected failed or cancelled jobs", permissions=["retry"])
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> HttpResponse | None:
        return self._confirmed(
            request, queryset, "retry", "retried", lambda job: Job.objects.retry(job.pk)
        )

    @admin.action(
        description="Cancel selected scheduled, queued or running jobs", permissions=["cancel"]
    )
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> HttpResponse | None:
        """Cancel jobs that have not started; ask the workers of running ones to stop them.

        The row records the admin user as ``cancel_requested_by``. A running job stays
        ``running`` until its worker stops it (an ``async def`` job at once, a ``def`` job at
        its next check or progress report, or its timeout), then ends ``cancelled``.
        """
        by = request.user.get_username()
        return self._confirmed(
            request,
            queryset,
            "cancel",
            "cancelled",
            lambda job: Job.objects.cancel(job.pk, by=by),
            note=(
                "Running jobs are not stopped at once: their worker is asked to stop them, and "
                "they end cancelled once it has."
            ),
            kind=_cancel_kind,
            skipped_reason=_cancel_refusal,
        )

    @admin.action(description="Mark selected jobs as succeeded", permissions=["mark_succeeded"])
    def mark_succeeded(self, request: HttpRequest, queryset: QuerySet[Job]) -> HttpResponse | None:
        note = f"marked as succeeded by {request.user} in the admin"
        return self._confirmed(
            request,
            queryset,
            "mark as succeeded",
            "marked as succeeded",
            lambda job: Job.objects.mark_succeeded(job.pk, note=note),
        )

    @admin.action(description="Run selected jobs again as new jobs", permissions=["run_again"])
    def run_again(self, request: HttpRequest, queryset: QuerySet[Job]) -> HttpResponse | None:
        return self._confirmed(
            request, queryset, "run again", "enqueued again", Job.objects.run_again
        )

    def _confirmed(
        self,
        request: HttpRequest,
        queryset: QuerySet[Job],
        verb: str,
        done_verb: str,
        transition: Callable[[Job], Job | None],
        *,
        note: str = "",
        kind: Callable[[Job], str | None] | None = None,
        skipped_reason: Callable[[Job], str] | None = None,
    ) -> HttpResponse | None:
        """Show a confirmation page; on "yes", apply *transition* to every selected job.

        Every job of the selection is handled, however many there are: they are read in
        batches of ACTION_BATCH_SIZE and each transition is its own short statement, so no lock
        is held across the batch (unless the project wraps requests in a transaction). The
        message counts the jobs changed and those skipped because of their status.

        *note* is shown on the confirmation page. *kind* names a change that is not
        *done_verb* (a cancel requested for a running job, ``None`` for *done_verb*), and is
        counted apart; *skipped_reason* says why a job was skipped (default: its status).
        """
        across = _select_across(request)
        job_page = _job_page(request, across=across)
        if request.POST.get("confirmed") != "yes":
            total = queryset.count()
            sample = list(queryset[:CONFIRMATION_SAMPLE_SIZE])
            if across:
                # The confirmation posts "all that match the list's filters" again, not ids:
                # a selection of 100,000 jobs would not fit in one form.
                ids = [str(job.pk) for job in sample]
            else:
                ids = [str(pk) for pk in queryset.values_list("pk", flat=True)]
            context = {
                **self.admin_site.each_context(request),
                "title": f"Are you sure you want to {verb} {total:,} job(s)?",
                "verb": verb,
                "note": note,
                "jobs": sample,
                "more": f"{total - len(sample):,}" if total > len(sample) else "",
                "ids": ids,
                "select_across": across,
                "action": request.POST.get("action", ""),
                "opts": self.model._meta,
                "action_checkbox_name": ACTION_CHECKBOX_NAME,
                "job_page": job_page,
                "job_page_field": JOB_PAGE_FIELD,
            }
            return TemplateResponse(
                request, "admin/django_asyncjobs/job/action_confirmation.html", context
            )
        selected = changed = 0
        others: Counter[str] = Counter()
        skipped: Counter[str] = Counter()
        # A new job "run again" makes may match the selection's filters: it is not selected.
        created: set[uuid.UUID] = set()
        copies: list[Job] = []
        for batch in _in_batches(queryset, batch_size=ACTION_BATCH_SIZE):
            for job in batch:
                if job.pk in created:
                    continue
                selected += 1
                result = transition(job)
                if result is None:
                    skipped[skipped_reason(job) if skipped_reason else "wrong status"] += 1
                    continue
                other = kind(result) if kind else None
                if other is None:
                    changed += 1
                    self.log_change(request, job, f"{done_verb} ({job.status} -> {result.status})")
                else:
                    others[other] += 1
                    self.log_change(request, job, f"{other} ({job.status})")
                if result.pk != job.pk:
                    created.add(result.pk)
                    copies.append(result)
                    self.log_addition(request, result, f"run again as a copy of {job.pk}")
        level = messages.WARNING if skipped else messages.SUCCESS
        text = f"{changed:,} job(s) {done_verb}"
        text += "".join(f"; {count:,} {other}" for other, count in others.items())
        text += "".join(f"; {count:,} skipped ({why})" for why, count in skipped.items())
        self.message_user(request, f"{text}.", level)
        if job_page is None:
            return None
        if len(copies) == 1:
            self.message_user(
                request,
                format_html(
                    'The new job is <a href="{}">{}</a>.',
                    self._job_url(copies[0].pk),
                    copies[0].pk,
                ),
                messages.INFO,
            )
        return HttpResponseRedirect(self._job_url(job_page))

    def _job_url(self, job_id: uuid.UUID | str) -> str:
        opts = self.model._meta
        return reverse(
            f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_change",
            args=(quote(job_id),),
        )


def _job_page(request: HttpRequest, *, across: bool) -> str | None:
    """Return the id of the job whose page the action was started from, if it was.

    Only a button of that job's page posts it, with that job alone selected.
    """
    job_id = request.POST.get(JOB_PAGE_FIELD)
    if not job_id or across or request.POST.getlist(ACTION_CHECKBOX_NAME) != [job_id]:
        return None
    return job_id


def _cancel_kind(job: Job) -> str | None:
    """Name a cancel that only requested the stop of a running job."""
    if job.status == JobStatus.RUNNING:
        return "running: cancel requested, its worker stops it"
    return None


def _cancel_refusal(job: Job) -> str:
    if job.status == JobStatus.RUNNING and job.cancel_requested_at is not None:
        return f"cancel already requested by {job.cancel_requested_by or 'someone'}"
    return "wrong status"


def _select_across(request: HttpRequest) -> bool:
    """Return whether the action applies to every job the list's filters match ("select all").

    Parsed as Django's own action form parses its hidden ``select_across`` field.
    """
    return bool(forms.BooleanField(required=False).clean(request.POST.get("select_across")))


def _in_batches(queryset: QuerySet[Job], *, batch_size: int) -> Iterator[list[Job]]:
    """Yield the jobs of *queryset* in lists of *batch_size*, in id order.

    Keyset pagination (``id > last``) keeps every read an index range scan however deep it goes,
    and reads rows as they are now: a job another batch changed is seen in its new status.
    """
    ordered = queryset.order_by("pk")
    last = None
    while True:
        page = ordered if last is None else ordered.filter(pk__gt=last)
        batch = list(page[:batch_size])
        if not batch:
            return
        yield batch
        last = batch[-1].pk
