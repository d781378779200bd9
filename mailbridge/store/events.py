"""SQL for events that no other statement appends with its change."""

from __future__ import annotations

from mailbridge.store.db import Db, Tx


async def folder_reset(tx: Tx, account_id: int, folder_id: int, *, folder: str, old_uidvalidity: int | None,
                       new_uidvalidity: int | None, removed: int, parked: bool) -> None:
    """Append the `folder_reset` event of a UIDVALIDITY change (in the reset's transaction)."""
    await tx.execute(
        """INSERT INTO events (account_id, folder_id, kind, payload)
           VALUES ($1, $2, 'folder_reset', jsonb_build_object(
               'folder', $3::text, 'old_uidvalidity', $4::bigint, 'new_uidvalidity', $5::bigint,
               'removed', $6::int, 'parked', $7::bool))""",
        account_id, folder_id, folder, old_uidvalidity, new_uidvalidity, removed, parked)


# The oldest `$2` events by id (the primary key's order: no index on created_at needed),
# of which those older than the cutoff go; a batch that keeps any is the last one.
_PRUNE_BATCH = """
    WITH head AS (SELECT id, created_at FROM events ORDER BY id LIMIT $2),
         gone AS (DELETE FROM events e USING head h
                  WHERE e.id = h.id AND h.created_at < now() - make_interval(days => $1)
                  RETURNING e.id)
    SELECT (SELECT count(*) FROM gone) AS deleted, (SELECT count(*) FROM head) AS looked"""


async def prune_batch(db: Db, retention_days: int, batch: int) -> tuple[int, bool]:
    """Delete up to `batch` of the oldest events older than `retention_days` in one
    statement; returns (deleted, more): `more` is False once the oldest remaining event is
    within the retention (or the table is empty).  One statement, its own transaction: no
    long lock, no WAL burst; cancelled or failed, nothing is deleted."""
    row = await db.fetchrow(_PRUNE_BATCH, retention_days, batch)
    assert row is not None  # aggregates: always one row
    deleted, looked = int(row["deleted"]), int(row["looked"])
    return deleted, deleted == looked == batch


__all__ = ["folder_reset", "prune_batch"]
