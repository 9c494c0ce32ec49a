"""Django's Tasks API on django-asyncjobs: ``django.tasks`` (Django 6.x) or the ``django-tasks``
backport (Django 4.2 / 5.2), through ``django_asyncjobs.tasks_backend.AsyncJobsBackend``.

These in-process tests use the memory transport; tests/processes/test_tasks_backend.py runs the
same flows with a real ``runscheduler`` and ``runworker`` and moto_server.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core import mail
from django.db import transaction
from django.utils import timezone

from django_asyncjobs import retry
from django_asyncjobs.models import Job
from django_asyncjobs.tasks_backend import AsyncJobsBackend, exception_class_path
from django_asyncjobs.tasks_compat import (
    ACCEPTS_TASK_OPTIONS,
    SOURCE,
    InvalidTask,
    TaskContext,
    TaskResultDoesNotExist,
    TaskResultStatus,
    default_task_backend,
    task,
    task_backends,
    task_enqueued,
)
from django_asyncjobs.transports.memory import MemoryTransport
from tests.conftest import drain, relay
from tests.support.ledger import claimed
from tests.support.processes import wait_until
from tests.testapp import jobs, tasks
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)

needs_task_options = pytest.mark.skipif(
    not ACCEPTS_TASK_OPTIONS, reason="Django 6.0's @task takes no extra options"
)


def signals_for(result_id: str) -> list[tuple[str, int, str]]:
    """Django's task signals recorded for *result_id*: (signal, sending pid, status)."""
    rows = Execution.objects.filter(job__startswith="signal:", key=result_id).order_by("id")
    return [(r.job.removeprefix("signal:"), r.payload["pid"], r.payload["status"]) for r in rows]


def run_everything(transport: MemoryTransport) -> None:
    relay(transport)
    drain(transport, queues=["high", "default", "low", "emails"])


def test_the_backend_supports_everything_django_asks_about() -> None:
    backend = task_backends["default"]
    assert isinstance(backend, AsyncJobsBackend)
    assert backend.supports_defer and backend.supports_async_task
    assert backend.supports_get_result and backend.supports_priority
    assert ("django" if hasattr(__import__("django"), "tasks") else "backport") == SOURCE


def test_enqueue_writes_the_job_row_and_returns_a_ready_result() -> None:
    result = tasks.add.enqueue(2, 3)
    job = Job.objects.get(pk=result.id)
    assert (job.name, job.args, job.kwargs, job.status) == (
        "tests.testapp.tasks.add",
        [2, 3],
        {},
        "scheduled",
    )
    assert result.status == TaskResultStatus.READY and result.enqueued_at == job.created_at
    assert (result.started_at, result.finished_at, result.last_attempted_at) == (None,) * 3
    assert (result.args, result.backend, result.errors, result.worker_ids) == (
        [2, 3],
        "default",
        [],
        [],
    )
    with pytest.raises(ValueError, match="not finished"):
        _ = result.return_value
    assert tasks.add.get_result(result.id).status == TaskResultStatus.READY
    assert signals_for(result.id) == [("task_enqueued", os.getpid(), "READY")]


def test_enqueue_is_transactional() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        result = tasks.add.enqueue(1, 1)
        assert Job.objects.filter(pk=result.id).exists()
        raise RuntimeError("roll back")
    assert not Job.objects.filter(pk=result.id).exists()
    assert signals_for(result.id) == []  # task_enqueued waits for the commit


def test_bad_arguments_raise_at_once_and_store_nothing() -> None:
    with pytest.raises(TypeError, match="missing a required argument: 'b'"):
        tasks.add.enqueue(1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        tasks.add.enqueue(1, object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unexpected keyword argument 'context'"):
        tasks.whoami.enqueue(context=None, key="k")  # type: ignore[call-arg]
    assert not Job.objects.exists()


def test_get_result_of_an_unknown_id_or_a_plain_job_does_not_exist() -> None:
    backend = task_backends["default"]
    plain = jobs.add.delay(1, 2)
    for result_id in ("4a9a7f64-8f0c-4d5e-9a7e-1f1d2c3b4a59", "not-a-uuid", str(plain.id)):
        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result(result_id)


def test_validate_task_gives_djangos_own_messages() -> None:
    def inner(context: TaskContext) -> None: ...

    with pytest.raises(InvalidTask, match=r"Task function must be defined at a module level\."):
        task(inner)
    with pytest.raises(InvalidTask, match="does not have a first argument of 'context'"):
        task(takes_context=True)(tasks.not_a_task)  # type: ignore[arg-type]
    with pytest.raises(InvalidTask, match="priority must be a whole number between -100 and 100"):
        tasks.add.using(priority=101)
    with pytest.raises(InvalidTask, match=r"Queue 'elsewhere' is not valid for backend\."):
        tasks.add.using(queue_name="elsewhere")
    with pytest.raises(InvalidTask, match="run_after must be an aware datetime"):
        tasks.add.using(run_after=dt.datetime(2030, 1, 1))


def test_a_run_after_no_job_row_can_hold_or_a_lone_surrogate_is_refused() -> None:
    west = dt.timezone(dt.timedelta(hours=-5))
    with pytest.raises(
        InvalidTask,
        match=r"run_after=9999-12-31T23:59:59-05:00 is outside the supported range "
        r"0001-01-02T00:00:00\+00:00 to 9999-12-30T00:00:00\+00:00 \(UTC\)",
    ):
        tasks.add.using(run_after=dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=west))
    with pytest.raises(InvalidTask, match=r"run_after=0001-01-01T00:00:00\+01:00 is outside"):
        tasks.add.using(run_after=dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1))))
    not_utf8 = r"contains a lone surrogate \('\\ud800'\), which is not valid UTF-8"
    with pytest.raises(TypeError, match=rf"args\[0\] {not_utf8}"):
        tasks.record_order.enqueue("\ud800")
    with pytest.raises(TypeError, match=rf"kwargs\['key'\] {not_utf8}"):
        tasks.record_order.enqueue(key="x\ud800")
    assert not Job.objects.exists()


