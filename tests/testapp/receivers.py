"""Record every ``job_status_changed`` signal, so fault tests can check one per transition."""

from __future__ import annotations

import os
import uuid
from typing import Any

from django.dispatch import receiver

from django_asyncjobs.signals import job_status_changed

from .durable import retry_through_restart
from .models import Transition


@receiver(job_status_changed, dispatch_uid="tests.testapp.record_transition")
def record_transition(*, job: Any, old_status: str | None, new_status: str, **kwargs: Any) -> None:
    token = uuid.uuid4()

    def write() -> None:
        if not Transition.objects.filter(token=token).exists():
            Transition.objects.create(
                job_id=job.id,
                old_status=old_status or "",
                new_status=new_status,
                error=job.error,
                pid=os.getpid(),
                token=token,
            )

    retry_through_restart(write)
