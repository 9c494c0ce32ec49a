"""Typed settings for django-asyncjobs, read lazily from ``settings.ASYNCJOBS``.

Every key has a default, a type and a check. Values are read on first use, not at import time, and
re-read after ``override_settings(ASYNCJOBS=...)`` so tests can change them::

    ASYNCJOBS = {
        "QUEUE_PREFIX": "myproject-",
        "QUEUES": ["high", "default", "low"],
        "MAX_RETRIES": 5,
    }

boto3 keeps its own configuration (credentials chain, ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL_SQS``); ``REGION_NAME`` and ``ENDPOINT_URL`` only override it when set.
"""

from __future__ import annotations

import difflib
import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from .limits import Rate, parse_rate

# SQS queue names: up to 80 characters of letters, digits, hyphens and underscores.
# https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-queues.html
SQS_QUEUE_NAME_MAX_LENGTH = 80
SQS_QUEUE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]*$")
# ReceiveMessage WaitTimeSeconds is 0..20 and a visibility timeout is at most 12 hours.
# https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html
SQS_MAX_WAIT_TIME_SECONDS = 20
SQS_MAX_VISIBILITY_TIMEOUT_SECONDS = 12 * 60 * 60
TRANSPORTS = ("sqs", "memory")
#: The dead-letter queue of SQS queue "x" is "x-dlq"; queue names leave room for the suffix.
DEAD_LETTER_SUFFIX = "-dlq"
#: The longest wait before a retry a setting may ask for (ten years): a longer one is a mistake.
#: (A job's own Backoff may say more; its retry is then due at the latest storable time.)
MAX_RETRY_BACKOFF_SECONDS = 10 * 365 * 24 * 3600


