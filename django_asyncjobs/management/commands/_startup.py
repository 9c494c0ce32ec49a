"""What the long-running commands check before their loop starts, and the line they print.

``runworker``, ``runscheduler`` and ``runjobs`` refuse to start (:class:`CommandError`, exit
status 1, a message that says what to do) on what no retry can mend: a database they cannot
reach within :data:`DATABASE_WAIT_SECONDS`, migrations of django_asyncjobs not applied, a
transport configured wrong (no region, no or rejected credentials). An outage that starts later
is the loops' business: they log it once and retry. What may be right but looks wrong (a queue
nothing uses) is a warning on stderr; the command starts anyway.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import time
from collections.abc import Callable, Iterable, Sequence

from django.core.management.base import CommandError
from django.db import DatabaseError, connections, router
from django.db.migrations.executor import MigrationExecutor

from ...exceptions import TransportError, TransportMisconfigured
from ...models import Job
from ...queues import declared_queues, is_known
from ...transports import Transport
from ...worker import is_pattern

#: How long a command waits at start-up for a database that refuses connections (it may be
#: starting, like the command, after a reboot) before it gives up and exits.
DATABASE_WAIT_SECONDS = 10.0
_DATABASE_RETRY_SECONDS = 1.0
#: Migrations named in full in the refusal; more are counted.
_MIGRATIONS_NAMED = 3

Write = Callable[[str], None]


def check_database(
    command: str,
    *,
    stderr: Write,
    wait_seconds: float = DATABASE_WAIT_SECONDS,
    warn_other_apps: bool = True,
) -> str:
    """Connect to the jobs' database, and check that its migrations are applied.

    Returns the database alias. A connection refused is tried again every second for
    *wait_seconds* (one line on *stderr* says so) before :class:`CommandError`; unapplied
    migrations of django_asyncjobs are a :class:`CommandError` at once, those of other apps a
    warning on *stderr* (jobs may need their tables, but the queue machinery does not), unless
    not *warn_other_apps*.

    Example::

        using = check_database("runworker", stderr=self.stderr.write)
    """
    using = router.db_for_write(Job)
    _connect(command, using=using, stderr=stderr, wait_seconds=wait_seconds)
    executor = MigrationExecutor(connections[using])
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    ours = [migration.name for migration, _ in plan if migration.app_label == Job._meta.app_label]
    if ours:
        named = ", ".join(ours[:_MIGRATIONS_NAMED])
        more = f" and {len(ours) - _MIGRATIONS_NAMED} more" if len(ours) > _MIGRATIONS_NAMED else ""
        raise CommandError(
            f"{command}: database {using!r} lacks {len(ours)} migration(s) of django_asyncjobs "
            f"({named}{more}); run manage.py migrate"
        )
    others = sorted({migration.app_label for migration, _ in plan})
    if others and warn_other_apps:
        stderr(
            f"{command}: warning: database {using!r} has {len(plan)} unapplied migration(s) of "
            f"{', '.join(others)}; jobs that use their tables may fail: run manage.py migrate"
        )
    return using


def _connect(command: str, *, using: str, stderr: Write, wait_seconds: float) -> None:
    connection = connections[using]
    deadline = time.monotonic() + wait_seconds
    waiting = False
    while True:
        try:
            connection.ensure_connection()
            return
        except DatabaseError as exc:
            error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if time.monotonic() >= deadline:
                params = connection.settings_dict
                raise CommandError(
                    f"{command}: cannot connect to database {using!r} "
                    f"({params.get('HOST') or 'localhost'}:{params.get('PORT') or 5432}/"
                    f"{params.get('NAME')}) after {wait_seconds:g} s: {error}; check "
                    f"DATABASES[{using!r}] (host, port, name, user, password) and that "
                    "PostgreSQL runs"
                ) from exc
            if not waiting:
                stderr(
                    f"{command}: waiting up to {wait_seconds:g} s for database {using!r}: {error}"
                )
                waiting = True
        time.sleep(_DATABASE_RETRY_SECONDS)


def check_transport(command: str, transport: Transport, *, queues: Sequence[str]) -> None:
    """Make one request to the transport; refuse to start if it is configured wrong.

    The request needs what the loop needs: the first queue's URL (for a worker of patterns
    only, the list of queues). An outage is no reason to refuse: the loop retries it.
    """
    names = [queue for queue in queues if not is_pattern(queue)]
    try:
        if names:
            transport.verify(names[0])
        else:
            transport.list_queues()
    except TransportMisconfigured as exc:
        raise CommandError(f"{command}: the transport is configured wrong: {exc}") from exc
    except TransportError:
        pass  # SQS unreachable: the loop logs it once and retries, as after any outage


def unknown_queue_warnings(
    command: str, queues: Sequence[str], *, existing: Callable[[], Iterable[str]]
) -> list[str]:
    """Return a warning per ``--queues`` entry that no known queue answers to.

    A name that is not known (:func:`~django_asyncjobs.queues.is_known`: no setting, job,
    schedule or job row names it) is most likely a typo: the worker would create its SQS queue
    and wait there while the real one fills up. A pattern is known when it matches a declared
    queue or one that *existing* (the transport's queues) lists. Queues can be chosen at run
    time (``using(queue=...)``), so these are warnings, and the worker starts anyway.

    Example::

        unknown_queue_warnings("runworker", ["high", "defualt"], existing=transport.list_queues)
        # ["runworker: warning: no job uses queue 'defualt': ... Did you mean 'default'? ..."]
    """
    known = declared_queues()
    warnings: list[str] = []
    listed: list[str] | None = None
    for spec in queues:
        if not is_pattern(spec):
            if not is_known(spec):
                warnings.append(
                    f"{command}: warning: no job uses queue {spec!r}: it is not in "
                    'ASYNCJOBS["QUEUES"], and no registered job, schedule or job row names it.'
                    f"{_did_you_mean(spec, known)} Consuming it anyway."
                )
            continue
        if fnmatch.filter(known, spec):
            continue
        if listed is None:
            try:
                listed = list(existing())
            except TransportError:
                listed = []
        if not fnmatch.filter(listed, spec):
            warnings.append(
                f"{command}: warning: pattern {spec!r} matches no queue: none in "
                'ASYNCJOBS["QUEUES"], of a registered job or schedule, or among the existing '
                f"queues.{_did_you_mean(spec, known)} Consuming the queues it matches once they "
                "exist."
            )
    return warnings


def _did_you_mean(spec: str, known: set[str]) -> str:
    close = difflib.get_close_matches(spec, sorted(known), n=1)
    if not close and is_pattern(spec):
        # "reprots-*" against "reports-daily": compare the part before the first wildcard.
        stem = spec[: min(spec.index(c) for c in "*?[" if c in spec)]
        if stem:
            heads = {name[: len(stem)]: name for name in sorted(known, reverse=True)}
            close = [heads[h] for h in difflib.get_close_matches(stem, list(heads), n=1)]
    return f" Did you mean {close[0]!r}?" if close else ""


def startup_line(command: str, *details: str) -> str:
    """Return the one line a long-running command prints when it starts: its pid, then *details*.

    >>> startup_line("runscheduler", "interval 5s")  # doctest: +ELLIPSIS
    'runscheduler: pid ..., interval 5s'
    """
    return ", ".join([f"{command}: pid {os.getpid()}", *details])
