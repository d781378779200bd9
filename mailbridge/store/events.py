"""SQL for events that no other statement appends with its change."""

from __future__ import annotations

from mailbridge.store.db import Tx


async def folder_reset(tx: Tx, account_id: int, folder_id: int, *, folder: str, old_uidvalidity: int | None,
                       new_uidvalidity: int | None, removed: int, parked: bool) -> None:
    """Append the `folder_reset` event of a UIDVALIDITY change (in the reset's transaction)."""
    await tx.execute(
        """INSERT INTO events (account_id, folder_id, kind, payload)
           VALUES ($1, $2, 'folder_reset', jsonb_build_object(
               'folder', $3::text, 'old_uidvalidity', $4::bigint, 'new_uidvalidity', $5::bigint,
               'removed', $6::int, 'parked', $7::bool))""",
        account_id, folder_id, folder, old_uidvalidity, new_uidvalidity, removed, parked)