@dataclass(frozen=True, slots=True, kw_only=True)
class AsyncJobsSettings:
    """The validated ``ASYNCJOBS`` settings; field names are the lower-cased keys."""

    #: Prefix of every SQS queue name: job queue "default" lives in SQS queue "asyncjobs-default".
    queue_prefix: str = "asyncjobs-"
    #: Queues a worker consumes when ``runworker --queues`` is not given, highest priority first.
    queues: tuple[str, ...] = ("high", "default", "low")
    #: Queue of jobs that name none.
    default_queue: str = "default"
    #: AWS region; ``None`` lets boto3 decide (``AWS_DEFAULT_REGION``, ~/.aws/config).
    region_name: str | None = None
    #: SQS endpoint; ``None`` lets boto3 decide (``AWS_ENDPOINT_URL_SQS``, ``AWS_ENDPOINT_URL``).
    endpoint_url: str | None = None
    #: Create a missing SQS queue on first use. Turn off where IAM forbids sqs:CreateQueue.
    create_missing_queues: bool = True
    #: How long a received message stays invisible before SQS offers it again.
    visibility_timeout_seconds: int = 30
    #: Receives after which SQS moves a message to the queue's dead-letter queue (which queues
    #: created by the app get); 0 creates queues without one. Workers set malformed messages
    #: aside themselves; this is the backstop, high enough that doorbells handed back while
    #: workers are busy never reach it.
    dead_letter_max_receives: int = 50
    #: How often a worker consuming queue patterns (``--queues "reports-*"``) looks for new
    #: queues that match.
    queue_discovery_interval_seconds: float = 30.0
    #: Long-poll wait of ReceiveMessage (0..20).
    wait_time_seconds: int = 20
    #: Retries after the first attempt, unless a job says otherwise.
    max_retries: int = 3
    #: Delay before the first retry; each further retry multiplies it by the factor.
    retry_backoff_seconds: float = 60.0
    retry_backoff_factor: float = 4.0
    #: No retry waits longer than this.
    retry_backoff_max_seconds: float = 3600.0
    #: Random spread of each retry delay, as a fraction (0.2 = plus or minus 20 %).
    retry_jitter: float = 0.2
    #: Time a job may run before its attempt fails; ``None`` means no limit.
    timeout_seconds: float | None = 600.0
    #: Largest accepted size of a job's JSON arguments, and of its JSON result, in UTF-8 bytes.
    max_payload_bytes: int = 1024 * 1024
    #: How often a worker stamps ``heartbeat_at`` on its running jobs.
    heartbeat_interval_seconds: float = 10.0
    #: A running job whose heartbeat is older than this is rescued by the scheduler (its worker
    #: is gone): retried, or failed when it has no retry left or is ``at_most_once``.
    stale_after_seconds: float = 60.0
    #: A queued job no worker started within this long is sent again (its message was lost).
    requeue_after_seconds: float = 900.0
    #: Graceful-shutdown hand-backs of one job that do not use up an attempt; later ones do,
    #: so a job that keeps outliving deploys cannot loop forever.
    free_interruptions: int = 3
    #: Scheduler poll period when no NOTIFY arrives.
    scheduler_interval_seconds: float = 5.0
    #: Most jobs the scheduler relays in one transaction.
    scheduler_batch_size: int = 500
    #: Finished jobs older than this many days are deleted by the scheduler, a batch per pass;
    #: ``None`` (the default) keeps them until ``manage.py asyncjobs purge``.
    retention_days: float | None = None
    #: Flow control's ceiling: most jobs of one queue that are sent and not yet started. Below
    #: it the scheduler keeps about half a second of the queue's starts in SQS (at least 50)
    #: and the rest in PostgreSQL, where priority order is exact (see flow.py). 0 sends every
    #: due job at once.
    max_queued_per_queue: int = 1000
    #: Jobs a worker process holds ahead of its free slots (its next jobs, ready to go), at
    #: most as many as it started in the last second.
    prefetch: int = 100
    #: Rate limits per queue: ``{"partner-api": "100/m"}``. At most that many jobs of the queue
    #: start in any sliding window of the period, fleet wide (retries count); the rest wait in
    #: PostgreSQL, costing no SQS request. Forms: "10/s", "100/m", "1000/h", "5/10s".
    queue_rate_limits: Mapping[str, str] = field(default_factory=dict)
    #: How long a worker's claim waits for the scheduler's row lock before giving the message back.
    claim_lock_timeout_seconds: float = 5.0
    #: Prepare the statements every job runs (``delay()``'s insert, the claim, the outcome) once
    #: per database connection, with generic plans. Off by default, as Django's own prepared
    #: statements are: only for direct connections or session pooling, never behind a pooler
    #: in transaction mode.
    prepared_statements: bool = False
    #: "sqs" (production) or "memory" (one process only, for tests).
    transport: str = "sqs"
    #: Job names the HTTP jobs API may create, besides those declared ``@job(api=True)``.
    api_jobs: tuple[str, ...] = ()
    #: Lifetime of the API's bearer tokens (``manage.py asyncjobs api-token``), in seconds.
    api_token_max_age_seconds: int = 30 * 24 * 3600
    #: Periodic jobs declared in settings: dicts with "job", "cron" and optionally "args",
    #: "kwargs", "timezone", "missed", "queue", "priority", "key" (checked by asyncjobs.E003).
    periodic_jobs: tuple[Any, ...] = ()

    def queue_rates(self) -> dict[str, Rate]:
        """Return ``QUEUE_RATE_LIMITS`` parsed (validated already).

        >>> AsyncJobsSettings(queue_rate_limits={"api": "100/m"}).queue_rates()
        {'api': Rate(count=100, period_seconds=60)}
        """
        return {queue: parse_rate(rate) for queue, rate in self.queue_rate_limits.items()}

    def sqs_queue_name(self, queue: str) -> str:
        """Return the SQS name of job queue *queue* (``"default"`` -> ``"asyncjobs-default"``)."""
        return f"{self.queue_prefix}{queue}"

    def sqs_dead_letter_queue_name(self, queue: str) -> str:
        """Return the SQS name of *queue*'s dead-letter queue (``"asyncjobs-default-dlq"``)."""
        return f"{self.queue_prefix}{queue}{DEAD_LETTER_SUFFIX}"


_DEFAULTS = AsyncJobsSettings()

