"""Cron schedules as values: parse, check, and compute occurrences (croniter, nothing else).

A :class:`Cron` knows nothing of jobs, rows or the database; :mod:`~django_asyncjobs.periodic`
binds schedules to jobs and enqueues their occurrences. Occurrences are computed in the
schedule's time zone and returned as aware datetimes.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from croniter import CroniterBadDateError, croniter

from .timebounds import LATEST_TIMESTAMP

#: What happens to occurrences missed while no scheduler ran: run the latest one once (default),
#: run each of them (at most MAX_CATCH_UP), or skip them.
MISSED_POLICIES = ("once", "all", "skip")
MAX_CATCH_UP = 100


@dataclass(frozen=True, slots=True)
class Cron:
    """A cron schedule for a job, with the arguments each occurrence gets.

    ``@job(cron="*/5 * * * *")`` is ``Cron("*/5 * * * *")``. *missed*: ``"once"`` (default)
    runs one occurrence for all those missed while no scheduler ran, ``"all"`` runs each (at
    most 100), ``"skip"`` runs none of them.

    >>> nightly = Cron("0 3 * * *", kwargs={"full": True}, timezone="Europe/Paris")
    >>> nightly.problem() is None
    True
    >>> nightly.next_after(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    datetime.datetime(2026, 1, 1, 3, 0, tzinfo=zoneinfo.ZoneInfo(key='Europe/Paris'))

    Example::

        @job(cron=Cron("0 3 * * *", kwargs={"full": True}, timezone="Europe/Paris"))
        def backup(full: bool = False) -> None: ...
    """

    expression: str
    _: KW_ONLY
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    timezone: str = "UTC"
    missed: str = "once"
    queue: str | None = None
    priority: int | None = None

    def problem(self) -> str | None:
        """Return what is wrong with this schedule, or ``None``.

        >>> Cron("every day").problem()
        "'every day' is not a valid cron expression (e.g. '*/5 * * * *')"
        """
        if not isinstance(self.expression, str) or not croniter.is_valid(self.expression):
            return f"{self.expression!r} is not a valid cron expression (e.g. '*/5 * * * *')"
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
            return f"{self.timezone!r} is not a known time zone (e.g. 'Europe/Paris')"
        if self.missed not in MISSED_POLICIES:
            return f"missed={self.missed!r} must be one of {MISSED_POLICIES}"
        return None

    def occurrences(self, after: dt.datetime, until: dt.datetime) -> Iterator[dt.datetime]:
        """Yield occurrences in ``(after, until]``, as aware datetimes.

        >>> start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        >>> [o.hour for o in Cron("0 */6 * * *").occurrences(start, start + dt.timedelta(days=1))]
        [6, 12, 18, 0]
        """
        zone = zoneinfo.ZoneInfo(self.timezone)
        found = croniter(self.expression, after.astimezone(zone)).all_next(dt.datetime)
        while True:
            try:
                occurrence = next(found)
            except (StopIteration, CroniterBadDateError):  # the schedule has no more
                return
            if occurrence > until:
                return
            yield occurrence

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        """Return the first occurrence after *moment*; ``LATEST_TIMESTAMP`` when there is none.

        A valid expression can have no occurrence (``0 0 30 2 *``, or a year field that has
        passed): its schedule then waits for ever instead of failing every scheduler pass, and
        the system check warns about it (asyncjobs.W002).

        >>> Cron("0 0 30 2 *").next_after(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        datetime.datetime(9999, 12, 30, 0, 0, tzinfo=datetime.timezone.utc)
        """
        zone = zoneinfo.ZoneInfo(self.timezone)
        try:
            occurrence: dt.datetime = croniter(self.expression, moment.astimezone(zone)).get_next(
                dt.datetime
            )
        except CroniterBadDateError:
            return LATEST_TIMESTAMP
        return min(occurrence, LATEST_TIMESTAMP)

    def fires_after(self, moment: dt.datetime) -> bool:
        """Return whether the schedule has an occurrence after *moment*.

        >>> Cron("0 0 30 2 *").fires_after(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        False
        """
        return self.next_after(moment) < LATEST_TIMESTAMP


def as_crons(value: str | Cron | Sequence[str | Cron] | None) -> tuple[Cron, ...]:
    """Normalise the ``cron=`` argument of ``@job``.

    >>> [cron.expression for cron in as_crons(["*/5 * * * *", Cron("0 3 * * *")])]
    ['*/5 * * * *', '0 3 * * *']
    """
    if value is None:
        return ()
    if isinstance(value, str | Cron):
        value = [value]
    crons = tuple(Cron(expression=v) if isinstance(v, str) else v for v in value)
    for cron in crons:
        if not isinstance(cron, Cron):
            raise TypeError(f"cron takes expressions or Cron(...) objects, not {cron!r}")
    return crons
