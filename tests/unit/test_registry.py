"""The @job decorator, the registry and argument checks at delay()."""

from __future__ import annotations

import datetime as dt
import inspect

import pytest

from django_asyncjobs import job, registry
from django_asyncjobs.exceptions import DuplicateJobName, JobNotRegistered
from django_asyncjobs.models import Job
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


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((dt.datetime(2026, 1, 1),), {}, r"args\[0\] is a datetime"),
        ((), {"value": {1, 2}}, r"kwargs\['value'\] is a set"),
        ((), {"value": {"a": [1, (2, 3)]}}, r"kwargs\['value'\]\['a'\]\[1\] is a tuple"),
        ((), {"value": {1: "x"}}, "keys must be strings"),
        ((), {"value": float("nan")}, "nan"),
        ((), {"value": "a\x00b"}, "NUL"),
        ((), {"value": b"bytes"}, "is a bytes"),
    ],
)
def test_delay_rejects_arguments_that_are_not_json(
    args: tuple[object, ...], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        jobs.echo.delay(*args, **kwargs)  # type: ignore[arg-type]
    assert Job.objects.count() == 0


@pytest.mark.django_db
def test_delay_rejects_arguments_that_do_not_fit_the_signature() -> None:
    with pytest.raises(TypeError, match=r"tests\.testapp\.jobs\.add: missing a required argument"):
        jobs.add.delay(1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'c'"):
        jobs.add.delay(1, 2, c=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="SayHello: missing a required argument: 'name'"):
        jobs.SayHello.delay()  # type: ignore[attr-defined]
    assert Job.objects.count() == 0


@pytest.mark.django_db
def test_oversized_arguments_are_measured_in_utf8_bytes(settings: object) -> None:
    from django.test import override_settings

    with override_settings(ASYNCJOBS={"MAX_PAYLOAD_BYTES": 1000}):
        jobs.echo.delay("a" * 900)  # 900 characters, about 910 bytes of JSON: fits
        with pytest.raises(
            ValueError, match=r"job arguments are 1,8\d\d bytes of JSON; the limit is 1,000"
        ):
            jobs.echo.delay("é" * 900)  # 900 characters, 1,800 bytes
    assert Job.objects.count() == 1


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