def test_djangos_documented_example_runs_unchanged(memory_transport: MemoryTransport) -> None:
    # docs/topics/tasks.txt: enqueue, transactions with on_commit, results, priority, deferral.
    with transaction.atomic():
        transaction.on_commit(
            functools.partial(
                tasks.email_users.enqueue,
                emails=["user@example.com"],
                subject="You have a message",
                message="Hello there!",
            )
        )
    (job,) = Job.objects.filter(name="tests.testapp.tasks.email_users")
    assert (job.queue, job.priority) == ("emails", 2)
    later = tasks.email_users.using(
        priority=10, run_after=timezone.now() + dt.timedelta(minutes=5)
    ).enqueue(emails=["b@example.com"], subject="Later", message="Not yet")
    run_everything(memory_transport)
    result = default_task_backend.get_result(str(job.id))
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 1
    assert [m.subject for m in mail.outbox] == ["You have a message"]
    assert default_task_backend.get_result(later.id).status == TaskResultStatus.READY
    assert Job.objects.get(pk=later.id).priority == 10


def test_a_task_runs_and_its_result_maps_the_row(memory_transport: MemoryTransport) -> None:
    result = tasks.add.enqueue(20, 22)
    run_everything(memory_transport)
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 42
    assert result.worker_ids == ["test-worker"] and result.attempts == 1 and result.errors == []
    assert result.enqueued_at and result.started_at and result.finished_at
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.started_at == result.last_attempted_at
    assert [s for s, _, _ in signals_for(result.id)] == [
        "task_enqueued",
        "task_started",
        "task_finished",
    ]
    assert signals_for(result.id)[1][2] == "RUNNING"
    assert signals_for(result.id)[2][2] == "SUCCESSFUL"


def test_takes_context_counts_attempts_from_one(memory_transport: MemoryTransport) -> None:
    result = tasks.whoami.enqueue("k")
    run_everything(memory_transport)
    assert tasks.whoami.get_result(result.id).return_value == {
        "key": "k",
        "attempt": 1,
        "id": result.id,
    }


@needs_task_options
def test_retries_with_backoff_keep_every_error(memory_transport: MemoryTransport) -> None:
    result = tasks.fails_once.enqueue()
    run_everything(memory_transport)
    result.refresh()
    assert result.status == TaskResultStatus.READY  # retrying after its backoff
    (error,) = result.errors
    assert error.exception_class_path == "tests.testapp.tasks.FirstAttemptFails"
    assert error.exception_class is tasks.FirstAttemptFails
    assert "the first attempt fails" in error.traceback and "Traceback" in error.traceback
    wait_until(
        lambda: Job.objects.due().filter(pk=result.id).exists(),
        timeout=10,
        message="the retry never became due",
    )
    run_everything(memory_transport)
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 2
    assert result.attempts == 2 and len(result.errors) == 1
    assert result.started_at and result.last_attempted_at
    assert result.started_at < result.last_attempted_at
    finished = [status for s, _, status in signals_for(result.id) if s == "task_finished"]
    assert finished == ["READY", "SUCCESSFUL"]  # one per attempt


@needs_task_options
def test_a_failing_task_is_failed_with_its_error(memory_transport: MemoryTransport) -> None:
    result = tasks.boom.enqueue()  # max_retries=0
    run_everything(memory_transport)
    result.refresh()
    assert result.status == TaskResultStatus.FAILED and result.is_finished
    assert [e.exception_class_path for e in result.errors] == ["builtins.ValueError"]
    assert result.errors[0].exception_class is ValueError
    with pytest.raises(ValueError, match="Task failed"):
        _ = result.return_value


