"""The full-text search index (sql/0003): written with new rows, queued for changed ones.

A batch write (`mailbridge.store.messages.upsert`) writes the ``message_search``
document of each row it inserts in the same statement, so a new message is searchable
through the index as soon as it is committed (an initial sync leaves nothing to build
afterwards), and queues the ids of the rows it changed in ``search_pending``: a
document built from an older version of a row by the indexer running meanwhile could
overwrite the new one, a queued id cannot be lost that way.  `index_pending` turns
queued ids (changed rows, and every row after a migration changing the document) into
documents; `matching_ids_sql` finds an account's messages for a query exactly whether
or not their documents are built yet.
"""

from __future__ import annotations

from mailbridge.store.db import Db

# the document of a messages row aliased `alias` (sql/0002's function)
def document_of(alias: str) -> str:
    return (f"mailbridge_message_search({alias}.subject, {alias}.from_name, {alias}.from_email, "
            f"{alias}.to_emails, {alias}.cc_emails)")


# One statement, so one transaction: the queue rows it takes are deleted in the same
# commit that writes their documents (a crash or cancel leaves both as they were).
# SKIP LOCKED lets two processes index side by side; ids of rows deleted since they were
# queued are simply dropped.  `= ANY (ARRAY(...))` keeps both lookups on the primary keys
# (a join let the planner scan the whole queue and the whole messages table per batch).
_INDEX_PENDING = f"""
WITH taken AS (
    DELETE FROM search_pending WHERE message_id = ANY (ARRAY(
        SELECT message_id FROM search_pending ORDER BY message_id LIMIT $1 FOR UPDATE SKIP LOCKED))
    RETURNING message_id
), written AS (
    INSERT INTO message_search (message_id, account_id, document)
    SELECT m.id, m.account_id, {document_of('m')}
    FROM messages m WHERE m.id = ANY (ARRAY(SELECT message_id FROM taken))
    ON CONFLICT (message_id) DO UPDATE SET document = EXCLUDED.document
    RETURNING 1
)
SELECT (SELECT count(*) FROM taken) AS taken, (SELECT count(*) FROM written) AS written
"""


async def index_pending(db: Db, limit: int = 2000) -> int:
    """Build the documents of up to `limit` queued messages; returns how many ids it took
    off the queue (fewer than `limit`: the queue is empty, or the rest is being indexed
    by another process).  All or nothing: cancelled or failed, the queue is unchanged."""
    row = await db.fetchrow(_INDEX_PENDING, limit)
    assert row is not None  # aggregates: always one row
    return int(row["taken"])


async def pending_count(db: Db) -> int:
    return int(await db.fetchval("SELECT count(*) FROM search_pending"))


def matching_ids_sql(account_arg: str, query_arg: str) -> str:
    """A subquery of the ids of the account's messages matching a websearch query: the
    index for rows whose document is built and current, the document function for rows
    still queued.  Exact at any moment; fast once the queue is drained.  The queued rows
    are looked up from the queue (`= ANY (ARRAY(...))`): a join let the planner, without
    statistics right after a bulk insert, compute the document of every row of the
    account instead (24 ms a search at 1,000 messages, growing with the mailbox)."""
    tsquery = f"websearch_to_tsquery('simple', {query_arg})"
    return f"""
        SELECT s.message_id FROM message_search s
        WHERE s.account_id = {account_arg} AND s.document @@ {tsquery}
          AND NOT EXISTS (SELECT 1 FROM search_pending p WHERE p.message_id = s.message_id)
        UNION ALL
        SELECT q.id FROM messages q
        WHERE q.id = ANY (ARRAY(SELECT message_id FROM search_pending))
          AND q.account_id = {account_arg} AND {document_of('q')} @@ {tsquery}"""


__all__ = ["document_of", "index_pending", "matching_ids_sql", "pending_count"]