_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "queue_prefix": (str,),
    "queues": (list, tuple),
    "default_queue": (str,),
    "region_name": (str, type(None)),
    "endpoint_url": (str, type(None)),
    "create_missing_queues": (bool,),
    "visibility_timeout_seconds": (int,),
    "dead_letter_max_receives": (int,),
    "queue_discovery_interval_seconds": (int, float),
    "wait_time_seconds": (int,),
    "max_retries": (int,),
    "retry_backoff_seconds": (int, float),
    "retry_backoff_factor": (int, float),
    "retry_backoff_max_seconds": (int, float),
    "retry_jitter": (int, float),
    "timeout_seconds": (int, float, type(None)),
    "max_payload_bytes": (int,),
    "heartbeat_interval_seconds": (int, float),
    "stale_after_seconds": (int, float),
    "requeue_after_seconds": (int, float),
    "free_interruptions": (int,),
    "scheduler_interval_seconds": (int, float),
    "scheduler_batch_size": (int,),
    "max_queued_per_queue": (int,),
    "prefetch": (int,),
    "queue_rate_limits": (dict,),
    "retention_days": (int, float, type(None)),
    "claim_lock_timeout_seconds": (int, float),
    "prepared_statements": (bool,),
    "transport": (str,),
    "periodic_jobs": (list, tuple),
    "api_jobs": (list, tuple),
    "api_token_max_age_seconds": (int,),
}


def queue_name_error(queue: object, *, prefix: str = "") -> str | None:
    """Return why *queue* is not a usable job queue name, or ``None`` when it is.

    >>> queue_name_error("reports") is None
    True
    """
    if not isinstance(queue, str) or not queue:
        return f"queue names are non-empty strings, not {queue!r}"
    if not SQS_QUEUE_NAME_PATTERN.match(queue):
        return f"queue name {queue!r} may only hold letters, digits, '-' and '_'"
    if len(prefix) + len(queue) + len(DEAD_LETTER_SUFFIX) > SQS_QUEUE_NAME_MAX_LENGTH:
        return (
            f"queue name {prefix + queue!r} is too long: with its dead-letter queue's suffix "
            f"{DEAD_LETTER_SUFFIX!r} it must fit SQS's {SQS_QUEUE_NAME_MAX_LENGTH} characters"
        )
    return None


