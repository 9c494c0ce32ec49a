"""The example's jobs: autodiscovered because ``demo`` is an installed app.

One per capability of the seed documents: a delayed greeting, CPU work, a slow query, an
aggregation, a job that always fails, a long job reporting progress, an ``async def`` job and a
periodic job. ``api=True`` lets the HTTP jobs API create them (``POST /api/jobs``).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from django.db import connection
from django.db.models import Count, Sum

from django_asyncjobs import Backoff, areport_progress, current_job, job, report_progress
from django_asyncjobs.models import Job

from .models import Order


@job(api=True)
def say_hello(name: str) -> str:
    """Print a greeting in the worker (the seed documents' "say hello after a delay")."""
    message = f"Hello, {name}!"
    print(message, flush=True)  # the point of the example is to see it in the worker's output
    return message


@job
class SayHello:
    """The same as a class-based job, like the seeds' ``BaseJob`` subclasses."""

    def __init__(self, name: str) -> None:
        self.name = name

    def handle(self) -> str:
        return say_hello(self.name)


@job(api=True, timeout=30)
def fibonacci(n: int) -> str:
    """Return the *n*-th Fibonacci number, as text: it outgrows JSON's safe integers fast."""
    if not 0 <= n <= 100_000:
        raise ValueError(f"n must be between 0 and 100000, not {n}")
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return str(a)


@job(api=True, timeout=60)
def slow_query(seconds: float = 2.0) -> float:
    """Keep the database busy for *seconds* (``pg_sleep``) and return how long it took."""
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(%s)", [seconds])
    return round(time.monotonic() - started, 3)


@job(api=True, queue="low")
def aggregate_orders() -> dict[str, Any]:
    """Sum the orders per customer: the kind of report a view should not compute inline."""
    per_customer = (
        Order.objects.values("customer")
        .annotate(orders=Count("id"), revenue=Sum("amount"))
        .order_by("-revenue")
    )
    return {
        "orders": Order.objects.count(),
        "customers": [
            {"customer": row["customer"], "orders": row["orders"], "revenue": str(row["revenue"])}
            for row in per_customer
        ],
    }


@job(api=True, max_retries=2, backoff=Backoff(base_seconds=3, factor=2, jitter=0))
def always_fails(reason: str = "the payment provider is down") -> None:
    """Fail every time: retried twice (3 s, then 6 s later), then failed with its traceback."""
    attempt = current_job()
    raise RuntimeError(f"{reason} (attempt {attempt.attempt if attempt else '-'})")


@job(api=True, timeout=600)
def long_job(steps: int = 20, step_seconds: float = 0.5) -> str:
    """Work through *steps* steps, reporting progress (watch it move on the demo page)."""
    for step in range(1, steps + 1):
        time.sleep(step_seconds)
        report_progress(step, steps, f"step {step} of {steps}")
    return f"{steps} steps done"


@job(api=True, timeout=30)
async def gather_readings(sensors: int = 5) -> dict[str, float]:
    """Read *sensors* slow "sensors" concurrently: an ``async def`` job on the worker's loop."""

    async def read(sensor: int) -> tuple[str, float]:
        await asyncio.sleep(random.uniform(0.2, 1.0))
        return f"sensor-{sensor}", round(random.uniform(15, 25), 1)

    readings = dict(await asyncio.gather(*(read(i) for i in range(1, sensors + 1))))
    await areport_progress(sensors, sensors, "all sensors read")
    return readings


@job(cron="* * * * *")
def count_jobs() -> dict[str, int]:
    """Every minute, count the jobs per status: a periodic job (see the admin's schedules)."""
    rows = Job.objects.values_list("status").annotate(n=Count("id")).order_by("status")
    return dict(rows)
