"""The ``@job`` decorator and the registry of job definitions.

A worker runs only what is registered here, looked up by name: it never imports a path taken from a
database row or a message.
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import inspect
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from .conf import get_settings
from .cron import Cron, as_crons
from .enqueue import Arguments, BoundJob, EnqueueOptions, RunAfter, check_priority, check_queue
from .exceptions import DuplicateJobName, JobNotRegistered
from .limits import ConcurrencyKey, Rate, check_concurrency, parse_rate
from .retry import Backoff

if TYPE_CHECKING:
    from .models import Job

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T", bound=type)


def _timeout_seconds(timeout: float | dt.timedelta | None) -> float | None:
    if isinstance(timeout, dt.timedelta):
        timeout = timeout.total_seconds()
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
        raise ValueError(f"timeout must be 0 or more seconds or a timedelta, not {timeout!r}")
    return float(timeout)


class JobDefinition(Generic[P, R]):
    """A registered job: the callable and its defaults. Made by :func:`job`; do not build directly.

    Calling the definition runs the function inline; :meth:`delay` stores a job for a worker::

        @job(queue="high", max_retries=5)
        def send_receipt(order_id: int) -> None: ...

        send_receipt.delay(42)                          # a worker runs it soon
        send_receipt.using(run_after=60).delay(42)      # ... not before a minute from now
        send_receipt(42)                                # runs here and now
    """

    def __init__(
        self,
        target: Callable[P, R],
        *,
        name: str,
        queue: str | None,
        priority: int,
        max_retries: int | None,
        timeout: float | None,
        backoff: Backoff | None,
        at_most_once: bool = False,
        unique: bool = False,
        crons: tuple[Cron, ...] = (),
        api: bool = False,
        concurrency: int | None = None,
        concurrency_key: ConcurrencyKey | None = None,
        rate_limit: Rate | None = None,
    ) -> None:
        self.target = target
        self.concurrency = concurrency
        self.concurrency_key = concurrency_key
        self.rate_limit = rate_limit
        self.api = api
        self.crons = crons
        self.at_most_once = at_most_once
        self.unique = unique
        self.name = name
        self.queue = queue
        self.priority = priority
        self.max_retries = max_retries
        self.timeout = timeout
        self.backoff = backoff
        self.is_class = inspect.isclass(target)
        handler = getattr(target, "handle", None) if self.is_class else target
        if self.is_class and not callable(handler):
            raise TypeError(f"job class {target.__qualname__} needs a handle(self) method")
        self.is_async = inspect.iscoroutinefunction(handler)
        self._signature = inspect.signature(target)
        self._fitting_shapes: set[tuple[int, tuple[str, ...]]] = set()
        if not self.is_class:
            functools.update_wrapper(self, target)

    def __repr__(self) -> str:
        return f"<JobDefinition {self.name}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the job's function here and now, like a plain call."""
        return self.target(*args, **kwargs)

    def using(
        self,
        *,
        run_after: RunAfter | None = None,
        priority: int | None = None,
        queue: str | None = None,
        unique_key: str | None = None,
        depends_on: Iterable[Job | uuid.UUID | str] | None = None,
    ) -> BoundJob[P, R]:
        """Return a copy whose :meth:`~BoundJob.delay` applies these options.

        *run_after* is seconds, a timedelta or an aware datetime; the delay is measured by the
        database's clock. *priority* (higher first) and *queue* override the job's defaults.
        *unique_key* and *depends_on*: see :meth:`BoundJob.using`.
        """
        return BoundJob(self, EnqueueOptions()).using(
            run_after=run_after,
            priority=priority,
            queue=queue,
            unique_key=unique_key,
            depends_on=depends_on,
        )

    def delay_many(self, arguments: Iterable[Arguments]) -> list[Job]:
        """Store one job per ``(args, kwargs)`` pair, in one statement; see
        :meth:`BoundJob.delay_many`.

        Example::

            add.delay_many([((1, 2), {}), ((3, 4), {})])   # [<Job: ...>, <Job: ...>]
        """
        return BoundJob(self, EnqueueOptions()).delay_many(arguments)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Store a job that a worker will run with these arguments, in the current transaction.

        Raises :class:`TypeError` for arguments that do not fit the function's signature or do not
        survive a JSON round trip, :class:`ValueError` for oversized arguments; nothing is stored
        then. Never talks to SQS.
        """
        return BoundJob(self, EnqueueOptions()).delay(*args, **kwargs)

    def bind_arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise :class:`TypeError` when *args* and *kwargs* do not fit the job's signature."""
        # Whether a call binds depends only on how many positional arguments there are and
        # which keywords: remember the shapes that fit (a bulk enqueue repeats one shape).
        shape = (len(args), tuple(kwargs))
        if shape in self._fitting_shapes:
            return
        try:
            self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            # An unexpected keyword comes first: delay(nme="a") is a typo of "name", and
            # bind() would only say that "name" is missing.
            raise TypeError(f"{self.name}: {self._unexpected_keywords(kwargs) or exc}") from None
        if len(self._fitting_shapes) < 64:
            self._fitting_shapes.add(shape)

    def _unexpected_keywords(self, kwargs: dict[str, Any]) -> str:
        """Describe the keywords the job does not take, with the closest one it does; or ``""``."""
        parameters = self._signature.parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            return ""
        accepted = [
            p.name
            for p in parameters
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        ]
        unexpected = [key for key in kwargs if key not in accepted]
        if not unexpected:
            return ""
        noun = "argument" if len(unexpected) == 1 else "arguments"
        close = difflib.get_close_matches(unexpected[0], accepted, n=1)
        suggestion = f"; did you mean {close[0]!r}?" if close else ""
        takes = ", ".join(accepted) if accepted else "no keyword arguments"
        return (
            f"got an unexpected keyword {noun} {', '.join(map(repr, unexpected))}{suggestion} "
            f"(it takes {takes})"
        )

    def resolve_max_retries(self) -> int:
        """Return the job's retry count, or the project default."""
        return get_settings().max_retries if self.max_retries is None else self.max_retries

    def resolve_timeout_seconds(self) -> float | None:
        """Return the job's timeout (``None`` for no limit), or the project default."""
        if self.timeout is None:
            return get_settings().timeout_seconds
        return self.timeout or None  # 0 means "no limit"

    def resolve_backoff(self) -> Backoff:
        """Return the job's backoff policy, or the project default."""
        return self.backoff or Backoff.from_settings()


