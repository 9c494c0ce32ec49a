"""The demo page: enqueue each example job and watch it run."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from django_asyncjobs.admin import describe_progress
from django_asyncjobs.models import Job

from . import jobs

#: What each button of the page enqueues: label, job, arguments, and a line on what it shows.
DEMOS: dict[str, tuple[str, Any, dict[str, Any], str]] = {
    "hello": ("Say hello", jobs.say_hello, {"name": "world"}, "runs after a delay"),
    "fibonacci": ("Fibonacci(1000)", jobs.fibonacci, {"n": 1000}, "CPU work, a big result"),
    "slow-query": ("Slow query", jobs.slow_query, {"seconds": 3}, "pg_sleep(3) in PostgreSQL"),
    "aggregate": ("Aggregate orders", jobs.aggregate_orders, {}, "a report over 20,000 rows"),
    "fail": ("Always fails", jobs.always_fails, {}, "2 retries with backoff, then failed"),
    "long": ("Long job", jobs.long_job, {}, "reports progress for 10 s"),
    "async": ("Async job", jobs.gather_readings, {}, "an async def job"),
}


def hello_delay() -> float:
    """Seconds "say hello" waits: ``DEMO_HELLO_DELAY_SECONDS`` (60, as in the seeds)."""
    return float(getattr(settings, "DEMO_HELLO_DELAY_SECONDS", 60.0))


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    """The page: one button per demo job, and the latest jobs, refreshed every second."""
    return render(
        request,
        "demo/index.html",
        {
            "demos": [(key, label, note) for key, (label, _, _, note) in DEMOS.items()],
            "hello_delay": hello_delay(),
        },
    )


@require_POST
def enqueue(request: HttpRequest, demo: str) -> HttpResponse:
    """Enqueue the demo job *demo* and go back to the page."""
    if demo not in DEMOS:
        return JsonResponse({"error": f"no demo named {demo!r}"}, status=404)
    _, definition, kwargs, _ = DEMOS[demo]
    delay = hello_delay() if demo == "hello" else 0
    definition.using(run_after=delay).delay(**kwargs)
    return redirect("index")


@require_GET
def hello(request: HttpRequest) -> JsonResponse:
    """Enqueue "say hello" to run in 60 seconds and answer at once with the job's id.

    The seed documents' walkthrough: ``curl 'http://127.0.0.1:8000/hello/?name=Ada'``.
    """
    name = request.GET.get("name", "world")
    job = jobs.say_hello.using(run_after=hello_delay()).delay(name)
    return JsonResponse({"id": str(job.id), "status": job.status, "run_at": job.run_at}, status=202)


@require_GET
def recent_jobs(request: HttpRequest) -> JsonResponse:
    """The 25 newest jobs as JSON, for the page's live table."""
    rows = Job.objects.order_by("-created_at")[:25]
    return JsonResponse({"jobs": [_job_row(job) for job in rows]})


def _job_row(job: Job) -> dict[str, Any]:
    return {
        "id": str(job.id),
        "name": job.name.rsplit(".", 1)[-1],
        "status": job.status,
        "attempts": f"{job.attempts} / {job.max_retries + 1}",
        "run_at": job.run_at.isoformat(),
        "progress": describe_progress(job.progress) if job.progress else "",
        "result": job.result,
        "error": job.error,
        "admin_url": reverse("admin:django_asyncjobs_job_change", args=[job.pk]),
    }
