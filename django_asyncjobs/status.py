"""The status values of a job and which of them are final."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class JobStatus(models.TextChoices):
    """Where a job is in its life.

    ``scheduled`` -> ``queued`` -> ``running`` -> ``succeeded`` | ``failed``, or back to
    ``scheduled`` for a retry; ``cancelled`` from ``scheduled`` or ``queued`` at once, and from
    ``running`` once its worker acted on an operator's cancel request.

    >>> JobStatus.SUCCEEDED == "succeeded"
    True
    """

    SCHEDULED = "scheduled", _("Scheduled")
    QUEUED = "queued", _("Queued")
    RUNNING = "running", _("Running")
    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")
    CANCELLED = "cancelled", _("Cancelled")


#: Statuses a job never leaves on its own.
FINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
