"""The @job decorator, the registry, and the options checked before anything is stored.

tests/integration/test_delay_arguments.py checks the arguments of ``delay()`` against the database.
"""

from __future__ import annotations

import datetime as dt
import inspect

import pytest
from django.test import override_settings

from django_asyncjobs import job, registry
from django_asyncjobs.exceptions import DuplicateJobName, JobNotRegistered
from django_asyncjobs.queues import declared_queues
from tests.testapp import jobs


def test_default_name_is_module_and_qualname() -> None:
    assert jobs.add.name == "tests.testapp.jobs.add"
    assert registry.get("tests.testapp.jobs.add") is jobs.add


def test_explicit_name_and_options() -> None:
    assert jobs.echo.name == "tests.echo"
    assert jobs.high_echo.queue == "high"
    assert jobs.high_echo.priority == 5


def test_jobs_py_of_installed_apps_is_autodiscovered() -> None:
    assert "tests.testapp.jobs.SayHello" in registry.names()


def test_plain_call_runs_inline() -> None:
    assert jobs.async_add.is_async
    assert not jobs.add.is_async
    assert inspect.signature(jobs.add).parameters.keys() == {"a", "b"}


def test_class_job_keeps_its_class() -> None:
    assert inspect.isclass(jobs.SayHello)
    assert isinstance(jobs.SayHello("Ada"), jobs.SayHello)
    assert jobs.SayHello.job_definition.is_class  # type: ignore[attr-defined]
    assert jobs.AsyncGreeter.job_definition.is_async  # type: ignore[attr-defined]


def test_two_functions_under_one_name_is_an_error() -> None:
    def first() -> None: ...

    def second() -> None: ...

    job(name="tests.duplicate")(first)
    try:
        with pytest.raises(DuplicateJobName, match="already registered"):
            job(name="tests.duplicate")(second)
    finally:
        registry.unregister("tests.duplicate")


def test_unknown_name_lookup() -> None:
    with pytest.raises(JobNotRegistered, match="no job named 'nope'"):
        registry.get("nope")


def test_class_without_handle_is_refused() -> None:
    class NoHandle:
        pass

    with pytest.raises(TypeError, match="handle"):
        job(NoHandle)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"queue": "bad queue"}, ValueError),
        ({"priority": "high"}, TypeError),
        ({"max_retries": -1}, ValueError),
        ({"timeout": -5}, ValueError),
    ],
)
def test_bad_decorator_options(options: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        job(**options)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("run_after", "error"),
    [
        (-1, ValueError),
        (dt.datetime(2030, 1, 1), ValueError),  # naive
        ("soon", TypeError),
    ],
)
def test_bad_run_after(run_after: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        jobs.add.using(run_after=run_after)  # type: ignore[arg-type]


def test_declared_queues_are_those_the_settings_jobs_schedules_and_tasks_name() -> None:
    # QUEUES and DEFAULT_QUEUE; "emails" is a Tasks backend's queue (tests/settings.py TASKS).
    assert {"high", "default", "low", "emails"} <= declared_queues()
    assert "nightly" not in declared_queues()
    schedule = {"job": "tests.echo", "cron": "0 3 * * *", "queue": "nightly"}
    with override_settings(ASYNCJOBS={"QUEUES": ["default"], "PERIODIC_JOBS": [schedule]}):
        assert {"default", "nightly", "high", "low"} <= declared_queues()  # high, low: @job