@needs_task_options
def test_an_at_most_once_task_stores_the_policy_on_its_job_row() -> None:
    # Every rescue path reads the row, so the policy must reach it through enqueue().
    once = tasks.charge_once.enqueue(5)
    plain = tasks.add.enqueue(1, 2)
    assert Job.objects.get(pk=once.id).at_most_once is True
    assert Job.objects.get(pk=plain.id).at_most_once is False


def test_an_async_task_runs_on_the_workers_loop(memory_transport: MemoryTransport) -> None:
    result = async_to_sync(tasks.async_mul.aenqueue)(6, 7)
    run_everything(memory_transport)
    value: Any = async_to_sync(tasks.async_mul.aget_result)(result.id).return_value
    assert value == 42


def test_priorities_and_run_after_reach_the_job(memory_transport: MemoryTransport) -> None:
    low = tasks.record_order.using(priority=-50).enqueue("low")
    high = tasks.record_order.using(priority=50).enqueue("high")
    later = tasks.record_order.using(run_after=timezone.now() + dt.timedelta(hours=1)).enqueue("x")
    assert Job.objects.get(pk=high.id).priority == 50
    assert Job.objects.get(pk=later.id).run_at > timezone.now() + dt.timedelta(minutes=59)
    assert tasks.record_order.get_result(low.id).task.priority == -50
    run_everything(memory_transport)
    order = list(Execution.objects.filter(job="record_order").values_list("key", flat=True))
    assert order == ["high", "low"]  # the deferred one has not run
    assert tasks.record_order.get_result(later.id).status == TaskResultStatus.READY


def test_a_job_row_naming_a_plain_function_never_runs_it(
    memory_transport: MemoryTransport,
) -> None:
    job = jobs.add.delay(1, 1)
    Job.objects.filter(pk=job.pk).update(name="tests.testapp.tasks.not_a_task")
    relay(memory_transport)
    memory_transport.visibility_timeout_seconds = 0
    for _ in range(5):
        drain(memory_transport)
        for stored in memory_transport._queue("default").messages:
            stored.visible_at = 0
    row = Job.objects.get(pk=job.pk)
    assert row.status == "failed"
    assert "'tests.testapp.tasks.not_a_task' is not registered in this worker" in row.error
    assert not Execution.objects.filter(job="not_a_task").exists()


def test_tasks_appear_as_jobs_for_operators() -> None:
    result = tasks.add.enqueue(1, 2)
    assert Job.objects.filter(name="tests.testapp.tasks.add").get().id.hex == result.id.replace(
        "-", ""
    )


def test_get_result_rebuilds_the_task_it_was_enqueued_as() -> None:
    run_after = timezone.now() + dt.timedelta(hours=1)
    moved = tasks.add.using(backend="secondary", queue_name="low", priority=7, run_after=run_after)
    result = moved.enqueue(1, 2)
    assert Job.objects.get(pk=result.id).task_backend == "secondary"
    assert result.backend == "secondary" and result.task == moved
    for read in (
        default_task_backend.get_result(result.id),
        task_backends["secondary"].get_result(result.id),
        tasks.add.get_result(result.id),
    ):
        assert read.backend == "secondary"
        assert read.task == moved  # backend, queue, priority, run_after and the function
    result.refresh()  # through the task's own backend
    assert result.status == TaskResultStatus.READY

    plain = default_task_backend.get_result(tasks.add.enqueue(3, 4).id)
    assert plain.task == tasks.add and plain.backend == "default"
    assert (plain.task.queue_name, plain.task.priority, plain.task.run_after) == (
        "default",
        0,
        None,
    )


def test_a_failing_task_fails_unless_retries_were_asked_for(
    memory_transport: MemoryTransport,
) -> None:
    plain = tasks.fails_plainly.enqueue()
    optioned = tasks.fails_on_secondary.enqueue()  # its backend's OPTIONS: max_retries 1
    run_everything(memory_transport)
    plain.refresh()
    optioned.refresh()
    # As with Django's own backends: one attempt, then FAILED, not retries for minutes.
    assert plain.status == TaskResultStatus.FAILED and plain.attempts == 1
    assert [e.exception_class for e in plain.errors] == [ValueError]
    assert optioned.status == TaskResultStatus.READY and len(optioned.errors) == 1
    wait_until(
        lambda: Job.objects.due().filter(pk=optioned.id).exists(),
        timeout=10,
        message="the retry never became due",
    )
    run_everything(memory_transport)
    retried = tasks.fails_on_secondary.get_result(optioned.id)
    assert retried.status == TaskResultStatus.FAILED and retried.attempts == 2


class ConfigError(Exception):
    """An exception whose message looks like an exception line."""


