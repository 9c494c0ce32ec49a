"""Arguments ``delay()`` refuses (not JSON, not fitting the signature, too large) store nothing."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from django_asyncjobs.models import Job
from tests.testapp import jobs


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


@pytest.mark.django_db
def test_a_misspelt_keyword_is_named_and_the_closest_parameter_offered() -> None:
    with pytest.raises(TypeError) as caught:
        jobs.SayHello.delay(nme="a")  # type: ignore[attr-defined]
    assert str(caught.value) == (
        "tests.testapp.jobs.SayHello: got an unexpected keyword argument 'nme'; did you mean "
        "'name'? (it takes name, punctuation)"
    )
    assert Job.objects.count() == 0


@pytest.mark.django_db
def test_a_model_instance_argument_suggests_its_primary_key() -> None:
    from tests.testapp.models import Execution

    row = Execution.objects.create(job="x")
    with pytest.raises(TypeError) as caught:
        jobs.echo.delay(row)
    assert str(caught.value) == (
        f"args[0] is a Execution (pk={row.pk!r}), which does not survive a JSON round trip; "
        f"pass its primary key ({row.pk!r}) and fetch the Execution in the job"
    )
    assert Job.objects.count() == 0


@pytest.mark.django_db
def test_a_queryset_argument_is_refused_without_being_evaluated(
    django_assert_num_queries: Any,
) -> None:
    from tests.testapp.models import Execution

    rows = Execution.objects.all()
    with django_assert_num_queries(0), pytest.raises(TypeError) as caught:
        jobs.echo.delay(value={"rows": rows}, key="k")
    assert str(caught.value) == (
        "kwargs['value']['rows'] is a QuerySet of Execution, which does not survive a JSON "
        "round trip; pass a list of primary keys, list(queryset.values_list('pk', flat=True))"
    )
    assert rows._result_cache is None
