"""Operators' transitions of a queue: pause and resume, each one conditional statement.

The pause is a row of the queue state table (``QueueState``); the statements of the relay
(:mod:`.relay`) and of the claim (:mod:`.claim`) read it through
:func:`._sql.paused_sql`, so a pause needs no change to any job row and survives restarts.
"""

from __future__ import annotations

from typing import TypeVar

from django.db import models

from ._sql import NOTIFY_CHANNEL, Ledger, table

#: The model of :class:`QueueStateManager`: ``django_asyncjobs.models.QueueState``.
QueueT = TypeVar("QueueT", bound=models.Model)


class QueueStateManager(Ledger[QueueT]):
    """``QueueState.objects``: pause and resume queues, and read which are paused."""

    def pause(self, name: str, *, by: str, reason: str = "") -> QueueT | None:
        """Pause queue *name*; return its row, or ``None`` when it was paused already.

        From the commit on, the scheduler sends none of its jobs and workers start none. An
        existing pause is left as it is (its time, author and reason are not overwritten).
        Whether *name* is a queue anybody uses is the caller's question
        (:func:`django_asyncjobs.queues.pause` asks it).

        Example::

            QueueState.objects.pause("emails", by="alice", reason="SMTP down")
        """
        states = table(self.model)
        sql = f"""
            INSERT INTO {states} AS s
                (name, paused, paused_at, paused_by, reason, resumed_at, resumed_by)
            VALUES (%(name)s, true, now(), %(by)s, %(reason)s, NULL, '')
            ON CONFLICT (name) DO UPDATE
            SET paused = true, paused_at = now(), paused_by = EXCLUDED.paused_by,
                reason = EXCLUDED.reason, resumed_at = NULL, resumed_by = ''
            WHERE NOT s.paused
            RETURNING *
        """
        return self._returning(sql, {"name": name, "by": by, "reason": reason})

    def resume(self, name: str, *, by: str) -> QueueT | None:
        """Resume queue *name*; return its row, or ``None`` when it was not paused.

        Wakes the scheduler at commit (NOTIFY), so the queue's due jobs are sent at once
        rather than at its next poll. The row keeps the pause it ended (time, author, reason).

        Example::

            QueueState.objects.resume("emails", by="alice")
        """
        sql = f"""
            WITH changed AS (
                UPDATE {table(self.model)}
                SET paused = false, resumed_at = now(), resumed_by = %(by)s
                WHERE name = %(name)s AND paused
                RETURNING *
            )
            SELECT changed.*, (SELECT pg_notify(%(channel)s, '')) AS woke FROM changed
        """
        return self._returning(sql, {"name": name, "by": by, "channel": NOTIFY_CHANNEL})

    def paused(self) -> dict[str, QueueT]:
        """Return the paused queues' rows by queue name (the table holds one row a queue)."""
        return {row.pk: row for row in self.filter(paused=True)}
