"""The range of timestamps a job row may hold: what Python can read back in any time zone.

PostgreSQL's ``timestamptz`` spans 4713 BC to 294276 AD; Python's ``datetime`` spans the years 1 to
9999. A row outside Python's range cannot be loaded by psycopg at all, so one such row would break
every page and command that lists jobs. Keeping a day away from either end leaves room for any time
zone's offset when a value is shown in local time. The database enforces the same range with a
CHECK constraint (``asyncjobs_run_at_in_range``), so raw SQL cannot store what Python cannot read.
"""

from __future__ import annotations

import datetime as dt

#: Earliest ``run_at`` a job may have (UTC): one day after ``datetime.min``.
EARLIEST_TIMESTAMP = dt.datetime(1, 1, 2, tzinfo=dt.UTC)
#: Latest ``run_at`` a job may have (UTC): one day before ``datetime.max``.
LATEST_TIMESTAMP = dt.datetime(9999, 12, 30, tzinfo=dt.UTC)
#: The same bounds as SQL literals, for statements that compute a time in the database.
EARLIEST_SQL = "'0001-01-02 00:00:00+00'::timestamptz"
LATEST_SQL = "'9999-12-30 00:00:00+00'::timestamptz"


def clamp_sql(expression: str) -> str:
    """Return SQL for the ``timestamptz`` *expression* moved into the range, for reading back.

    For NOT NULL values: ``GREATEST`` and ``LEAST`` skip NULLs, so NULL would become a bound.

    >>> clamp_sql("run_at")
    "LEAST(GREATEST(run_at, '0001-01-02 00:00:00+00'::timestamptz), '9999-12-30 ...'::timestamptz)"
    """
    return f"LEAST(GREATEST({expression}, {EARLIEST_SQL}), {LATEST_SQL})"


def timestamp_error(value: dt.datetime, *, field: str) -> str:
    """Return why *value* cannot be stored in *field*, or ``""`` when it can.

    >>> timestamp_error(dt.datetime(2026, 1, 1, tzinfo=dt.UTC), field="run_at")
    ''
    """
    if value.tzinfo is None or value.utcoffset() is None:
        return f"{field}={value.isoformat()} is a naive datetime; pass an aware one"
    try:
        utc = value.astimezone(dt.UTC)
    except OverflowError:
        utc = None
    if utc is None or not EARLIEST_TIMESTAMP <= utc <= LATEST_TIMESTAMP:
        return (
            f"{field}={value.isoformat()} is outside the supported range "
            f"{EARLIEST_TIMESTAMP.isoformat()} to {LATEST_TIMESTAMP.isoformat()} (UTC)"
        )
    return ""


def check_timestamp(value: dt.datetime, *, field: str) -> dt.datetime:
    """Return *value* when a job row can hold it, else raise :class:`ValueError` naming *field*.

    >>> check_timestamp(dt.datetime(9999, 12, 31, 23, 0, tzinfo=dt.UTC), field="run_at")
    Traceback (most recent call last):
    ...
    ValueError: run_at=9999-12-31T23:00:00+00:00 is outside the supported range ...
    """
    problem = timestamp_error(value, field=field)
    if problem:
        raise ValueError(problem)
    return value


def check_delay_seconds(seconds: float, *, field: str, now: dt.datetime | None = None) -> float:
    """Return *seconds* when ``now + seconds`` is a storable time, else raise ``ValueError``.

    NaN and infinities are refused too.

    >>> check_delay_seconds(60, field="run_after")
    60
    """
    start = now or dt.datetime.now(dt.UTC)
    room = (LATEST_TIMESTAMP - start).total_seconds()
    if not seconds <= room:  # also refuses NaN
        raise ValueError(
            f"{field}={seconds!r} seconds from now is past {LATEST_TIMESTAMP.isoformat()}, "
            "the latest time a job may be scheduled for"
        )
    # A negative delay (a timedelta into the past) only makes the job due at once; one that
    # reaches back before the earliest time is refused all the same.
    if seconds < (EARLIEST_TIMESTAMP - start).total_seconds():
        raise ValueError(
            f"{field}={seconds!r} seconds from now is before {EARLIEST_TIMESTAMP.isoformat()}, "
            "the earliest time a job may be scheduled for"
        )
    return seconds
