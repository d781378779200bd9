"""SQL of the mirror update that goes with a write-back (flags, move, delete through the API).

Each function runs in one transaction with its events, each event's payload carrying
``"origin": "api"``, so a read right after the API's answer sees the change and
`/events` and the webhooks tell it once.  They never touch a folder's sync cursors:

- a moved row keeps its id (and `email_id`) and takes its new (folder, UID) from the server's COPYUID;
  that UID is above the destination's `synced_high_uid`, so the destination's next visit
  fetches it again and its upsert (on the unique (folder_id, uid)) finds the row there,
  unchanged: no duplicate, no second event;
- a row moved without COPYUID, or to a folder that is not mirrored (excluded: Trash by
  default), leaves the mirror (`message_removed`, with where it went); the destination's
  next visit brings the arrival as any new message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from dataclasses import dataclass

from mailbridge.imap.models import FlagUpdate
from mailbridge.store.db import Db, Tx

ORIGIN = "api"


@dataclass(frozen=True, slots=True)
class Moved:
    """What a move did to the mirror."""

    moved: dict[int, int]  # message id → its new UID in the destination (the row moved, same id)
    removed: list[int]  # message ids that left the mirror (no COPYUID, or the destination is not mirrored)


async def set_flags(db: Db, account_id: int, folder_id: int, updates: Sequence[FlagUpdate]) -> int:
    """Store the flags the server answered (and their mod-sequence) where they differ, each
    change with a `message_changed` event of origin api; returns how many changed."""
    if not updates:
        return 0
    return int(await db.fetchval(
        """WITH src AS (
               SELECT uid, coalesce(string_to_array(nullif(flags, ''), E'\\x1f'), '{}') AS flags, modseq
               FROM unnest($3::bigint[], $4::text[], $5::bigint[]) AS s(uid, flags, modseq)
           ), up AS (
               UPDATE messages m SET flags = src.flags, modseq = coalesce(src.modseq, m.modseq), updated_at = now()
               FROM src
               WHERE m.folder_id = $2 AND m.uid = src.uid AND m.flags IS DISTINCT FROM src.flags
               RETURNING m.id, m.uid, m.flags
           ), ev AS (
               INSERT INTO events (account_id, folder_id, kind, payload)
               SELECT $1, $2, 'message_changed',
                      jsonb_build_object('message', id, 'uid', uid, 'flags', flags, 'origin', $6::text)
               FROM up
           )
           SELECT count(*) FROM up""",
        account_id, folder_id, [u.uid for u in updates], ["\x1f".join(u.flags) for u in updates],
        [u.modseq for u in updates], ORIGIN))


_MOVE = """
WITH src AS (
    SELECT old_uid, new_uid FROM unnest($4::bigint[], $5::bigint[]) AS s(old_uid, new_uid)
), moved AS (
    UPDATE messages m SET folder_id = $3, uid = src.new_uid, updated_at = now()
    FROM src
    WHERE m.folder_id = $2 AND m.uid = src.old_uid
      AND NOT EXISTS (SELECT 1 FROM messages x WHERE x.folder_id = $3 AND x.uid = src.new_uid)
    RETURNING m.id, src.old_uid, m.uid, m.email_id
), ev AS (
    INSERT INTO events (account_id, folder_id, kind, payload)
    SELECT $1, $3, 'message_moved',
           jsonb_build_object('message', id, 'uid', uid, 'email_id', email_id,
                              'from_folder_id', $2::bigint, 'from_folder', $6::text, 'from_uid', old_uid,
                              'from_message', id, 'to_folder_id', $3::bigint, 'to_folder', $7::text,
                              'to_uid', uid, 'origin', $8::text)
    FROM moved
), queued AS (
    INSERT INTO search_pending (message_id) SELECT id FROM moved ON CONFLICT DO NOTHING
)
SELECT id, uid FROM moved
"""

_REMOVE = """
WITH gone AS (
    DELETE FROM messages WHERE folder_id = $2 AND uid = ANY($3::bigint[])
    RETURNING id, uid, message_id
), ev AS (
    INSERT INTO events (account_id, folder_id, kind, payload)
    SELECT $1, $2, 'message_removed',
           jsonb_strip_nulls(jsonb_build_object('message', id, 'uid', uid, 'message_id', message_id,
                                                'origin', $4::text, 'moved_to', $5::text))
    FROM gone
)
SELECT id FROM gone
"""


async def _remove(tx: Tx, account_id: int, folder_id: int, uids: Sequence[int], moved_to: str | None) -> list[int]:
    if not uids:
        return []
    rows = await tx.fetch(_REMOVE, account_id, folder_id, list(uids), ORIGIN, moved_to)
    return [r["id"] for r in rows]


async def _add_count(tx: Tx, folder_id: int, n: int) -> None:
    """Keep the folder's message_count exact by the rows a write moved in (n > 0) or out
    (relative, as the initial sync's batches do: no count(*) over a big folder)."""
    if n:
        await tx.execute("UPDATE folders SET message_count = greatest(0, coalesce(message_count, 0) + $2) "
                         "WHERE id = $1", folder_id, n)


async def move_rows(db: Db, account_id: int, from_folder_id: int, from_folder: str, to_folder_id: int,
                    to_folder: str, uids: Sequence[int], new_uids: Mapping[int, int], *,
                    dest_mirrored: bool) -> Moved:
    """After the server moved `uids` out of the source: move each row with a new UID
    (`new_uids`, from COPYUID) to the destination in place (same id, `message_moved`
    event), and drop the others (`message_removed` naming the destination).  A row whose
    new place is taken already (a visit fetched it first) is dropped instead: no duplicate."""
    async with db.transaction() as tx:
        moved: dict[int, int] = {}
        if dest_mirrored:
            pairs = [(u, new_uids[u]) for u in uids if u in new_uids]
            if pairs:
                rows = await tx.fetch(_MOVE, account_id, from_folder_id, to_folder_id, [p[0] for p in pairs],
                                      [p[1] for p in pairs], from_folder, to_folder, ORIGIN)
                moved = {r["id"]: r["uid"] for r in rows}
        # whatever did not move (no COPYUID, not mirrored, or its place taken) leaves the source
        removed = await _remove(tx, account_id, from_folder_id, list(uids), to_folder)
        await _add_count(tx, from_folder_id, -(len(moved) + len(removed)))
        await _add_count(tx, to_folder_id, len(moved))
    return Moved(moved, removed)


async def remove_rows(db: Db, account_id: int, folder_id: int, uids: Sequence[int]) -> list[int]:
    """After the server expunged `uids`: drop their rows (`message_removed`, origin api);
    returns the message ids dropped."""
    async with db.transaction() as tx:
        removed = await _remove(tx, account_id, folder_id, uids, None)
        await _add_count(tx, folder_id, -len(removed))
    return removed


async def folder_by_name(db: Db, account_id: int, name: str) -> dict[str, Any] | None:
    """The account's folder named `name` (as the API shows names), or None."""
    row = await db.fetchrow(
        """SELECT id, name, raw_name, uidvalidity, excluded, special_use, exists_on_server, gmail_view
           FROM folders WHERE account_id = $1 AND name = $2""", account_id, name)
    return dict(row) if row is not None else None


async def trash_folder(db: Db, account_id: int) -> dict[str, Any] | None:
    """The account's Trash: the folder with special-use \\Trash, else one named Trash."""
    row = await db.fetchrow(
        """SELECT id, name, raw_name, uidvalidity, excluded, special_use, exists_on_server
           FROM folders WHERE account_id = $1 AND exists_on_server
             AND (special_use = '\\Trash' OR lower(name) = 'trash')
           ORDER BY (special_use = '\\Trash') DESC NULLS LAST, id LIMIT 1""", account_id)
    return dict(row) if row is not None else None


async def messages_for(db: Db, ids: Sequence[int]) -> list[dict[str, Any]]:
    """The rows a write names: id, account, folder (with its raw name and UIDVALIDITY), uid."""
    return [dict(r) for r in await db.fetch(
        """SELECT m.id, m.account_id, m.folder_id, m.uid, f.name AS folder, f.raw_name AS folder_raw_name,
                  f.uidvalidity AS folder_uidvalidity
           FROM messages m JOIN folders f ON f.id = m.folder_id WHERE m.id = ANY($1::bigint[])""", list(ids))]


__all__ = ["Moved", "ORIGIN", "folder_by_name", "messages_for", "move_rows", "remove_rows", "set_flags",
           "trash_folder"]
