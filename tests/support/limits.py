"""What a limited run looked like, read from the attempt history: the most attempts of one key
running at once, and the starts of each sliding window."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable

from django_asyncjobs.models import Job, JobAttempt


def max_running_per_key(jobs: Iterable[Job]) -> dict[str, int]:
    """Return, per concurrency key of *jobs*, the most of their attempts that overlapped.

    An attempt holds its slot from its start to its end as the history records it (for a lost
    worker's attempt, until the scheduler rescued it). An end and a start at the same moment do
    not overlap.
    """
    keys = {job.id: job.concurrency_key for job in jobs}
    events: dict[str, list[tuple[dt.datetime, int]]] = defaultdict(list)
    for attempt in JobAttempt.objects.filter(job_id__in=list(keys)):
        key = keys[attempt.job_id] or ""
        assert attempt.finished_at is not None, f"attempt still open: {attempt}"
        events[key] += [(attempt.started_at, 1), (attempt.finished_at, -1)]
    peaks: dict[str, int] = {}
    for key, moments in events.items():
        running = peak = 0
        for _, change in sorted(moments):  # -1 sorts before +1 at the same moment
            running += change
            peak = max(peak, running)
        peaks[key] = peak
    return peaks


def starts_per_window(jobs: Iterable[Job], *, period_seconds: float) -> list[int]:
    """Return, for the window of *period_seconds* that opens at each attempt's start, how many
    attempts of *jobs* started in it; the largest is the most starts any window saw."""
    starts = sorted(
        JobAttempt.objects.filter(job_id__in=[j.id for j in jobs]).values_list(
            "started_at", flat=True
        )
    )
    period = dt.timedelta(seconds=period_seconds)
    return [sum(1 for s in starts if first <= s < first + period) for first in starts]


def starts_by_second(jobs: Iterable[Job]) -> list[int]:
    """Return how many attempts of *jobs* started in each whole second since the first start."""
    starts = sorted(
        JobAttempt.objects.filter(job_id__in=[j.id for j in jobs]).values_list(
            "started_at", flat=True
        )
    )
    counts = [0] * (int((starts[-1] - starts[0]).total_seconds()) + 1)
    for start in starts:
        counts[int((start - starts[0]).total_seconds())] += 1
    return counts


def attempt_timeline(jobs: Iterable[Job]) -> str:
    """Return the attempts of *jobs* as lines "key  +start..+end s  outcome", by start, with times
    in seconds since the first start: what a closing note can show of a limited run."""
    keys = {job.id: job.concurrency_key or job.name for job in jobs}
    attempts = sorted(JobAttempt.objects.filter(job_id__in=list(keys)), key=lambda a: a.started_at)
    if not attempts:
        return ""
    first = attempts[0].started_at
    lines = []
    for attempt in attempts:
        end = attempt.finished_at
        until = f"{(end - first).total_seconds():6.2f}" if end else "   ..."
        lines.append(
            f"{keys[attempt.job_id]:<28} {(attempt.started_at - first).total_seconds():6.2f} .. "
            f"{until} s  {attempt.outcome or 'running'}"
        )
    return "\n".join(lines)
