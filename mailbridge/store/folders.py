"""SQL for the folders table and its sync cursors."""

from __future__ import annotations

from typing import Any


async def reset_sync_state(db: Any, account_id: int, folder: str | None = None) -> int:
    """Forget the sync state of an account's folders (or one folder) and their rows.

    The next cycle re-syncs them from scratch.  Returns how many folders were reset.
    """
    async with db.transaction() as tx:
        if folder is None:
            ids = [r["id"] for r in await tx.fetch("SELECT id FROM folders WHERE account_id = $1", account_id)]
        else:
            ids = [r["id"] for r in await tx.fetch(
                "SELECT id FROM folders WHERE account_id = $1 AND name = $2", account_id, folder)]
        if not ids:
            return 0
        await tx.execute("DELETE FROM messages WHERE folder_id = ANY($1::bigint[])", ids)
        await tx.execute(
            """UPDATE folders SET uidvalidity = NULL, uidnext = NULL, highestmodseq = NULL,
                   initial_sync_complete = false, initial_top_uid = NULL, initial_low_uid = NULL,
                   synced_high_uid = NULL, message_count = 0, last_synced_at = NULL,
                   last_flag_scan_at = NULL, last_reconcile_at = NULL, next_reconcile_at = NULL, last_repair_at = NULL,
                   parked = false, parked_reason = NULL, uidvalidity_resets = '{}'
               WHERE id = ANY($1::bigint[])""", ids)
        await tx.execute(
            """INSERT INTO events (account_id, folder_id, kind, payload)
               SELECT account_id, id, 'folder_reset', jsonb_build_object('reason', 'manual reset', 'folder', name)
               FROM folders WHERE id = ANY($1::bigint[])""", ids)
        return len(ids)
