"""Concurrency and rate limits as written by users: rates parsed, options checked at decoration
time with a precise error, keys built from the arguments, settings validated."""

from __future__ import annotations

from typing import Any

import pytest
from django.core import checks
from django.test import override_settings

from django_asyncjobs import job, registry
from django_asyncjobs.conf import validate
from django_asyncjobs.limits import Rate, concurrency_key_for, parse_rate
from tests.testapp import jobs


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("10/s", Rate(count=10, period_seconds=1)),
        ("100/m", Rate(count=100, period_seconds=60)),
        ("1000/h", Rate(count=1000, period_seconds=3600)),
        ("5/10s", Rate(count=5, period_seconds=10)),
        (" 2 / d ", Rate(count=2, period_seconds=86400)),
    ],
)
def test_rates_parse(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("bad", ["", "10", "0/s", "10/x", "10/0s", "-1/m", "ten/m", 10, None])
def test_bad_rates_are_refused_naming_the_value_and_the_forms(bad: object) -> None:
    with pytest.raises(ValueError, match=r'rate_limit must look like "10/s", "100/m"') as info:
        parse_rate(bad)
    assert repr(bad) in str(info.value)


def test_rates_print_as_written() -> None:
    assert [str(parse_rate(r)) for r in ("10/s", "100/m", "5/10s", "60/60s")] == [
        "10/s",
        "100/m",
        "5/10s",
        "60/m",
    ]


def test_job_options_are_checked_at_decoration_time() -> None:
    def target(customer: str) -> None: ...

    with pytest.raises(ValueError, match=r"rate_limit must look like .* not '100 per minute'"):
        job(name="tests.unit.bad_rate", rate_limit="100 per minute")(target)
    with pytest.raises(ValueError, match="concurrency must be an int of 1 or more, not 0"):
        job(name="tests.unit.bad_concurrency", concurrency=0)(target)
    with pytest.raises(ValueError, match="concurrency must be an int of 1 or more, not True"):
        job(name="tests.unit.bad_concurrency", concurrency=True)(target)
    with pytest.raises(ValueError, match="concurrency_key needs concurrency=N"):
        job(name="tests.unit.key_alone", concurrency_key=lambda c: c)(target)
    with pytest.raises(TypeError, match="concurrency_key must be a callable"):
        job(name="tests.unit.key_str", concurrency=1, concurrency_key="customer")(target)  # type: ignore[call-overload]
    assert not {"tests.unit.bad_rate", "tests.unit.bad_concurrency"} & registry.names()


def test_definitions_carry_their_limits() -> None:
    assert jobs.per_customer.concurrency == 2
    assert jobs.rated.rate_limit == Rate(count=5, period_seconds=1)
    assert jobs.add.concurrency is None and jobs.add.rate_limit is None


def test_keys_are_scoped_by_job_name_and_built_from_the_arguments() -> None:
    def by_customer(customer: str, **_: Any) -> str:
        return customer

    assert concurrency_key_for("app.sync", None, [1], {}) == "app.sync"
    assert concurrency_key_for("app.sync", by_customer, ["acme"], {"x": 1}) == "app.sync:acme"
    assert concurrency_key_for("app.sync", by_customer, [], {"customer": "acme"}) == (
        "app.sync:acme"
    )
    with pytest.raises(ValueError, match="concurrency_key must return a non-empty str, not 42"):
        concurrency_key_for("app.sync", lambda *a, **k: 42, [], {})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must fit 255"):
        concurrency_key_for("app.sync", lambda *a, **k: "x" * 300, [], {})


def test_queue_rate_limits_are_validated_with_a_system_check() -> None:
    assert validate({"QUEUE_RATE_LIMITS": {"emails": "100/m"}}) == []
    assert validate({"QUEUE_RATE_LIMITS": {"emails": "100/minute"}}) == [
        'ASYNCJOBS["QUEUE_RATE_LIMITS"][\'emails\'] must look like "10/s", "100/m", "1000/h" '
        "or \"5/10s\" (a count of 1 or more per s, m, h or d), not '100/minute'"
    ]
    assert validate({"QUEUE_RATE_LIMITS": ["emails"]}) == [
        "ASYNCJOBS[\"QUEUE_RATE_LIMITS\"] must be dict, not ['emails']"
    ]
    with override_settings(ASYNCJOBS={"QUEUE_RATE_LIMITS": {"bad queue": "1/s"}}):
        errors = [e for e in checks.run_checks() if e.id == "asyncjobs.E001"]
    assert [e.msg for e in errors] == [
        "ASYNCJOBS[\"QUEUE_RATE_LIMITS\"]: queue name 'bad queue' may only hold letters, "
        "digits, '-' and '_'"
    ]
