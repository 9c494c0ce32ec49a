"""The queries of code that enqueues jobs: insert one or many, unique keys, and dependencies.

``delay()``, ``delay_many()``, cron occurrences, the HTTP API and "run again" all come here. The
scheduler comes here too for the other half of dependencies: releasing jobs whose dependencies
succeeded, cancelling those whose dependencies cannot.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import uuid
from collections.abc import Collection, Sequence
from typing import Any

from .. import signals, tracing
from ..status import JobStatus
from ._sql import (
    ACTIVE_SQL,
    ACTIVE_STATUSES,
    NOTIFY_CHANNEL,
    UNMET_DEPENDENCY_SQL,
    JobT,
    Ledger,
    columns,
    row,
    table,
)

#: ``run_at`` of a new job: the transaction's now, a delay from it in seconds, or a timestamp.
_RUN_AT_SQL = {
    "now": "now()",
    "delay": "now() + %(run_at)s * interval '1 second'",
    "at": "%(run_at)s",
}


@functools.lru_cache(maxsize=64)
def _insert_sql(
    jobs_table: str, *, single: bool, run_at: str, dependencies: bool, unique: bool
) -> str:
    """The INSERT behind every enqueue, for one shape of call (built once per shape).

    *single*: ``delay()``'s one job, a SELECT of parameters, which PostgreSQL plans in half the
    time of the ``unnest()`` of a batch (0.55 vs 1.2 ms, measured unprepared as Django runs
    statements); its RETURNING notifies the scheduler. A batch returns one summary row instead
    of one per job. Without a unique key no row can conflict (NULL keys never do), so the
    ON CONFLICT clause, whose index inference costs planning time, is left out.

    >>> "unnest" in _insert_sql("asyncjobs_job", single=False, run_at="now",
    ...                         dependencies=False, unique=False)
    True
    """
    # A dependency deleted since _check_dependencies() keeps the job blocked (and cancel_orphans()
    # then cancels it); it never counts as succeeded.
    blocked_sql = (
        UNMET_DEPENDENCY_SQL.format(table=jobs_table, depends_on="%(depends_on)s::uuid[]")
        if dependencies
        else "false"
    )
    if single:
        id_sql, args_sql, kwargs_sql = "%(id)s::uuid", "%(arg)s::jsonb", "%(kwarg)s::jsonb"
        key_sql, limit_key_sql = "%(unique_key)s::text", "%(concurrency_key)s::text"
        source = ""
    else:
        # The arguments of a batch come as one JSON array of [args, kwargs] pairs: one string to
        # encode, send and parse instead of two text arrays of one document per job (10,000
        # jobs: 40 ms on the wire and in the server against 130, and one json.dumps() call).
        # As json, not jsonb, which caps a value at 256 MB: a batch may hold more than that
        # (each job up to MAX_PAYLOAD_BYTES); each job's two values become jsonb on their own.
        id_sql = "r.id"
        args_sql, kwargs_sql = "(r.arguments -> 0)::jsonb", "(r.arguments -> 1)::jsonb"
        key_sql, limit_key_sql = "r.unique_key", "r.concurrency_key"
        source = """
            FROM ROWS FROM (unnest(%(ids)s::uuid[]), json_array_elements(%(arguments)s::json),
                unnest(%(unique_keys)s::text[]), unnest(%(concurrency_keys)s::text[]))
                WITH ORDINALITY AS r(id, arguments, unique_key, concurrency_key, n)
            ORDER BY r.n"""
    conflict = (
        f"ON CONFLICT (unique_key) WHERE status IN ({ACTIVE_SQL}) DO NOTHING" if unique else ""
    )
    insert = f"""
        INSERT INTO {jobs_table} (
            id, name, args, kwargs, queue, priority, status, run_at, attempts,
            total_attempts, interruptions, max_retries, at_most_once, refused_deliveries,
            timeout, error, traceback, note, created_at, worker, task_backend, unique_key,
            depends_on, blocked, concurrency_key, concurrency_limit, trace_context
        )
        SELECT {id_sql}, %(name)s, {args_sql}, {kwargs_sql}, %(queue)s, %(priority)s,
            '{JobStatus.SCHEDULED.value}', {_RUN_AT_SQL[run_at]}, 0, 0, 0, %(max_retries)s,
            %(at_most_once)s, 0, %(timeout)s, '', '', '', now(), '', %(task_backend)s,
            {key_sql}, %(depends_on)s::uuid[], {blocked_sql}, {limit_key_sql},
            CASE WHEN {limit_key_sql} IS NULL THEN NULL ELSE %(concurrency_limit)s::integer END,
            %(trace_context)s::jsonb
        {source}
        {conflict}
    """
    if single:
        sql = f"""{insert}
            RETURNING array[id], created_at, run_at, blocked, pg_notify(%(channel)s, '')"""
    # One row: created_at, run_at and blocked are the same for every row (now() is the
    # transaction's time), and a large batch should not parse them a million times.
    else:
        sql = f"""
            WITH inserted AS ({insert} RETURNING id, created_at, run_at, blocked)
            SELECT array_agg(id), max(created_at), max(run_at), bool_or(blocked),
                (SELECT pg_notify(%(channel)s, '') FROM inserted LIMIT 1) FROM inserted
        """
    # One line, a third of the bytes: sent and parsed on every delay(). (No "--" comments or
    # literals with runs of spaces in it, so nothing changes meaning.)
    return " ".join(sql.split())


@functools.lru_cache(maxsize=16)
def _instance_layout(model: type[Any]) -> tuple[list[str], dict[str, int]]:
    """``from_db()``'s field names for *model* and where the fields that differ between the jobs
    of one insert sit among them (worked out once, not on every ``delay()``)."""
    fields = [field.attname for field in model._meta.concrete_fields]
    per_job = ("id", "args", "kwargs", "unique_key", "concurrency_key", "concurrency_limit")
    return fields, {name: fields.index(name) for name in per_job}


class EnqueueQueries(Ledger[JobT]):
    """Insert jobs (one statement and one NOTIFY per batch) and move them along their
    dependencies."""

    def enqueue(
        self,
        *,
        name: str,
        args: list[Any],
        kwargs: dict[str, Any],
        queue: str,
        priority: int,
        max_retries: int,
        timeout_seconds: float | None,
        run_after: dt.timedelta | dt.datetime | None = None,
        unique_key: str | None = None,
        depends_on: Sequence[uuid.UUID] = (),
        at_most_once: bool = False,
        task_backend: str = "",
        concurrency_key: str | None = None,
        concurrency_limit: int | None = None,
    ) -> JobT:
        """Insert one ``scheduled`` job and NOTIFY the scheduler, in one statement.

        See :meth:`enqueue_many`; with a *unique_key* that an active job holds, that job is
        returned instead.
        """
        (job,) = self.enqueue_many(
            name=name,
            arguments=[(args, kwargs)],
            unique_keys=[unique_key],
            queue=queue,
            priority=priority,
            max_retries=max_retries,
            timeout_seconds=timeout_seconds,
            run_after=run_after,
            depends_on=depends_on,
            at_most_once=at_most_once,
            task_backend=task_backend,
            concurrency_keys=[concurrency_key],
            concurrency_limit=concurrency_limit,
        )
        return job

    def enqueue_many(
        self,
        *,
        name: str,
        arguments: Sequence[tuple[list[Any], dict[str, Any]]],
        queue: str,
        priority: int,
        max_retries: int,
        timeout_seconds: float | None,
        run_after: dt.timedelta | dt.datetime | None = None,
        unique_keys: Sequence[str | None] | None = None,
        depends_on: Sequence[uuid.UUID] = (),
        at_most_once: bool = False,
        task_backend: str = "",
        concurrency_keys: Sequence[str | None] | None = None,
        concurrency_limit: int | None = None,
    ) -> list[JobT]:
        """Insert ``scheduled`` jobs, one per ``(args, kwargs)``, with one statement and one NOTIFY.

        The statement joins the caller's transaction: the jobs exist, and the scheduler wakes, only
        if that transaction commits. Nothing here talks to SQS. Arguments must already be checked
        (see :func:`django_asyncjobs.payload.check_arguments`). A job whose unique key an active
        (scheduled, queued or running) job holds is not inserted: that job is returned in its
        place. Jobs with *depends_on* stay ``scheduled`` and blocked until every dependency has
        succeeded; a dependency that does not exist raises :class:`ValueError`. *at_most_once* is
        stored on the rows, so that every rescue path reads the policy without the job's code.
        *concurrency_keys* (one per job) and *concurrency_limit* are stored on the rows too: the
        scheduler keeps at most *concurrency_limit* jobs of one key queued or running.
        """
        keys = list(unique_keys) if unique_keys is not None else [None] * len(arguments)
        if len(keys) != len(arguments):
            raise ValueError("unique_keys must have one entry per job")
        limit_keys = (
            list(concurrency_keys) if concurrency_keys is not None else [None] * len(arguments)
        )
        if len(limit_keys) != len(arguments):
            raise ValueError("concurrency_keys must have one entry per job")
        if concurrency_limit is None:
            limit_keys = [None] * len(arguments)
        dependencies = list(dict.fromkeys(depends_on))
        if dependencies:
            self._check_dependencies(dependencies)
        jobs: dict[int, JobT] = {}
        pending = list(range(len(arguments)))
        for _ in range(3):
            inserted = self._insert(
                name=name,
                rows=[(arguments[i][0], arguments[i][1], keys[i], limit_keys[i]) for i in pending],
                queue=queue,
                priority=priority,
                max_retries=max_retries,
                timeout_seconds=timeout_seconds,
                run_after=run_after,
                depends_on=dependencies,
                at_most_once=at_most_once,
                task_backend=task_backend,
                concurrency_limit=concurrency_limit,
            )
            for position, job in zip(pending, inserted, strict=True):
                if job is not None:
                    jobs[position] = job
            pending = [i for i in pending if i not in jobs]
            if not pending:
                break
            active = {
                row(job).unique_key: job
                for job in self.filter(
                    unique_key__in={keys[i] for i in pending}, status__in=ACTIVE_STATUSES
                )
            }
            for i in pending:
                if keys[i] in active:
                    jobs[i] = active[keys[i]]
            # A key whose active job finished meanwhile is free again: insert once more.
            pending = [i for i in pending if i not in jobs]
            if not pending:
                break
        if pending:
            raise RuntimeError(f"could not enqueue {len(pending)} unique jobs; keys kept changing")
        if dependencies:
            self.cancel_orphans()
        return [jobs[i] for i in range(len(arguments))]

    def _check_dependencies(self, dependencies: list[uuid.UUID]) -> None:
        found = set(self.filter(id__in=dependencies).values_list("id", flat=True))
        missing = [str(d) for d in dependencies if d not in found]
        if missing:
            raise ValueError(f"depends_on names jobs that do not exist: {', '.join(missing)}")

    def _insert(
        self,
        *,
        name: str,
        rows: list[tuple[list[Any], dict[str, Any], str | None, str | None]],
        queue: str,
        priority: int,
        max_retries: int,
        timeout_seconds: float | None,
        run_after: dt.timedelta | dt.datetime | None,
        depends_on: list[uuid.UUID],
        at_most_once: bool,
        task_backend: str,
        concurrency_limit: int | None,
    ) -> list[JobT | None]:
        """Insert *rows*; return the new jobs in order, ``None`` where a unique key was taken."""
        run_at_param: dt.datetime | float | None
        if isinstance(run_after, dt.datetime):
            run_at_kind, run_at_param = "at", run_after
        elif isinstance(run_after, dt.timedelta):
            run_at_kind, run_at_param = "delay", run_after.total_seconds()
        else:
            run_at_kind, run_at_param = "now", None
        ids = [uuid.uuid4() for _ in rows]
        # Every job of a batch is enqueued by the same caller, within the same span.
        trace_context = tracing.current_context()
        sql = _insert_sql(
            table(self.model),
            single=len(rows) == 1,
            run_at=run_at_kind,
            dependencies=bool(depends_on),
            unique=any(key is not None for _, _, key, _ in rows),
        )
        params: dict[str, Any] = {
            "name": name,
            "queue": queue,
            "priority": priority,
            "run_at": run_at_param,
            "max_retries": max_retries,
            "at_most_once": at_most_once,
            "timeout": timeout_seconds,
            "task_backend": task_backend,
            "depends_on": depends_on,
            "succeeded": JobStatus.SUCCEEDED.value,
            "concurrency_limit": concurrency_limit,
            "channel": NOTIFY_CHANNEL,
            "trace_context": None if trace_context is None else json.dumps(trace_context),
        }
        if len(rows) == 1:
            ((args, kwargs, key, limit_key),) = rows
            params |= {"id": ids[0], "arg": json.dumps(args), "kwarg": json.dumps(kwargs)}
            params |= {"unique_key": key, "concurrency_key": limit_key}
        else:
            params |= {
                "ids": ids,
                "arguments": json.dumps(
                    [[args, kwargs] for args, kwargs, _, _ in rows], separators=(",", ":")
                ),
                "unique_keys": [key for _, _, key, _ in rows],
                "concurrency_keys": [key for _, _, _, key in rows],
            }
        _, summary_rows = self._execute(sql, params, prepared=len(rows) == 1)
        # The single row's statement returns no row when its unique key was taken.
        ((inserted_ids, created_at, run_at, blocked, _),) = summary_rows or [(None,) * 5]
        stored = set(inserted_ids or ())
        # Model.from_db with every field in order takes Django's fast positional path.
        fields, at = _instance_layout(self.model)
        common = {
            "name": name,
            "queue": queue,
            "priority": priority,
            "status": JobStatus.SCHEDULED.value,
            "run_at": run_at,
            "attempts": 0,
            "total_attempts": 0,
            "interruptions": 0,
            "max_retries": max_retries,
            "at_most_once": at_most_once,
            "refused_deliveries": 0,
            "timeout": timeout_seconds,
            "task_backend": task_backend,
            "created_at": created_at,
            "depends_on": depends_on,
            "blocked": bool(blocked),
            "error": "",
            "traceback": "",
            "note": "",
            "worker": "",
            "trace_context": trace_context,
        }
        # One list of every field's value, copied per job with its own values put in: a bulk
        # enqueue builds thousands of instances.
        template = [common.get(field) for field in fields]
        alias = self._db_alias
        jobs: list[JobT | None] = []
        for job_id, (args, kwargs, key, limit_key) in zip(ids, rows, strict=True):
            if job_id not in stored:
                jobs.append(None)
                continue
            values = template.copy()
            values[at["id"]] = job_id
            values[at["args"]] = args
            values[at["kwargs"]] = kwargs
            values[at["unique_key"]] = key
            values[at["concurrency_key"]] = limit_key
            values[at["concurrency_limit"]] = None if limit_key is None else concurrency_limit
            jobs.append(self.model.from_db(alias, fields, values))
        signals.send_many_after_commit(
            [row(job) for job in jobs if job is not None],
            old_status=None,
            signal=signals.job_enqueued,
            using=self._db_alias,
        )
        return jobs

    # -- dependencies ----------------------------------------------------------------------------

    def release_ready(self) -> int:
        """Unblock scheduled jobs whose dependencies all exist and have succeeded; return how many.

        A dependency whose row was deleted is not a success: its dependents stay blocked, and
        :meth:`cancel_orphans` cancels them.
        """
        jobs_table = table(self.model)
        unmet = UNMET_DEPENDENCY_SQL.format(table=jobs_table, depends_on="j.depends_on")
        sql = f"""
            UPDATE {jobs_table} AS j SET blocked = false, run_at = greatest(j.run_at, now())
            WHERE j.blocked AND j.status = %(scheduled)s AND NOT {unmet}
        """
        released, _ = self._execute(
            sql, {"scheduled": JobStatus.SCHEDULED.value, "succeeded": JobStatus.SUCCEEDED.value}
        )
        return released

    def cancel_orphans(self) -> int:
        """Cancel blocked jobs one of whose dependencies failed, was cancelled or was deleted;
        return how many.

        The error names the dependency: ``Cancelled: dependency <id> (<name>) failed``, or
        ``Cancelled: dependency <id> was deleted``. Each cancelled job sends ``job_cancelled``.
        Repeats until no more change, so a chain a -> b -> c is cancelled to its end.
        """
        jobs_table = table(self.model)
        sql = f"""
            WITH doomed AS (
                SELECT j.id, coalesce((
                    SELECT d.id::text || ' (' || d.name || ') ' || d.status FROM {jobs_table} AS d
                    WHERE d.id = ANY(j.depends_on) AND d.status IN (%(failed)s, %(cancelled)s)
                    LIMIT 1
                ), (
                    SELECT dep.id::text || ' was deleted' FROM unnest(j.depends_on) AS dep(id)
                    WHERE NOT EXISTS (SELECT 1 FROM {jobs_table} AS d WHERE d.id = dep.id)
                    LIMIT 1
                )) AS reason
                FROM {jobs_table} AS j
                WHERE j.blocked AND j.status = %(scheduled)s
                FOR UPDATE OF j SKIP LOCKED
            )
            UPDATE {jobs_table} AS j
            SET status = %(cancelled)s, blocked = false, finished_at = now(),
                error = 'Cancelled: dependency ' || doomed.reason
            FROM doomed WHERE j.id = doomed.id AND doomed.reason IS NOT NULL
            RETURNING {columns(self.model, prefix="j.")}
        """
        params = {
            "failed": JobStatus.FAILED.value,
            "cancelled": JobStatus.CANCELLED.value,
            "scheduled": JobStatus.SCHEDULED.value,
        }
        total = 0
        while True:
            jobs = self._returning_many(sql, params)
            for job in jobs:
                self._announce(job, old_status=JobStatus.SCHEDULED, signal=signals.job_cancelled)
            total += len(jobs)
            if not jobs:
                return total

    def waiting_for(self, ids: Collection[uuid.UUID], *, limit: int = 100) -> list[JobT]:
        """Return blocked jobs, not themselves in *ids*, that wait for one of *ids* to succeed.

        Oldest first, at most *limit*. Deleting one of *ids* would cancel these jobs (see
        :meth:`cancel_orphans`); the admin refuses such a delete and names them.
        """
        if not ids:
            return []
        sql = f"""
            SELECT {columns(self.model)} FROM {table(self.model)}
            WHERE blocked AND status = %(scheduled)s AND depends_on && %(ids)s::uuid[]
                AND NOT id = ANY(%(ids)s)
            ORDER BY created_at LIMIT %(limit)s
        """
        return self._returning_many(
            sql, {"scheduled": JobStatus.SCHEDULED.value, "ids": list(ids), "limit": limit}
        )
