"""The admin page of processes: the registered workers and schedulers, alive or dead, and the
jobs each one runs now. Read-only; a dead process's row may be deleted by hand. It shows the
banner of the queue overview (:func:`.overview.attention_context`) too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from ..models import Process
from .display import relative
from .overview import attention_context

if TYPE_CHECKING:
    _ProcessAdmin = admin.ModelAdmin[Process]
else:  # generic only in django-stubs
    _ProcessAdmin = admin.ModelAdmin

#: Jobs named in the "running now" column of one process; the rest are counted.
RUNNING_SHOWN = 5


@admin.register(Process)
class ProcessAdmin(_ProcessAdmin):
    """Registered workers and schedulers; the processes write their rows, nobody else."""

    list_display = (
        "state",
        "kind",
        "name",
        "host",
        "pid",
        "queues_display",
        "concurrency",
        "version",
        "started",
        "heartbeat",
        "running_now",
    )
    list_display_links = None
    list_filter = ("kind",)
    search_fields = ("name", "host")
    ordering = ("kind", "host", "pid")

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).with_state()  # type: ignore[attr-defined]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return super().changelist_view(
            request, {**attention_context(request), **(extra_context or {})}
        )

    @admin.display(description="state", ordering="heartbeat_at")
    def state(self, process: Process) -> SafeString:
        alive = process.alive
        return format_html(
            '<span class="asyncjobs-process-{}" style="background:{};color:#fff;padding:2px 8px;'
            'border-radius:10px;font-size:11px">{}</span>',
            "alive" if alive else "dead",
            "#198754" if alive else "#dc3545",
            "alive" if alive else "dead",
        )

    @admin.display(description="queues")
    def queues_display(self, process: Process) -> str:
        return ", ".join(process.queues or []) or "-"

    @admin.display(description="started", ordering="started_at")
    def started(self, process: Process) -> str:
        return relative(process.started_at)

    @admin.display(description="last heartbeat", ordering="heartbeat_at")
    def heartbeat(self, process: Process) -> str:
        return relative(process.heartbeat_at)

    @admin.display(description="running now")
    def running_now(self, process: Process) -> SafeString | str:
        jobs = process.running_jobs or []
        if not jobs:
            return "-"
        shown = format_html_join(
            ", ",
            '<a href="{}">{}</a>',
            (
                (reverse("admin:django_asyncjobs_job_change", args=[job["id"]]), job["name"])
                for job in jobs[:RUNNING_SHOWN]
            ),
        )
        more = f" and {len(jobs) - RUNNING_SHOWN} more" if len(jobs) > RUNNING_SHOWN else ""
        return format_html("{}: {}{}", len(jobs), shown, more)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
