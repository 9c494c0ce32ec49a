"""Message bodies, settings validation and system checks."""

from __future__ import annotations

import json
import uuid

import pytest
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_asyncjobs.conf import get_settings, validate
from django_asyncjobs.exceptions import MalformedMessage
from django_asyncjobs.payload import (
    MAX_JOBS_PER_MESSAGE,
    MAX_MESSAGE_BODY_BYTES,
    Doorbell,
    decode_message,
    encode_message,
)
from django_asyncjobs.retry import Backoff


def test_doorbell_round_trip_is_small() -> None:
    bell = Doorbell(job_id=uuid.uuid4(), dispatch_token=uuid.uuid4())
    body = bell.encode()
    assert len(body.encode()) < 100
    assert Doorbell.decode(body) == bell


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "{}",
        '{"v": 99, "job": "00000000-0000-0000-0000-000000000001", "d": "x"}',
        '{"v": 1, "job": "1 OR 1=1", "d": "00000000-0000-0000-0000-000000000001"}',
        '{"func": "os.system", "args": ["touch pwned"]}',
        "x" * 900_000,
        "[" * 10_000 + "]" * 10_000,
    ],
)
def test_malformed_bodies_are_refused(body: str) -> None:
    with pytest.raises(MalformedMessage):
        Doorbell.decode(body)


def test_backoff_grows_and_is_capped() -> None:
    backoff = Backoff(base_seconds=60, factor=4, max_seconds=600, jitter=0)
    assert [backoff.delay_seconds(n) for n in (1, 2, 3)] == [60, 240, 600]
    jittered = Backoff(base_seconds=100, factor=2, jitter=0.2)
    assert all(80 <= jittered.delay_seconds(1) <= 120 for _ in range(100))


def test_a_backoff_too_steep_for_floats_waits_its_maximum() -> None:
    # 1e300 ** 2 overflows: the retry waits max_seconds instead of crashing the worker.
    assert Backoff(base_seconds=1, factor=1e300, max_seconds=600, jitter=0).delay_seconds(3) == 600


def test_default_settings() -> None:
    with override_settings(ASYNCJOBS={}):
        conf = get_settings()
        assert conf.queues == ("high", "default", "low")
        assert conf.sqs_queue_name("default") == "asyncjobs-default"
        assert conf.create_missing_queues is True


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"WAIT_TIME_SECONDS": 30},
            'ASYNCJOBS["WAIT_TIME_SECONDS"] must be between 0 and 20, not 30',
        ),
        ({"MAX_RETRIES": "3"}, "ASYNCJOBS[\"MAX_RETRIES\"] must be int, not '3'"),
        ({"QUEUES": ["ok", "not ok"]}, "may only hold letters"),
        ({"QUEUE_PREFIX": "x" * 80}, "must fit SQS's 80 characters"),
        ({"MAX_RETRY": 3}, "unknown key 'MAX_RETRY'; did you mean 'MAX_RETRIES'?"),
        ({"TRANSPORT": "redis"}, "must be one of"),
        ({"CREATE_MISSING_QUEUES": 1}, "must be bool"),
        (
            {"RETRY_BACKOFF_MAX_SECONDS": float("inf")},
            'ASYNCJOBS["RETRY_BACKOFF_MAX_SECONDS"] must be a finite number, not inf',
        ),
        (
            {"TIMEOUT_SECONDS": 0},
            'ASYNCJOBS["TIMEOUT_SECONDS"] must be 0.001 or more, not 0; use None for no time limit',
        ),
        ({"RETRY_JITTER": float("nan")}, 'ASYNCJOBS["RETRY_JITTER"] must be a finite number'),
        (
            {"RETRY_BACKOFF_MAX_SECONDS": 10**12},
            'ASYNCJOBS["RETRY_BACKOFF_MAX_SECONDS"] must be between 0 and 315360000, not 1',
        ),
    ],
)
def test_invalid_settings_are_reported(raw: dict[str, object], message: str) -> None:
    assert any(message in error for error in validate(raw)), validate(raw)