def test_exception_class_paths_from_real_tracebacks() -> None:
    import traceback

    def formatted(exc: BaseException) -> str:
        try:
            raise exc
        except BaseException as caught:
            return "".join(traceback.format_exception(caught))

    noted = ValueError("first line")
    noted.add_note("a note: with a colon")
    assert exception_class_path(formatted(noted), "") == "builtins.ValueError"
    tricky = formatted(ConfigError("config.yaml: missing key\nsecond line: also"))
    assert exception_class_path(tricky, "") == "tests.integration.test_tasks_backend.ConfigError"


@needs_task_options
def test_invalid_task_options_are_refused_when_the_task_is_defined() -> None:
    with pytest.raises(InvalidTask, match="max_retries must be an int of 0 or more"):
        task(max_retries=-1)(tasks.not_a_task)  # type: ignore[call-overload]
    with pytest.raises(InvalidTask, match="unique must be True or False"):
        task(unique="yes")(tasks.not_a_task)  # type: ignore[call-overload]


def test_unknown_backend_options_are_a_configuration_error() -> None:
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match=r"unknown keys \['max_retry'\]"):
        AsyncJobsBackend("x", {"OPTIONS": {"max_retry": 3}})


def test_a_failing_task_enqueued_receiver_never_breaks_enqueue() -> None:
    def broken(**kwargs: object) -> None:
        raise RuntimeError("receiver bug")

    task_enqueued.connect(broken, dispatch_uid="broken-receiver")
    try:
        result = tasks.add.enqueue(1, 2)
    finally:
        task_enqueued.disconnect(dispatch_uid="broken-receiver")
    assert Job.objects.filter(pk=result.id).exists()
    assert signals_for(result.id) == [("task_enqueued", os.getpid(), "READY")]


def test_exception_class_paths_from_stored_errors() -> None:
    assert exception_class_path("Traceback...\nKeyError: 'x'", "") == "builtins.KeyError"
    assert exception_class_path("", "JobTimeout: timed out after 2 s").endswith(".JobTimeout")
    assert exception_class_path("", "WorkerLost: gone") == "django_asyncjobs.exceptions.WorkerLost"
    assert exception_class_path("x\nmy.mod.Oops: no", "") == "my.mod.Oops"
    assert exception_class_path("", "") == "builtins.Exception"


def test_a_task_cancelled_while_running_finishes_failed_and_one_cancelled_before_never_ran() -> (
    None
):
    running = tasks.add.enqueue(1, 2)
    waiting = tasks.add.using(run_after=timezone.now() + dt.timedelta(hours=1)).enqueue(3, 4)
    row = claimed(Job.objects.get(pk=running.id))
    assert row.lease_token is not None
    Job.objects.cancel(row.id, by="alice")
    Job.objects.end_attempt(
        job=row,
        lease_token=row.lease_token,
        decide=functools.partial(retry.decide, ending=retry.Ending.FAILED),
        error="JobCancelled: cancel requested by alice",
    )
    Job.objects.cancel(waiting.id, by="alice")

    running.refresh()
    waiting.refresh()
    assert running.status == TaskResultStatus.FAILED
    assert [e.exception_class_path for e in running.errors] == [
        "django_asyncjobs.exceptions.JobCancelled"
    ]
    assert [(s, status) for s, _, status in signals_for(running.id)][-1] == (
        "task_finished",
        "FAILED",
    )
    assert waiting.status == TaskResultStatus.FAILED and waiting.errors == []
    assert "task_finished" not in [s for s, _, _ in signals_for(waiting.id)]


@needs_task_options
def test_concurrency_and_rate_limits_through_task_options(
    memory_transport: MemoryTransport,
) -> None:
    from django_asyncjobs.held import limit_note, limits_summary

    results = [tasks.charge_account.enqueue("acme") for _ in range(3)]
    rows = [Job.objects.get(pk=r.id) for r in results]
    assert {row.concurrency_key for row in rows} == {"tests.testapp.tasks.charge_account:acme"}
    assert relay(memory_transport) == 1
    waiting = Job.objects.get(pk=results[2].id)
    assert limits_summary(waiting) == (
        "concurrency 1 per key 'tests.testapp.tasks.charge_account:acme'; "
        "rate 100/m for job tests.testapp.tasks.charge_account"
    )
    assert limit_note(waiting) == (
        "waiting: concurrency limit: 1 of 1 jobs with key "
        "'tests.testapp.tasks.charge_account:acme' are queued or running; it is sent when one ends"
    )
    with pytest.raises(InvalidTask, match=r"rate_limit must look like .* not '100 a minute'"):
        task(rate_limit="100 a minute")(too_fast)  # type: ignore[call-overload]


def too_fast() -> None:
    """A task function with a bad rate limit (Django wants task functions at module level)."""
