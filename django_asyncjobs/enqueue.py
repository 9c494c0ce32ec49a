"""Enqueueing: per-call options, argument checks, and the one INSERT behind ``delay()``.

:class:`BoundJob` is what ``my_job.using(...)`` returns; ``my_job.delay()`` is
``my_job.using().delay()``. Everything is checked before anything is written, so a bad call raises
at the call site and stores nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar

from .conf import get_settings, queue_name_error
from .limits import ConcurrencyKey, concurrency_key_for
from .payload import check_arguments
from .timebounds import check_delay_seconds, check_timestamp

if TYPE_CHECKING:
    from .models import Job

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

RunAfter = float | int | dt.timedelta | dt.datetime


def check_run_after(run_after: RunAfter | None) -> dt.timedelta | dt.datetime | None:
    """Return *run_after* as an aware datetime or a timedelta a job row can hold.

    Raises :class:`TypeError` for anything but seconds, a timedelta or an aware datetime, and
    :class:`ValueError` naming ``run_after`` for a naive datetime, negative seconds, and a time
    (or a delay from now) outside :mod:`~django_asyncjobs.timebounds`: such a ``run_at`` could
    not be read back by Python, and would break every list of jobs.

    >>> check_run_after(60)
    datetime.timedelta(seconds=60)
    """
    if run_after is None:
        return None
    if isinstance(run_after, dt.datetime):
        if run_after.tzinfo is None or run_after.utcoffset() is None:
            raise ValueError(
                f"run_after={run_after!r} is a naive datetime; pass an aware one "
                "(django.utils.timezone.now() + timedelta(...))"
            )
        return check_timestamp(run_after, field="run_after")
    if isinstance(run_after, dt.timedelta):
        check_delay_seconds(run_after.total_seconds(), field="run_after")
        return run_after
    if isinstance(run_after, int | float) and not isinstance(run_after, bool):
        if not run_after >= 0:  # also refuses NaN
            raise ValueError(f"run_after must be 0 or more seconds, not {run_after!r}")
        # Before timedelta(), which overflows (or fails on inf) with a message naming no field.
        check_delay_seconds(run_after, field="run_after")
        return dt.timedelta(seconds=run_after)
    raise TypeError(
        f"run_after must be seconds, a timedelta or an aware datetime, not {run_after!r}"
    )


def check_priority(priority: object) -> int:
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise TypeError(f"priority must be an int, not {priority!r}")
    if not -(2**31) <= priority < 2**31:
        raise ValueError(f"priority must fit in 32 bits, not {priority}")
    return priority


def check_queue(queue: object) -> str:
    problem = queue_name_error(queue)
    if problem:
        raise ValueError(problem)
    assert isinstance(queue, str)
    return queue


#: Longest unique key (the column's size).
MAX_UNIQUE_KEY_LENGTH = 255

Arguments = tuple[Sequence[Any], Mapping[str, Any]]


def unique_key_for(name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """Return the key of ``@job(unique=True)``: the job's name and a hash of its arguments.

    >>> unique_key_for("app.jobs.sync", [1], {})
    'app.jobs.sync:...'
    """
    canonical = json.dumps([list(args), dict(kwargs)], sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"{name[: MAX_UNIQUE_KEY_LENGTH - len(digest) - 1]}:{digest}"


def _job_id(dependency: object) -> uuid.UUID:
    job_id = getattr(dependency, "id", dependency)
    if isinstance(job_id, uuid.UUID):
        return job_id
    if isinstance(job_id, str):
        try:
            return uuid.UUID(job_id)
        except ValueError:
            pass
    raise TypeError(f"depends_on takes jobs or job ids, not {dependency!r}")


class JobSpec(Protocol[P, R_co]):
    """What enqueueing needs to know of a job: :class:`~django_asyncjobs.registry.JobDefinition`.

    Declared here so that this module does not depend on the registry, which depends on it.
    """

    @property
    def name(self) -> str: ...
    @property
    def queue(self) -> str | None: ...
    @property
    def priority(self) -> int: ...
    @property
    def unique(self) -> bool: ...
    @property
    def at_most_once(self) -> bool: ...
    @property
    def concurrency(self) -> int | None: ...
    @property
    def concurrency_key(self) -> ConcurrencyKey | None: ...

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...
    def bind_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None: ...
    def resolve_max_retries(self) -> int: ...
    def resolve_timeout_seconds(self) -> float | None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class EnqueueOptions:
    """Per-call overrides set with :meth:`JobDefinition.using`."""

    run_after: dt.timedelta | dt.datetime | None = None
    priority: int | None = None
    queue: str | None = None
    unique_key: str | None = None
    depends_on: tuple[uuid.UUID, ...] = ()
    #: Alias of the Django Tasks backend that enqueues the job, stored on the row so that its
    #: result names it again; set by that backend (``tasks_backend.py``), not by ``using()``.
    task_backend: str = ""


class BoundJob(Generic[P, R]):
    """A job definition with per-call options; returned by :meth:`JobDefinition.using`.

    Example::

        report = build_report.using(run_after=60, priority=5).delay(2026)
        build_report.using(depends_on=[report]).delay_many([([2027], {}), ([2028], {})])
    """

    __slots__ = ("definition", "options")

    def __init__(self, definition: JobSpec[P, R], options: EnqueueOptions) -> None:
        self.definition = definition
        self.options = options

    def using(
        self,
        *,
        run_after: RunAfter | None = None,
        priority: int | None = None,
        queue: str | None = None,
        unique_key: str | None = None,
        depends_on: Iterable[Job | uuid.UUID | str] | None = None,
    ) -> BoundJob[P, R]:
        """Return a copy with these options added to the ones already set.

        *unique_key*: while a job with this key is scheduled, queued or running, ``delay()``
        returns that job instead of storing a new one. *depends_on*: jobs (or their ids) that
        must succeed before this one runs; if one fails for good or is cancelled, so is this.
        """
        current = self.options
        if unique_key is not None and (
            not isinstance(unique_key, str) or not 0 < len(unique_key) <= MAX_UNIQUE_KEY_LENGTH
        ):
            raise ValueError(
                f"unique_key must be a string of 1 to {MAX_UNIQUE_KEY_LENGTH} characters, "
                f"not {unique_key!r}"
            )
        if isinstance(depends_on, str):
            raise TypeError("depends_on takes a list of jobs or job ids, not a string")
        return BoundJob(
            self.definition,
            EnqueueOptions(
                run_after=check_run_after(run_after)
                if run_after is not None
                else current.run_after,
                priority=check_priority(priority) if priority is not None else current.priority,
                queue=check_queue(queue) if queue is not None else current.queue,
                unique_key=unique_key if unique_key is not None else current.unique_key,
                depends_on=tuple(_job_id(d) for d in depends_on)
                if depends_on is not None
                else current.depends_on,
                task_backend=current.task_backend,
            ),
        )

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Store the job; see :meth:`JobDefinition.delay`."""
        (job,) = self._store([(args, kwargs)])
        return job

    def delay_many(
        self, arguments: Iterable[Arguments], *, unique_keys: Sequence[str] | None = None
    ) -> list[Job]:
        """Store one job per ``(args, kwargs)`` pair with one INSERT and one NOTIFY.

        Every pair is checked before anything is written; a bad one raises naming its index.
        The fast path for large fan-outs; returns the jobs in order. *unique_keys* gives each
        job a key of its own (see :meth:`using`).
        """
        return self._store(list(arguments), unique_keys=unique_keys)

    def _store(
        self, arguments: Sequence[Arguments], *, unique_keys: Sequence[str] | None = None
    ) -> list[Job]:
        from .models import Job

        definition = self.definition
        conf = get_settings()
        options = self.options
        checked: list[tuple[list[Any], dict[str, Any]]] = []
        keys: list[str | None] = []
        concurrency_keys: list[str | None] = []
        limited = definition.concurrency is not None
        for index, pair in enumerate(arguments):
            where = "" if len(arguments) == 1 else f"job {index}: "
            try:
                args, kwargs = pair
                definition.bind_arguments(tuple(args), dict(kwargs))
                json_args, json_kwargs, _ = check_arguments(
                    args, kwargs, max_bytes=conf.max_payload_bytes
                )
                # From the stored (JSON) arguments: the key a worker's rerun would compute.
                concurrency_keys.append(
                    concurrency_key_for(
                        definition.name, definition.concurrency_key, json_args, json_kwargs
                    )
                    if limited
                    else None
                )
            except (TypeError, ValueError) as exc:
                if not where:
                    raise
                # A new TypeError or ValueError, never type(exc)(...): a subclass such as
                # UnicodeEncodeError cannot be built from a message, and the caller catches these
                # two. A plain one is all in the new message; a subclass stays as the cause.
                error: type[Exception] = TypeError if isinstance(exc, TypeError) else ValueError
                raise error(f"{where}{exc}") from (None if type(exc) is error else exc)
            checked.append((json_args, json_kwargs))
            if unique_keys is not None:
                keys.append(unique_keys[index])
            elif options.unique_key is not None:
                keys.append(options.unique_key)
            elif definition.unique:
                keys.append(unique_key_for(definition.name, json_args, json_kwargs))
            else:
                keys.append(None)
        if not checked:
            return []
        return Job.objects.enqueue_many(
            name=definition.name,
            arguments=checked,
            unique_keys=keys,
            queue=options.queue or definition.queue or conf.default_queue,
            priority=definition.priority if options.priority is None else options.priority,
            max_retries=definition.resolve_max_retries(),
            timeout_seconds=definition.resolve_timeout_seconds(),
            run_after=options.run_after,
            depends_on=options.depends_on,
            at_most_once=definition.at_most_once,
            task_backend=options.task_backend,
            concurrency_keys=concurrency_keys,
            concurrency_limit=definition.concurrency,
        )
