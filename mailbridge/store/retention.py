"""SQL for the retention window (MAILBRIDGE_RETENTION_DAYS): expire old messages."""

from __future__ import annotations

from datetime import datetime

from mailbridge.store.db import Db


async def expire_batch(db: Db, account_id: int, cutoff: datetime, *, batch: int = 1000) -> int:
    """Delete up to `batch` of the account's messages older than `cutoff` (by their
    internal date, else their Date header), with one `messages_expired` event, in one
    transaction.  Returns how many went; 0 when none is left."""
    return int(await db.fetchval(
        """WITH victims AS (
               SELECT id FROM messages
               WHERE account_id = $1 AND coalesce(internal_date, sent_at) < $2
               ORDER BY coalesce(internal_date, sent_at) LIMIT $3
           ), gone AS (
               DELETE FROM messages m USING victims v WHERE m.id = v.id RETURNING m.folder_id
           ), counted AS (SELECT count(*) AS n FROM gone), ev AS (
               INSERT INTO events (account_id, kind, payload)
               SELECT $1, 'messages_expired', jsonb_build_object('count', n, 'before', $2::timestamptz)
               FROM counted WHERE n > 0
           )
           SELECT n FROM counted""",
        account_id, cutoff, batch))
