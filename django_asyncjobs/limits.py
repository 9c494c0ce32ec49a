"""Concurrency and rate limits: how they are written, checked, and keyed.

Both are enforced by the scheduler where it relays due jobs (``queries/relay.py``): a job over a
limit stays ``scheduled`` in PostgreSQL and costs no SQS request until it may start.

- A **concurrency limit** (``@job(concurrency=N, concurrency_key=...)``) holds at most *N* jobs
  with the same key queued or running at once, across every worker and host. The key is stored
  on the row when the job is enqueued (:func:`concurrency_key_for`), with the limit.
- A **rate limit** (``@job(rate_limit="100/m")``, or ``ASYNCJOBS["QUEUE_RATE_LIMITS"]`` per
  queue) lets at most *count* attempts start in any sliding window of *period* seconds, fleet
  wide: attempts started in the window (from the attempt history) plus jobs sent and not yet
  started. Retries and rescued re-runs are attempts and count.

Pure: nothing here reads the database.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Longest stored concurrency key (the column's size).
MAX_CONCURRENCY_KEY_LENGTH = 255
#: The periods a rate may name, in seconds.
PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*$")

ConcurrencyKey = Callable[..., str]


@dataclass(frozen=True, slots=True, kw_only=True)
class Rate:
    """At most *count* starts per *period_seconds* (a sliding window).

    >>> parse_rate("100/m")
    Rate(count=100, period_seconds=60)
    >>> str(parse_rate("5/10s"))
    '5/10s'
    """

    count: int
    period_seconds: int

    def __str__(self) -> str:
        for unit, seconds in sorted(PERIOD_SECONDS.items(), key=lambda kv: -kv[1]):
            if self.period_seconds % seconds == 0:
                multiple = self.period_seconds // seconds
                return f"{self.count}/{'' if multiple == 1 else multiple}{unit}"
        return f"{self.count}/{self.period_seconds}s"  # pragma: no cover - "s" always divides


def parse_rate(value: object, *, field: str = "rate_limit") -> Rate:
    """Return the :class:`Rate` that *value* ("10/s", "100/m", "1000/h", "5/10s") writes.

    Raises :class:`ValueError` naming *field* and the accepted forms for anything else: a
    count of 0, an unknown unit, a number where a string belongs.

    >>> parse_rate("1000/h")
    Rate(count=1000, period_seconds=3600)
    >>> parse_rate("10/x")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: rate_limit must look like "10/s", "100/m", "1000/h" or "5/10s" ..., not '10/x'
    """
    match = _RATE.match(value) if isinstance(value, str) else None
    if match is not None:
        count, multiple, unit = int(match[1]), int(match[2] or 1), match[3]
        if count >= 1 and multiple >= 1:
            return Rate(count=count, period_seconds=multiple * PERIOD_SECONDS[unit])
    raise ValueError(
        f'{field} must look like "10/s", "100/m", "1000/h" or "5/10s" (a count of 1 or more '
        f"per s, m, h or d), not {value!r}"
    )


def check_concurrency(
    concurrency: object, concurrency_key: object
) -> tuple[int | None, ConcurrencyKey | None]:
    """Check ``@job``'s *concurrency* and *concurrency_key*; return them.

    Raises :class:`ValueError` for a limit that is not an int of 1 or more, and for a key
    without a limit; :class:`TypeError` for a key that is not callable.

    >>> check_concurrency(2, None)
    (2, None)
    """
    if concurrency is not None and (
        not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1
    ):
        raise ValueError(f"concurrency must be an int of 1 or more, not {concurrency!r}")
    if concurrency_key is not None:
        if concurrency is None:
            raise ValueError("concurrency_key needs concurrency=N, the most jobs per key at once")
        if not callable(concurrency_key):
            raise TypeError(
                "concurrency_key must be a callable taking the job's arguments and returning a "
                f"str (e.g. lambda customer_id, **_: str(customer_id)), not {concurrency_key!r}"
            )
    return concurrency, concurrency_key


def concurrency_key_for(
    name: str,
    key: ConcurrencyKey | None,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
) -> str:
    """Return the stored key of a job called *name* with these arguments: ``name`` alone
    without a *key* callable, else ``name:key(*args, **kwargs)``.

    Keys are scoped by job name: two jobs share a limit only if they are the same job.
    Raises :class:`ValueError` when *key* returns something else than a non-empty string, or
    a key too long for the column.

    >>> concurrency_key_for("app.sync", lambda customer, **_: f"c{customer}", [42], {})
    'app.sync:c42'
    """
    if key is None:
        return name
    value = key(*args, **kwargs)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name}: concurrency_key must return a non-empty str, not {value!r}")
    stored = f"{name}:{value}"
    if len(stored) > MAX_CONCURRENCY_KEY_LENGTH:
        raise ValueError(
            f"{name}: concurrency key {stored[:40]!r}... is {len(stored)} characters; job name "
            f"and key together must fit {MAX_CONCURRENCY_KEY_LENGTH}"
        )
    return stored
