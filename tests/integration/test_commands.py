"""``manage.py asyncjobs``: list, retry, cancel, purge and stats, including bad input."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from django_asyncjobs.models import Job, JobAttempt
from django_asyncjobs.transports.memory import MemoryTransport
from tests.conftest import drain, relay
from tests.testapp import jobs

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: Any) -> str:
    out = io.StringIO()
    call_command("asyncjobs", *args, stdout=out)
    return out.getvalue()


def failed_job(key: str) -> Job:
    job = jobs.fails_now.delay(key)
    transport = MemoryTransport()
    relay(transport)
    drain(transport)
    job.refresh_from_db()
    assert job.status == "failed"
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
    assert "3 failed job(s) retried" in out
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
    out = run("purge", "--older-than", "30d", "--batch-size", "2")
    assert "2 deleted so far" in out and "4 deleted so far" in out
    assert "5 job(s) deleted" in out
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
    assert by_queue["default"][-2] == "0+0"  # SQS: visible + in flight


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
