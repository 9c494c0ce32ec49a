"""``GET metrics``: what the database knows, in Prometheus's text format, for a scrape.

The workers' and scheduler's own ``/metrics`` (``--metrics-port``, :mod:`django_asyncjobs.metrics`)
count what each process did; this view answers what no single process knows: how many jobs
wait in each queue, how long the oldest has waited, which queues are paused and how many
workers and schedulers are alive. It needs no prometheus_client (the format is written here),
and the API's authentication: a session or bearer token of a user with ``view_job``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from django.db import connections
from django.db.models import Count
from django.http import HttpRequest, HttpResponse

from ..conf import get_settings
from ..models import Job, Process, ProcessKind, QueueState
from ..status import JobStatus
from .views import api_view

#: The content type of Prometheus's text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Statuses counted per queue: the jobs that are not done. Finished rows are left out, a
#: table of millions of them would be counted at every scrape; their rates come from the
#: workers' ``asyncjobs_jobs_finished_total``.
COUNTED_STATUSES = (JobStatus.SCHEDULED, JobStatus.QUEUED, JobStatus.RUNNING)
#: Every metric this view exports (the Grafana dashboard's test checks its queries with these).
METRIC_NAMES = (
    "asyncjobs_queue_jobs",
    "asyncjobs_queue_oldest_waiting_seconds",
    "asyncjobs_queue_paused",
    "asyncjobs_processes_live",
)

Sample = tuple[dict[str, str], float]


@api_view(methods=("GET",), permission="django_asyncjobs.view_job")
def metrics(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``: queue depth, oldest waiting job, pauses and live processes."""
    return HttpResponse(render(database_figures()), content_type=CONTENT_TYPE)


def database_figures() -> dict[str, tuple[str, list[Sample]]]:
    """Read the figures: metric name -> (help text, samples). Four short queries.

    Queues configured in ``QUEUES`` and paused ones show with zeros, so that a graph or an
    alert sees ``0`` rather than no data.
    """
    alias = Job.objects.db
    jobs = connections[alias].ops.quote_name(Job._meta.db_table)
    statuses = [s.value for s in COUNTED_STATUSES]
    paused = {s.name: s.paused for s in QueueState.objects.db_manager(alias).all()}
    queues = set(get_settings().queues) | {q for q, on in paused.items() if on}
    counts: dict[tuple[str, str], float] = {(q, s): 0 for q in queues for s in statuses}
    oldest: dict[str, float] = {q: 0 for q in queues}
    with connections[alias].cursor() as cursor:
        cursor.execute(
            f"SELECT queue, status, count(*) FROM {jobs} WHERE status = ANY(%s) GROUP BY 1, 2",
            [statuses],
        )
        for queue, status, count in cursor.fetchall():
            counts[(queue, status)] = count
        # Waiting: due and not sent yet, or sent and not started. A job held back by its
        # dependencies waits for them, not for us.
        cursor.execute(
            f"SELECT queue, EXTRACT(EPOCH FROM now() - min(run_at)) FROM {jobs} "
            "WHERE (status = %s OR (status = %s AND NOT blocked)) AND run_at <= now() "
            "GROUP BY queue",
            [JobStatus.QUEUED.value, JobStatus.SCHEDULED.value],
        )
        for queue, seconds in cursor.fetchall():
            oldest[queue] = max(0.0, float(seconds))
    for queue, _ in counts:
        oldest.setdefault(queue, 0)
    live: dict[str, float] = defaultdict(float, {kind.value: 0 for kind in ProcessKind})
    for row in Process.objects.db_manager(alias).live().values("kind").annotate(n=Count("id")):
        live[row["kind"]] = row["n"]
    return {
        "asyncjobs_queue_jobs": (
            "Jobs not finished, by queue and status (scheduled, queued, running).",
            [({"queue": q, "status": s}, n) for (q, s), n in sorted(counts.items())],
        ),
        "asyncjobs_queue_oldest_waiting_seconds": (
            "Age of the oldest due job not started yet, by queue (0: none waits).",
            [({"queue": q}, s) for q, s in sorted(oldest.items())],
        ),
        "asyncjobs_queue_paused": (
            "1 while the queue is paused.",
            [({"queue": q}, float(on)) for q, on in sorted(paused.items())],
        ),
        "asyncjobs_processes_live": (
            "Workers and schedulers whose heartbeat is fresh, by kind.",
            [({"kind": k}, n) for k, n in sorted(live.items())],
        ),
    }


def render(figures: dict[str, tuple[str, list[Sample]]]) -> str:
    """Write *figures* as gauges in Prometheus's text format.

    >>> print(render({"up": ("Up.", [({"queue": 'a"b'}, 1.0)])}), end="")
    # HELP up Up.
    # TYPE up gauge
    up{queue="a\\"b"} 1.0
    """
    lines: list[str] = []
    for name, (help_text, samples) in figures.items():
        lines.append(f"# HELP {name} {_escape(help_text, quote=False)}")
        lines.append(f"# TYPE {name} gauge")
        lines.extend(f"{name}{_labels(labels.items())} {float(v)!r}" for labels, v in samples)
    return "\n".join(lines) + "\n"


def _labels(labels: Iterable[tuple[str, str]]) -> str:
    pairs = ",".join(f'{key}="{_escape(value)}"' for key, value in labels)
    return f"{{{pairs}}}" if pairs else ""


def _escape(text: str, *, quote: bool = True) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if quote else text