def test_invalid_settings_fail_the_system_check_and_access() -> None:
    with override_settings(ASYNCJOBS={"WAIT_TIME_SECONDS": 99}):
        errors = [e for e in run_checks() if e.id == "asyncjobs.E001"]
        assert len(errors) == 1
        assert "WAIT_TIME_SECONDS" in errors[0].msg
        with pytest.raises(ImproperlyConfigured, match="WAIT_TIME_SECONDS"):
            get_settings()
    assert get_settings().wait_time_seconds == 1  # back to the test settings


def test_the_memory_transport_is_a_deployment_warning_only() -> None:
    def warnings(*, deploy: bool) -> list[str]:
        found = run_checks(include_deployment_checks=deploy)
        return [m.msg for m in found if m.id == "asyncjobs.W001"]

    assert warnings(deploy=True) == []  # the test settings use SQS
    with override_settings(ASYNCJOBS={"TRANSPORT": "memory"}):
        (message,) = warnings(deploy=True)
        assert 'ASYNCJOBS["TRANSPORT"] is "memory"' in message
        # Tests that run a Scheduler and a Worker in one process are what it is for.
        assert warnings(deploy=False) == []


def test_a_default_queue_no_default_worker_consumes_is_a_warning() -> None:
    def warnings() -> list[str]:
        return [m.msg for m in run_checks() if m.id == "asyncjobs.W003"]

    assert warnings() == []  # "default" is one of the test settings' QUEUES
    with override_settings(ASYNCJOBS={"QUEUES": ["high", "low"], "DEFAULT_QUEUE": "default"}):
        (message,) = warnings()
        assert message.startswith("ASYNCJOBS[\"DEFAULT_QUEUE\"] ('default') is not in")
        assert "a runworker started without --queues never receives" in message
    with override_settings(ASYNCJOBS={"QUEUES": ["high", "low"], "MAX_RETRIES": -1}):
        assert warnings() == []  # invalid settings are asyncjobs.E001's to report


def test_a_message_names_several_jobs_highest_priority_first_and_stays_small() -> None:
    bells = [
        Doorbell(job_id=uuid.uuid4(), dispatch_token=uuid.uuid4(), priority=p)
        for p in range(MAX_JOBS_PER_MESSAGE, 0, -1)
    ]
    body = encode_message(bells)
    assert decode_message(body) == bells
    # Ten of the largest messages fit in one SendMessageBatch request (256 KiB).
    assert 10 * len(body.encode()) < 256 * 1024
    assert len(body.encode()) <= MAX_MESSAGE_BODY_BYTES
    # A message naming one job keeps the first version's shape, which every worker reads.
    assert json.loads(encode_message(bells[:1]))["v"] == 1
    with pytest.raises(ValueError, match="1 to 100 jobs"):
        encode_message([*bells, bells[0]])


@pytest.mark.parametrize(
    "body",
    [
        '{"v": 2, "jobs": []}',
        '{"v": 2, "jobs": "x"}',
        '{"v": 2, "jobs": [["00000000-0000-0000-0000-000000000001"]]}',
        f'{{"v": 2, "jobs": [["{uuid.UUID(int=1)}", "{uuid.UUID(int=2)}", true]]}}',
        f'{{"v": 2, "jobs": [["{uuid.UUID(int=1)}", "{uuid.UUID(int=2)}", "5"]]}}',
        f'{{"v": 2, "jobs": [["{uuid.UUID(int=1)}", "not a uuid", 0]]}}',
        f'{{"v": 2, "jobs": [["{uuid.UUID(int=1)}", "{uuid.UUID(int=2)}", 0]], "x": 1}}',
        '{"v": 2, "jobs": '
        + json.dumps([[str(uuid.UUID(int=1)), str(uuid.UUID(int=2)), 0]] * 101)
        + "}",
        '{"v": 1, "jobs": []}',
    ],
)
def test_malformed_messages_naming_several_jobs_are_refused(body: str) -> None:
    with pytest.raises(MalformedMessage):
        decode_message(body)


def test_doorbell_decode_refuses_a_message_naming_several_jobs() -> None:
    bell = Doorbell(job_id=uuid.uuid4(), dispatch_token=uuid.uuid4())
    with pytest.raises(MalformedMessage, match="names 2 jobs"):
        Doorbell.decode(encode_message([bell, bell]))
