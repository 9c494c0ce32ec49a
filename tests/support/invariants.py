"""The one invariant check that ends every fault-injection test.

It reads three ledgers: the job rows, the ``Execution`` rows that job bodies write when they start
and finish (outside any transaction), and the ``Transition`` rows that a ``job_status_changed``
receiver writes in whichever process sent the signal.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from django_asyncjobs.conf import get_settings
from django_asyncjobs.models import Job
from tests.support.flows import FINAL, messages_in, sqs_client
from tests.support.processes import wait_until
from tests.testapp.models import Execution, Transition

#: How long check_invariants waits for the signal ledger to catch up with the rows.
SETTLE_SECONDS = 15.0


def ledger_key(job: Job) -> tuple[str, str]:
    """Return the (ledger job name, key) under which *job*'s body records its runs."""
    key = job.kwargs.get("key", job.args[0] if job.args else "")
    return job.name.removeprefix("tests."), str(key)


def phases(job: Job, phase: str) -> int:
    """Return how many runs of *job*'s body reached *phase* ("start" or "finish")."""
    name, key = ledger_key(job)
    return Execution.objects.filter(job=name, key=key, payload__phase=phase).count()


def _chain_problem(job: Job, transitions: list[Transition]) -> str | None:
    # Signals are sent after commit by different processes, so their rows may land slightly out
    # of order; they must still link up into one path from creation to the final status.
    pending = list(transitions)
    status = ""
    while pending:
        step = next((t for t in pending if t.old_status == status), None)
        if step is None:
            left = [(t.old_status, t.new_status) for t in pending]
            return f"no signal leaves {status or 'creation'!r}; unmatched signals {left}"
        pending.remove(step)
        status = step.new_status
    if status != job.status:
        return f"signals end at {status!r} but the job is {job.status!r}"
    return None


def check_invariants(
    jobs: Iterable[Job], *, queues: Iterable[str] = ("high", "default", "low")
) -> dict[uuid.UUID, Job]:
    """Assert the invariants of the design for *jobs*; return their fresh rows by id.

    - every job is final;
    - attempts on the row equal the starts in the ledger (less the free interruptions, which
      are handed back without using an attempt), and equal the claims (signals into running);
    - a body started more than once only after an attempt was cut off (rescued, timed out or
      handed back): starts <= 1 + attempts that left ``running`` other than by finishing;
    - the ``job_status_changed`` signals form one chain from creation to the final status;
    - the SQS queues are drained (waits for stale messages to come back and be dropped).
    """
    ids = [job.id for job in jobs]
    last: dict[str, Any] = {}

    def settled() -> bool:
        last["rows"], last["problems"] = _problems(ids)
        return not last["problems"]

    # Signals are sent after the commit that changed a row, by the process that made it: the
    # ledger can trail the rows by a moment (longer on a loaded machine). Look again until it
    # settles, and fail only on what stays wrong.
    wait_until(
        settled,
        timeout=SETTLE_SECONDS,
        message=lambda: "invariants violated:\n" + "\n".join(last["problems"]),
        interval=0.2,
    )
    _wait_for_drained_queues(queues)
    rows: dict[uuid.UUID, Job] = last["rows"]
    return rows


def _problems(ids: list[uuid.UUID]) -> tuple[dict[uuid.UUID, Job], list[str]]:
    """Return the fresh rows of *ids* and what violates an invariant (see check_invariants)."""
    rows = {job.id: job for job in Job.objects.filter(id__in=ids)}
    assert set(rows) == set(ids), "a job row disappeared"
    free = get_settings().free_interruptions
    problems: list[str] = []
    for job in rows.values():
        label = f"{job.name} {job.id} ({job.status}, attempts={job.attempts})"
        if job.status not in FINAL:
            problems.append(f"{label}: not final")
        transitions = list(Transition.objects.filter(job_id=job.id).order_by("id"))
        starts, finishes = phases(job, "start"), phases(job, "finish")
        claims = sum(1 for t in transitions if t.new_status == "running")
        cut_off = sum(
            1
            for t in transitions
            if t.old_status == "running" and t.new_status in ("scheduled", "failed")
        )
        expected_starts = job.attempts + min(job.interruptions, free)
        if starts != expected_starts:
            problems.append(f"{label}: {starts} starts recorded, expected {expected_starts}")
        if claims != starts:
            problems.append(f"{label}: {claims} claims (signals into running), {starts} starts")
        if starts > 1 + cut_off:
            problems.append(f"{label}: ran {starts} times but only {cut_off} attempts were cut off")
        if job.status == "succeeded" and finishes < 1:
            problems.append(f"{label}: succeeded without a finished run")
        chain = _chain_problem(job, transitions)
        if chain:
            problems.append(f"{label}: {chain}")
    return rows, problems


def _wait_for_drained_queues(queues: Iterable[str]) -> None:
    conf = get_settings()
    client = sqs_client()
    urls: list[Any] = []
    for queue in queues:
        try:
            urls.append(client.get_queue_url(QueueName=conf.sqs_queue_name(queue))["QueueUrl"])
        except client.exceptions.QueueDoesNotExist:
            continue
    # A stale message can sit invisible for a visibility timeout before a worker drops it.
    wait_until(
        lambda: all(messages_in(client, url) == 0 for url in urls),
        timeout=conf.visibility_timeout_seconds * 3 + 10,
        message=lambda: (
            "queues not drained: "
            + ", ".join(f"{url.rsplit('/', 1)[-1]}={messages_in(client, url)}" for url in urls)
        ),
        interval=0.5,
    )
