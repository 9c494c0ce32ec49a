"""A first admin for jobs: list, filter, search, read; retry and cancel actions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from .models import Job, PeriodicSchedule
from .status import JobStatus

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[Job]
    _PeriodicAdmin = admin.ModelAdmin[PeriodicSchedule]
else:  # ModelAdmin is generic only in django-stubs
    _ModelAdmin = _PeriodicAdmin = admin.ModelAdmin


@admin.register(Job)
class JobAdmin(_ModelAdmin):
    """Read-only job rows; state changes go through the actions, never through the form."""

    list_display = (
        "name",
        "status",
        "queue",
        "priority",
        "attempts_display",
        "created_at",
        "run_at",
        "started_at",
        "finished_at",
    )
    list_filter = ("status", "queue", "name")
    search_fields = ("=id", "name")
    ordering = ("-created_at",)
    date_hierarchy = "created_at"
    show_full_result_count = False
    list_per_page = 50
    actions = ("retry_jobs", "cancel_jobs")
    readonly_fields = [f.name for f in Job._meta.concrete_fields]

    @admin.display(description="attempts")
    def attempts_display(self, job: Job) -> str:
        return f"{job.attempts} / {job.max_retries + 1}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Rows change only through the state transitions; the detail page is read-only.
        return False

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("django_asyncjobs.retry_job")

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("django_asyncjobs.cancel_job")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.status == JobStatus.RUNNING:
            return False
        return super().has_delete_permission(request, obj)

    @admin.action(description="Retry selected failed or cancelled jobs", permissions=["retry"])
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        changed = [Job.objects.retry(pk) for pk in queryset.values_list("pk", flat=True)]
        self._report(request, "retried", sum(job is not None for job in changed), len(changed))

    @admin.action(description="Cancel selected scheduled or queued jobs", permissions=["cancel"])
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        changed = [Job.objects.cancel(pk) for pk in queryset.values_list("pk", flat=True)]
        self._report(request, "cancelled", sum(job is not None for job in changed), len(changed))

    def _report(self, request: HttpRequest, verb: str, done: int, selected: int) -> None:
        level = messages.SUCCESS if done == selected else messages.WARNING
        skipped = f"; {selected - done} skipped (wrong status)" if done != selected else ""
        self.message_user(request, f"{done} job(s) {verb}{skipped}.", level)


@admin.register(PeriodicSchedule)
class PeriodicScheduleAdmin(_PeriodicAdmin):
    """Periodic schedules with their last and next run; they are declared in code or settings."""

    list_display = ("key", "name", "cron", "timezone", "last_run_at", "next_run_at")
    search_fields = ("key", "name")
    ordering = ("next_run_at",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