class Registry:
    """Job definitions by name. One per process: :data:`registry`.

    Example::

        registry.get("myapp.jobs.add")   # <JobDefinition myapp.jobs.add>
    """

    def __init__(self) -> None:
        self._definitions: dict[str, JobDefinition[Any, Any]] = {}
        self._lock = threading.Lock()

    def register(self, definition: JobDefinition[Any, Any]) -> None:
        """Add *definition*; raise :class:`DuplicateJobName` if another callable has its name.

        Registering the same function again (a module imported twice) replaces the old entry.
        """
        with self._lock:
            existing = self._definitions.get(definition.name)
            if existing is not None and _origin(existing.target) != _origin(definition.target):
                raise DuplicateJobName(
                    f"job name {definition.name!r} is already registered for "
                    f"{_origin(existing.target)}; cannot register {_origin(definition.target)} "
                    f"under it too. Pass @job(name=...) to tell them apart."
                )
            self._definitions[definition.name] = definition

    def unregister(self, name: str) -> None:
        """Remove the job called *name* (for tests); unknown names are ignored."""
        with self._lock:
            self._definitions.pop(name, None)

    def get(self, name: str) -> JobDefinition[Any, Any]:
        """Return the definition called *name*, or raise :class:`JobNotRegistered`."""
        try:
            return self._definitions[name]
        except KeyError:
            raise JobNotRegistered(
                f"no job named {name!r} is registered; is its module listed in a jobs.py of an "
                "installed app, or imported at start-up?"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._definitions

    def __iter__(self) -> Iterator[JobDefinition[Any, Any]]:
        return iter(list(self._definitions.values()))

    def names(self) -> frozenset[str]:
        """Return the registered job names."""
        return frozenset(self._definitions)


def _origin(target: Callable[..., Any]) -> str:
    return f"{target.__module__}.{target.__qualname__}"


#: The process-wide registry that ``@job`` writes to and workers read from.
registry = Registry()


@overload
def job(target: T, /) -> T: ...  # type: ignore[overload-overlap]
@overload
def job(target: Callable[P, R], /) -> JobDefinition[P, R]: ...
@overload
def job(
    *,
    name: str | None = None,
    queue: str | None = None,
    priority: int = 0,
    max_retries: int | None = None,
    timeout: float | dt.timedelta | None = None,
    backoff: Backoff | None = None,
    at_most_once: bool = False,
    unique: bool = False,
    cron: str | Cron | Sequence[str | Cron] | None = None,
    api: bool = False,
    concurrency: int | None = None,
    concurrency_key: ConcurrencyKey | None = None,
    rate_limit: str | None = None,
) -> Callable[[Callable[P, R]], JobDefinition[P, R]]: ...
def job(
    target: Any = None,
    /,
    *,
    name: str | None = None,
    queue: str | None = None,
    priority: int = 0,
    max_retries: int | None = None,
    timeout: float | dt.timedelta | None = None,
    backoff: Backoff | None = None,
    at_most_once: bool = False,
    unique: bool = False,
    cron: str | Cron | Sequence[str | Cron] | None = None,
    api: bool = False,
    concurrency: int | None = None,
    concurrency_key: ConcurrencyKey | None = None,
    rate_limit: str | None = None,
) -> Any:
    """Register a function (``def`` or ``async def``) or a class with ``handle()`` as a job.

    Options: *name* (default ``"<module>.<qualname>"``), *queue* (default
    ``ASYNCJOBS["DEFAULT_QUEUE"]``), *priority* (higher runs first), *max_retries* and *timeout*
    in seconds (defaults from settings; ``timeout=0`` means no limit), *backoff* (a
    :class:`~django_asyncjobs.retry.Backoff`), *at_most_once* (an attempt whose worker died or
    stopped mid-job is failed, never run again: for jobs that must not run twice), *unique*
    (while a job with the same name and arguments is scheduled, queued or running, ``delay()``
    returns it instead of storing another), *cron* (a cron expression, a
    :class:`~django_asyncjobs.cron.Cron` with arguments and a time zone, or a list of them:
    the scheduler enqueues each occurrence exactly once), *api* (may be created over the HTTP
    jobs API, ``django_asyncjobs.api``), *concurrency* (at most this many of the job queued or
    running at once, fleet wide; per key when *concurrency_key*, a callable given the job's
    arguments that returns a str, e.g. one per customer), *rate_limit* (at most this many
    starts per period, fleet wide: ``"10/s"``, ``"100/m"``, ``"1000/h"``; retries count)::

        @job
        def add(a: int, b: int) -> int:
            return a + b

        @job(queue="high", priority=10, max_retries=3, timeout=60)
        async def fetch(url: str) -> str: ...

        @job(concurrency=1, concurrency_key=lambda customer_id, **_: str(customer_id))
        def sync_customer(customer_id: int) -> None: ...

        @job(rate_limit="100/m")
        def call_partner_api(order_id: int) -> None: ...

        @job
        class SayHello:
            def __init__(self, name: str) -> None:
                self.name = name

            def handle(self) -> str:
                return f"hello {self.name}"

        SayHello.delay(name="Ada")

    A decorated function becomes a :class:`JobDefinition` (still callable inline); a decorated
    class stays the class, with ``delay``, ``using`` and ``job_definition`` added.
    """
    if queue is not None:
        check_queue(queue)
    check_priority(priority)
    if max_retries is not None and (
        not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0
    ):
        raise ValueError(f"max_retries must be an int of 0 or more, not {max_retries!r}")
    timeout_seconds = _timeout_seconds(timeout)
    crons = as_crons(cron)
    concurrency, concurrency_key = check_concurrency(concurrency, concurrency_key)
    rate = parse_rate(rate_limit) if rate_limit is not None else None
    for flag, value in (("at_most_once", at_most_once), ("unique", unique), ("api", api)):
        if not isinstance(value, bool):
            raise ValueError(f"{flag} must be True or False, not {value!r}")

    def decorate(target: Any) -> Any:
        if not callable(target):
            raise TypeError(f"@job decorates functions and classes, not {target!r}")
        job_name = name or f"{target.__module__}.{target.__qualname__}"
        if not isinstance(job_name, str) or not 0 < len(job_name) <= 255:
            raise ValueError(f"job names are 1 to 255 characters, not {job_name!r}")
        definition: JobDefinition[Any, Any] = JobDefinition(
            target,
            name=job_name,
            queue=queue,
            priority=priority,
            max_retries=max_retries,
            timeout=timeout_seconds,
            backoff=backoff,
            at_most_once=at_most_once,
            unique=unique,
            crons=crons,
            api=api,
            concurrency=concurrency,
            concurrency_key=concurrency_key,
            rate_limit=rate,
        )
        registry.register(definition)
        if definition.is_class:
            target.job_definition = definition
            target.delay = definition.delay
            target.using = definition.using
            target.delay_many = definition.delay_many
            return target
        return definition

    return decorate(target) if target is not None else decorate
