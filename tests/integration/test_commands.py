"""``manage.py asyncjobs``: list, show, retry, cancel, purge and stats, including bad input."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import uuid
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models.functions import Now

from django_asyncjobs.conf import get_settings
from django_asyncjobs.models import Job, JobAttempt
from django_asyncjobs.transports.memory import MemoryTransport
from django_asyncjobs.transports.sqs import SQSTransport
from tests.conftest import drain, relay
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: Any) -> str:
    out = io.StringIO()
    call_command("asyncjobs", *args, stdout=out)
    return out.getvalue()


def failed_job(key: str) -> Job:
    job = run_once(jobs.fails_now.delay(key))
    assert job.status == "failed"
    return job


def run_once(job: Job) -> Job:
    """Relay *job* and run it with an in-process worker; return its row."""
    transport = MemoryTransport()
    relay(transport)
    drain(transport)
    job.refresh_from_db()
    return job


def test_list_shows_a_table_and_filters() -> None:
    ok = jobs.add.delay(1, 2)
    bad = failed_job("list")
    table = run("list")
    assert table.splitlines()[0].split()[:3] == ["ID", "NAME", "STATUS"]
    assert str(ok.id)[:8] in table and str(bad.id)[:8] in table
    assert "1 / 1" in table  # attempts of the failed job, out of max_retries + 1
    only_failed = run("list", "--status", "failed")
    assert str(bad.id)[:8] in only_failed and str(ok.id)[:8] not in only_failed
    (line,) = run("list", "--name", jobs.add.name, "--json").splitlines()
    assert json.loads(line)["id"] == str(ok.id) and json.loads(line)["args"] == [1, 2]
    assert run("list", "--queue", "nowhere") == "no jobs match\n"
    assert table.splitlines()[-1] == "2 of 2 matching job(s)"
    for _ in range(3):
        jobs.add.delay(2, 2)
    assert run("list", "--limit", "3").splitlines()[-1] == (
        "3 of 5 matching job(s) (newest first; --limit shows more)"
    )
    assert run("list", "--status", "failed", "--limit", "1").splitlines()[-1] == (
        "1 of 1 matching job(s)"
    )


def test_retry_one_job_by_id_prefix_and_refuse_the_others() -> None:
    bad = failed_job("r1")
    assert f"{bad.id} retried" in run("retry", str(bad.id)[:8])
    bad.refresh_from_db()
    assert bad.status == "scheduled" and bad.attempts == 0
    with pytest.raises(CommandError, match="is scheduled; only failed or cancelled"):
        run("retry", str(bad.id))
    with pytest.raises(CommandError, match="no job id starts with 'ffffffff'"):
        run("retry", "ffffffff")
    with pytest.raises(CommandError, match="not a job id"):
        run("retry", "xyz")
    with pytest.raises(CommandError, match="give job ids to retry, or --all-failed"):
        run("retry")


def test_retry_all_failed_jobs_of_a_name() -> None:
    failed = [failed_job(f"all-{i}") for i in range(3)]
    out = run("retry", "--all-failed", "--name", jobs.fails_now.name)
    assert out.splitlines() == ["  3 of 3 retried", "3 failed job(s) retried"]
    assert {j.status for j in Job.objects.filter(id__in=[f.id for f in failed])} == {"scheduled"}
    with pytest.raises(CommandError, match="not both"):
        run("retry", "--all-failed", str(failed[0].id))


def test_cancel_jobs_that_have_not_started() -> None:
    waiting = jobs.add.using(run_after=3600).delay(1, 1)
    assert f"{waiting.id} cancelled" in run("cancel", str(waiting.id))
    assert Job.objects.get(id=waiting.id).status == "cancelled"
    with pytest.raises(CommandError, match="is cancelled; only scheduled, queued or running"):
        run("cancel", str(waiting.id))


def test_purge_deletes_old_finished_jobs_in_batches_with_their_attempts() -> None:
    old = [failed_job(f"old-{i}") for i in range(5)]
    recent = failed_job("recent")
    pending = jobs.add.delay(1, 1)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE asyncjobs_job SET finished_at = now() - interval '40 days' WHERE id = ANY(%s)",
            [[j.id for j in old]],
        )
    dry = run("purge", "--older-than", "30d", "--dry-run")
    assert dry == (
        "5 job(s) would be deleted (cancelled, failed, succeeded, finished more than 30d ago); "
        "dry run, nothing deleted\n"
    )
    assert Job.objects.count() == 7
    out = run("purge", "--older-than", "30d", "--batch-size", "2")
    assert out.splitlines() == [
        "  2 of 5 deleted",
        "  4 of 5 deleted",
        "  5 of 5 deleted",
        "5 job(s) deleted",
    ]
    assert set(Job.objects.values_list("id", flat=True)) == {recent.id, pending.id}
    assert not JobAttempt.objects.filter(job_id__in=[j.id for j in old]).exists()
    with pytest.raises(CommandError, match="not a duration"):
        run("purge", "--older-than", "a month")
    # Longer than PostgreSQL's interval can hold: a clear error, not a traceback.
    with pytest.raises(CommandError, match="longer than the years 1 to 9999"):
        run("purge", "--older-than", "99999999999999d")
    assert Job.objects.filter(id=recent.id).exists()
    with pytest.raises(CommandError, match="finished jobs only, not queued"):
        run("purge", "--older-than", "1d", "--status", "queued")
    with pytest.raises(CommandError, match="unknown status 'nope'"):
        run("purge", "--older-than", "1d", "--status", "nope")


def test_purge_and_pruning_keep_a_finished_job_that_blocked_jobs_still_wait_for(
    queue_prefix: str,
) -> None:
    from django.test import override_settings

    from django_asyncjobs.scheduler import Scheduler
    from tests.conftest import _current_asyncjobs

    transport = MemoryTransport()
    needed = jobs.echo.delay("needed", key="needed")
    unrelated = jobs.echo.delay("unrelated", key="unrelated")
    relay(transport)
    drain(transport)
    later = jobs.echo.using(run_after=3600).delay("later", key="later")
    waiting = jobs.echo.using(depends_on=[needed, later]).delay("waiting", key="waiting")
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE asyncjobs_job SET finished_at = now() - interval '40 days' WHERE id = ANY(%s)",
            [[needed.id, unrelated.id]],
        )

    assert "1 job(s) deleted" in run("purge", "--older-than", "30d")
    with override_settings(ASYNCJOBS={**_current_asyncjobs(), "RETENTION_DAYS": 7}):
        assert Scheduler(transport=transport).prune() == 0
    assert set(Job.objects.values_list("id", flat=True)) == {needed.id, later.id, waiting.id}
    assert Job.objects.get(id=waiting.id).status == "scheduled"


def test_stats_counts_jobs_per_queue_and_status(queue_prefix: str) -> None:
    failed_job("stats")
    jobs.add.delay(1, 1)
    jobs.add.using(queue="low").delay(1, 1)
    out = run("stats")
    header, *rows = out.splitlines()
    assert header.split()[:3] == ["QUEUE", "SCHEDULED", "QUEUED"]
    by_queue = {row.split()[0]: row.split() for row in rows}
    assert by_queue["default"][1] == "1" and by_queue["default"][5] == "1"  # scheduled, failed
    assert by_queue["low"][1] == "1"
    # Nothing was sent yet, so SQS has no queue; looking does not create one.
    assert by_queue["default"][-3] == "no-queue" and by_queue["default"][-2] == "-"
    assert by_queue["default"][-1] == "-"  # not paused
    transport = SQSTransport(get_settings())
    try:
        assert transport.list_queues() == []
        transport.ensure_queue("default")
        by_queue = {row.split()[0]: row.split() for row in run("stats").splitlines()[1:]}
        assert by_queue["default"][-3:-1] == ["0+0", "0"]  # SQS: visible + in flight, dead
        assert by_queue["low"][-3] == "no-queue"
    finally:
        transport.close()


def test_the_scheduler_prunes_finished_jobs_past_the_retention(queue_prefix: str) -> None:
    from django.test import override_settings

    from django_asyncjobs.scheduler import Scheduler
    from tests.conftest import _current_asyncjobs

    old = failed_job("retention")
    kept = jobs.add.delay(1, 1)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE asyncjobs_job SET finished_at = now() - interval '8 days' WHERE id = %s",
            [old.id],
        )
    assert Scheduler(transport=MemoryTransport()).prune() == 0  # off by default
    with override_settings(ASYNCJOBS={**_current_asyncjobs(), "RETENTION_DAYS": 7}):
        assert Scheduler(transport=MemoryTransport()).prune() == 1
    assert list(Job.objects.values_list("id", flat=True)) == [kept.id]


def test_the_scheduler_prunes_a_backlog_a_batch_a_second_then_once_a_minute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django.test import override_settings

    from django_asyncjobs import scheduler as scheduler_module
    from tests.conftest import _current_asyncjobs

    enqueued = jobs.add.delay_many(((i, i), {}) for i in range(5))
    Job.objects.filter(id__in=[j.id for j in enqueued]).update(
        status="succeeded", finished_at=Now() - dt.timedelta(days=8)
    )
    monkeypatch.setattr(scheduler_module, "PRUNE_BATCH_SIZE", 2)
    # While behind, the next batch is due at once here; once caught up, not for an hour.
    monkeypatch.setattr(scheduler_module, "PRUNE_BEHIND_EVERY_SECONDS", 0.0)
    monkeypatch.setattr(scheduler_module, "PRUNE_EVERY_SECONDS", 3600.0)
    with override_settings(ASYNCJOBS={**_current_asyncjobs(), "RETENTION_DAYS": 7}):
        scheduler = scheduler_module.Scheduler(transport=MemoryTransport())
        deleted = [scheduler.prune() for _ in range(4)]
    assert deleted == [2, 2, 1, 0]
    assert not Job.objects.exists()


def test_attempts_are_numbered_on_after_an_operator_retry_while_the_limit_starts_again() -> None:
    job = failed_job("twice")
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
    job = failed_job("shown")
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
    job = failed_job("as-json")

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
    job = failed_job("by-hand")
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


def test_show_says_why_a_job_of_a_paused_queue_waits() -> None:
    from django_asyncjobs import queues

    job = jobs.add.delay(1, 2)
    queues.pause("default", by="alice", reason="SMTP provider down")

    out = run("show", str(job.id))
    data = json.loads(run("show", str(job.id), "--json"))

    assert re.search(r"^  queue +default \(priority 0, paused\)$", out, re.M)
    assert re.search(r"^  waiting +waiting: queue 'default' is paused since .+ by alice", out, re.M)
    assert data["queue_paused"]["by"] == "alice"


def test_redrive_says_how_many_of_the_dead_letters_it_moved(queue_prefix: str) -> None:
    from django_asyncjobs.transports import OutgoingMessage, get_transport

    transport = get_transport()
    try:
        transport.send_batch("default", [OutgoingMessage(id=str(i), body="x") for i in range(2)])
        quarantined = 0
        while quarantined < 2:  # SQS may hand out fewer than asked for
            for received in transport.receive("default", max_messages=10, wait_seconds=1):
                assert transport.quarantine(received)
                quarantined += 1
    finally:
        transport.close()
    out = run("redrive", "--queue", "default")
    assert out.splitlines() == [
        "default: 2 of ~2 dead-lettered message(s) moved back",
        "2 message(s) redriven",
    ]
