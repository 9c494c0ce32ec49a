"""How the admin shows jobs: status colours, progress, relative times, durations, blocks of text."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

# Durations are said the same way by the admin and by ``asyncjobs show``.
from ..describe import duration as duration
from ..status import JobStatus

STATUS_COLOURS = {
    JobStatus.SCHEDULED: "#6c757d",
    JobStatus.QUEUED: "#0d6efd",
    JobStatus.RUNNING: "#fd7e14",
    JobStatus.SUCCEEDED: "#198754",
    JobStatus.FAILED: "#dc3545",
    JobStatus.CANCELLED: "#495057",
}


def describe_progress(progress: dict[str, Any] | None) -> str:
    """Return a job's reported progress as one line, e.g. "40 / 100 (40%) - row 17".

    >>> describe_progress({"done": 40, "total": 100, "message": "row 17"})
    '40 / 100 (40%) - row 17'
    """
    if not progress:
        return "-"
    done, total = progress.get("done"), progress.get("total")
    text = f"{done:g}" if isinstance(done, int | float) else str(done)
    if isinstance(total, int | float) and total > 0 and isinstance(done, int | float):
        text += f" / {total:g} ({100 * done / total:.0f}%)"
    if progress.get("message"):
        text += f" - {progress['message']}"
    return text


def describe_cancel_request(job: Any) -> str:
    """Return who asked to cancel *job* and when, and what came of it; "-" if nobody did.

    >>> from types import SimpleNamespace
    >>> describe_cancel_request(SimpleNamespace(cancel_requested_at=None))
    '-'
    """
    moment = job.cancel_requested_at
    if moment is None:
        return "-"
    when = timestamp(moment)
    text = f"by {job.cancel_requested_by or 'an unnamed operator'} at {when}"
    if job.status == JobStatus.RUNNING:
        return f"{text}; its worker stops the job (at the latest at its timeout)"
    if job.status == JobStatus.SUCCEEDED:
        return f"{text}; the job had finished before its worker could stop it"
    return text


def relative(moment: dt.datetime | None, *, now: dt.datetime | None = None) -> str:
    """Return *moment* as "in 3 min" or "12 s ago".

    >>> relative(timezone.now() - dt.timedelta(seconds=12))
    '12 s ago'
    """
    if moment is None:
        return "-"
    seconds = ((now or timezone.now()) - moment).total_seconds()
    amount = abs(seconds)
    if amount < 60:
        text = f"{amount:.0f} s"
    elif amount < 3600:
        text = f"{amount / 60:.0f} min"
    elif amount < 86400:
        text = f"{amount / 3600:.0f} h"
    else:
        text = f"{amount / 86400:.0f} d"
    return f"{text} ago" if seconds >= 0 else f"in {text}"


def timestamp(moment: dt.datetime | None) -> str:
    """Return *moment* in the current time zone to the second, e.g. "2026-03-01 14:05:09".

    >>> timestamp(None)
    '-'
    """
    if moment is None:
        return "-"
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S")


def preformatted(text: str) -> SafeString:
    """Return *text* escaped, in a ``<pre>`` block that wraps long lines."""
    return format_html(
        '<pre style="white-space:pre-wrap;margin:0;font-family:monospace">{}</pre>', text
    )