def validate(raw: Mapping[str, Any]) -> list[str]:
    """Return one message per problem in an ``ASYNCJOBS`` dict; an empty list means valid.

    >>> validate({"MAX_RETRIES": -1})
    ['ASYNCJOBS["MAX_RETRIES"] must be 0 or more, not -1']
    """
    if not isinstance(raw, Mapping):
        return [f"ASYNCJOBS must be a dict, not {type(raw).__name__}"]
    errors: list[str] = []
    for key, value in raw.items():
        name = str(key).lower()
        if name not in _FIELD_TYPES:
            close = difflib.get_close_matches(str(key).upper(), [k.upper() for k in _FIELD_TYPES])
            hint = f"; did you mean {close[0]!r}?" if close else ""
            errors.append(f"ASYNCJOBS has an unknown key {key!r}{hint}")
            continue
        allowed = _FIELD_TYPES[name]
        # bool is an int subclass; a True where a number belongs is almost always a mistake.
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            wanted = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
            errors.append(f'ASYNCJOBS["{key}"] must be {wanted}, not {value!r}')
    if errors:
        return errors

    values = {str(k).lower(): v for k, v in raw.items()}

    def number(name: str, minimum: float, maximum: float | None = None, hint: str = "") -> None:
        value = values.get(name)
        if value is None:
            return
        if isinstance(value, float) and not math.isfinite(value):  # NaN passes every check below
            errors.append(f'ASYNCJOBS["{name.upper()}"] must be a finite number, not {value!r}')
            return
        if value < minimum or (maximum is not None and value > maximum):
            # .15g: 315360000, not 3.1536e+08.
            bound = (
                f"between {minimum:.15g} and {maximum:.15g}"
                if maximum is not None
                else (f"{minimum:.15g} or more")
            )
            errors.append(f'ASYNCJOBS["{name.upper()}"] must be {bound}, not {value!r}{hint}')

    number("visibility_timeout_seconds", 0, SQS_MAX_VISIBILITY_TIMEOUT_SECONDS)
    number("wait_time_seconds", 0, SQS_MAX_WAIT_TIME_SECONDS)
    number("dead_letter_max_receives", 0, 1000)
    number("queue_discovery_interval_seconds", 0.1)
    number("max_retries", 0)
    number("retry_backoff_seconds", 0, MAX_RETRY_BACKOFF_SECONDS)
    number("retry_backoff_factor", 1)
    number("retry_backoff_max_seconds", 0, MAX_RETRY_BACKOFF_SECONDS)
    number("retry_jitter", 0, 1)
    # 0 reads as "no limit" elsewhere; here that is None, and a zero timeout would fail every job.
    number("timeout_seconds", 0.001, hint="; use None for no time limit")
    number("max_payload_bytes", 1)
    number("heartbeat_interval_seconds", 0.01)
    number("stale_after_seconds", 0.01)
    number("requeue_after_seconds", 0.01)
    number("free_interruptions", 0)
    number("scheduler_interval_seconds", 0.01)
    number("scheduler_batch_size", 1)
    number("max_queued_per_queue", 0)
    number("prefetch", 0, 1000)
    number("retention_days", 0.0001)
    number("api_token_max_age_seconds", 1)
    number("claim_lock_timeout_seconds", 0.001)

    heartbeat = values.get("heartbeat_interval_seconds", _DEFAULTS.heartbeat_interval_seconds)
    stale = values.get("stale_after_seconds", _DEFAULTS.stale_after_seconds)
    if stale < 3 * heartbeat:
        # Two missed heartbeats (a GC pause, a slow query) must not look like a dead worker.
        errors.append(
            f'ASYNCJOBS["STALE_AFTER_SECONDS"] ({stale:g}) must be at least 3 x '
            f'ASYNCJOBS["HEARTBEAT_INTERVAL_SECONDS"] ({heartbeat:g})'
        )

    prefix = values.get("queue_prefix", _DEFAULTS.queue_prefix)
    if not SQS_QUEUE_NAME_PATTERN.match(prefix):
        errors.append(
            f'ASYNCJOBS["QUEUE_PREFIX"] may only hold letters, digits, "-" and "_", not {prefix!r}'
        )
    queues = values.get("queues", _DEFAULTS.queues)
    if not queues:
        errors.append('ASYNCJOBS["QUEUES"] must name at least one queue')
    for queue in queues:
        problem = queue_name_error(queue, prefix=prefix)
        if problem:
            errors.append(f'ASYNCJOBS["QUEUES"]: {problem}')
    default_queue = values.get("default_queue", _DEFAULTS.default_queue)
    problem = queue_name_error(default_queue, prefix=prefix)
    if problem:
        errors.append(f'ASYNCJOBS["DEFAULT_QUEUE"]: {problem}')
    for queue, rate in values.get("queue_rate_limits", {}).items():
        problem = queue_name_error(queue, prefix=prefix)
        if problem:
            errors.append(f'ASYNCJOBS["QUEUE_RATE_LIMITS"]: {problem}')
            continue
        try:
            parse_rate(rate, field=f'ASYNCJOBS["QUEUE_RATE_LIMITS"][{queue!r}]')
        except ValueError as exc:
            errors.append(str(exc))
    transport = values.get("transport", _DEFAULTS.transport)
    if transport not in TRANSPORTS:
        errors.append(f'ASYNCJOBS["TRANSPORT"] must be one of {TRANSPORTS}, not {transport!r}')
    return errors


def raw_settings() -> Any:
    """Return ``settings.ASYNCJOBS`` as the project wrote it (``{}`` when absent)."""
    return getattr(django_settings, "ASYNCJOBS", {})


@functools.cache
def get_settings() -> AsyncJobsSettings:
    """Return the project's validated settings, cached until ``ASYNCJOBS`` changes.

    Raises :class:`~django.core.exceptions.ImproperlyConfigured` naming every invalid key.

    >>> get_settings().default_queue
    'default'
    """
    raw = raw_settings()
    errors = validate(raw)
    if errors:
        raise ImproperlyConfigured("; ".join(errors))
    known = {f.name for f in fields(AsyncJobsSettings)}
    values: dict[str, Any] = {k.lower(): v for k, v in raw.items() if k.lower() in known}
    for name in ("queues", "periodic_jobs", "api_jobs"):
        if name in values:
            values[name] = tuple(values[name])
    if "queue_rate_limits" in values:
        values["queue_rate_limits"] = dict(values["queue_rate_limits"])
    return AsyncJobsSettings(**values)


@receiver(setting_changed)
def _reset_on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "ASYNCJOBS":
        get_settings.cache_clear()
