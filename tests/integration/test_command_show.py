"""``manage.py asyncjobs show``: one job whole, as text and as JSON, with its attempt history
numbered on across an operator's retry."""

from __future__ import annotations

import io
import json
import re
import uuid
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from django_asyncjobs.models import Job, JobAttempt
from django_asyncjobs.transports.memory import MemoryTransport
from tests.conftest import drain, relay
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: Any) -> str:
    out = io.StringIO()
    call_command("asyncjobs", *args, stdout=out)
    return out.getvalue()


def run_once(job: Job) -> Job:
    """Relay *job* and run it with an in-process worker; return its row."""
    transport = MemoryTransport()
    relay(transport)
    drain(transport)
    job.refresh_from_db()
    return job


def test_attempts_are_numbered_on_after_an_operator_retry_while_the_limit_starts_again() -> None:
    job = run_once(jobs.fails_now.delay("twice"))
    assert (job.status, job.attempts, job.total_attempts) == ("failed", 1, 1)

    run("retry", str(job.id))
    job = run_once(job)

    # fails_now may start once (max_retries=0): the retry gave it that one start again, no more.
    assert (job.status, job.attempts, job.total_attempts) == ("failed", 1, 2)
    history = list(JobAttempt.objects.filter(job_id=job.id).order_by("started_at"))
    assert [a.number for a in history] == [1, 2]
    assert [a.outcome for a in history] == ["failed", "failed"]
    listed = run("list", "--name", jobs.fails_now.name)
    assert "2 (1 / 1 counted)" in listed  # ran twice; 1 of 1 allowed since the retry
    (line,) = run("list", "--name", jobs.fails_now.name, "--json").splitlines()
    assert json.loads(line)["total_attempts"] == 2


def test_show_prints_the_job_whole_in_sections() -> None:
    job = run_once(jobs.fails_now.delay("shown"))
    run("retry", str(job.id)[:8])
    job = run_once(job)

    out = run("show", str(job.id)[:8])

    titles = [
        "Arguments",
        "Result",
        "Error, from attempt 2 (failed)",
        "Traceback",
        "Timeline",
        "Attempts",
    ]
    lines = out.splitlines()
    assert lines[0] == f"Job {job.id}"
    assert [line for line in lines if line in titles] == titles  # each once, in this order
    fields = dict(re.findall(r"^  (name|status|attempts|worker) +(.+)$", out, re.M))
    assert fields["name"] == jobs.fails_now.name
    assert fields["status"] == "failed"
    assert fields["attempts"].startswith("ran 2 time(s); 1 of 1 used")
    assert fields["worker"] == "test-worker"
    assert '"shown"' in section(out, "Arguments")
    assert section(out, "Result").strip() == "null"
    assert "RuntimeError: shown fails for good" in section(out, "Error, from attempt 2 (failed)")
    assert "Traceback (most recent call last)" in section(out, "Traceback")
    timeline = section(out, "Timeline")
    assert re.search(r"created +\d{4}-\d\d-\d\d", timeline)
    assert re.search(r"started attempt 2 +\S+ \S+ \(\+", timeline)
    assert re.search(r"finished +\S+ \S+ \(\+\d+\.\d\d s\)", timeline)
    attempts = section(out, "Attempts").splitlines()
    assert attempts[0].split() == ["#", "WORKER", "STARTED", "DURATION", "OUTCOME", "ERROR"]
    assert [row.split()[0] for row in attempts[1:]] == ["1", "2"]
    assert all("failed" in row and "shown fails for good" in row for row in attempts[1:])


def section(out: str, title: str) -> str:
    """Return the lines of *out* under the heading *title*, up to the next heading."""
    lines = out.splitlines()
    start = lines.index(title) + 1
    end = next(
        (i for i in range(start, len(lines)) if lines[i] and not lines[i].startswith(" ")),
        len(lines),
    )
    return "\n".join(lines[start:end])


def test_show_json_holds_the_job_its_timeline_and_every_attempt() -> None:
    job = run_once(jobs.fails_now.delay("as-json"))

    data = json.loads(run("show", str(job.id), "--json"))

    assert data["id"] == str(job.id) and data["status"] == "failed"
    assert data["args"] == ["as-json"] and data["result"] is None
    assert data["attempts"] == 1 and data["total_attempts"] == 1
    assert data["error"].startswith("RuntimeError: as-json fails for good")
    assert "Traceback (most recent call last)" in data["traceback"]
    assert data["error_origin"] == "from attempt 1 (failed)"
    assert [step["step"] for step in data["timeline"]] == [
        "created",
        "enqueued",
        "started",
        "finished",
    ]
    (attempt,) = data["attempt_history"]
    assert attempt["number"] == 1 and attempt["outcome"] == "failed"
    assert attempt["worker"] == "test-worker" and attempt["duration_seconds"] >= 0
    assert "Traceback (most recent call last)" in attempt["traceback"]


def test_show_of_a_job_marked_as_succeeded_keeps_the_note_out_of_the_error() -> None:
    job = run_once(jobs.fails_now.delay("by-hand"))
    Job.objects.mark_succeeded(job.id, note="fixed the invoice by hand (ops)")

    out = run("show", str(job.id))

    assert re.search(r"^  note +fixed the invoice by hand \(ops\)$", out, re.M)
    assert section(out, "Error").strip() == "-"
    # The last step says what ended the job, with no time since its run: that was the operator.
    (last,) = section(out, "Timeline").splitlines()[-1:]
    assert re.fullmatch(r"  marked as succeeded +\S+ \S+", last)


def test_show_refuses_an_unknown_or_ambiguous_id() -> None:
    first = jobs.add.delay(1, 1)
    second = jobs.add.delay(2, 2)
    Job.objects.filter(id=first.id).update(id=uuid.UUID("abcd0000-0000-4000-8000-000000000001"))
    Job.objects.filter(id=second.id).update(id=uuid.UUID("abcd0000-9999-4000-8000-000000000002"))

    with pytest.raises(CommandError, match="no job id starts with 'ffffffff'"):
        run("show", "ffffffff")
    with pytest.raises(CommandError, match="several job ids start with 'abcd0000'"):
        run("show", "abcd0000")
    with pytest.raises(CommandError, match="not a job id"):
        run("show", "not-an-id")
    with pytest.raises(CommandError, match="no job 00000000-0000-4000-8000-000000000000"):
        run("show", "00000000-0000-4000-8000-000000000000")
    assert run("show", "abcd00009").startswith("Job abcd0000-9999-4000-8000-000000000002")
