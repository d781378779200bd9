"""SQL for the folders table and its sync cursors.

The cursors (see `mailbridge.sync.folder`) move only in the transaction that writes the
rows they cover; the functions here that move one take the caller's transaction (or the
pool, for a single statement).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from mailbridge.imap.models import SelectInfo
from mailbridge.store.db import Db, Row, Tx


@dataclass(frozen=True, slots=True)
class Folder:
    """A folders row, as the sync needs it."""

    id: int
    account_id: int
    name: str
    raw_name: str
    uidvalidity: int | None
    uidnext: int | None
    highestmodseq: int | None
    initial_top_uid: int | None
    initial_low_uid: int | None
    synced_high_uid: int | None
    initial_sync_complete: bool
    is_priority: bool
    excluded: bool
    parked: bool
    uidvalidity_resets: tuple[datetime, ...]
    last_reconcile_at: datetime | None
    last_flag_scan_at: datetime | None
    last_repair_at: datetime | None = None
    parked_reason: str | None = None
    special_use: str | None = None
    gmail_view: str | None = None  # a Gmail label folder (not mirrored): the label it shows, see sql/0011

    @classmethod
    def from_row(cls, row: Row) -> "Folder":
        """The Folder of a row holding (at least) FOLDER_COLUMNS."""
        data = {k: row[k] for k in cls.__slots__}
        data["uidvalidity_resets"] = tuple(data["uidvalidity_resets"] or ())
        return cls(**data)


@dataclass(frozen=True, slots=True)
class FolderPlan:
    """How discovery classifies one selectable mailbox (the folders row it makes)."""

    name: str
    raw_name: str
    delimiter: str | None
    special_use: str | None
    is_priority: bool
    excluded: bool
    gmail_view: str | None = None  # a Gmail label folder: what it shows (it is then excluded)


@dataclass(frozen=True, slots=True)
class IdleState:
    """What the last visit of a folder stored about the server's mailbox."""

    uidnext: int | None
    highestmodseq: int | None
    server_message_count: int | None


FOLDER_COLUMNS = ", ".join(Folder.__slots__)
_DISPLAY_ORDER = "ORDER BY is_priority DESC, name = 'INBOX' DESC, name"


# --- reads ------------------------------------------------------------------------------


async def load_folders(db: Db, account_id: int) -> list[Folder]:
    """The account's folders, priority first, then INBOX, then by name."""
    rows = await db.fetch(f"SELECT {FOLDER_COLUMNS} FROM folders WHERE account_id = $1 {_DISPLAY_ORDER}",
                          account_id)
    return [Folder.from_row(r) for r in rows]


async def load_folder(db: Db, folder_id: int) -> Folder | None:
    """One folder; None when it is gone."""
    row = await db.fetchrow(f"SELECT {FOLDER_COLUMNS} FROM folders WHERE id = $1", folder_id)
    return Folder.from_row(row) if row else None


async def get_uidvalidity(db: Db, folder_id: int) -> int | None:
    """The stored UIDVALIDITY of a folder; None when unknown or the folder is gone."""
    return await db.fetchval("SELECT uidvalidity FROM folders WHERE id = $1", folder_id)


async def get_idle_state(db: Db, folder_id: int) -> IdleState | None:
    """UIDNEXT, HIGHESTMODSEQ and message count as the last visit stored them; None when
    the folder is gone."""
    row = await db.fetchrow("SELECT uidnext, highestmodseq, server_message_count FROM folders WHERE id = $1",
                            folder_id)
    if row is None:
        return None
    return IdleState(row["uidnext"], row["highestmodseq"], row["server_message_count"])


async def server_counts(db: Db, account_id: int) -> dict[int, int | None]:
    """The server's message count (EXISTS) each folder's last visit stored, by folder id."""
    rows = await db.fetch("SELECT id, server_message_count FROM folders WHERE account_id = $1", account_id)
    return {r["id"]: r["server_message_count"] for r in rows}


async def overview(db: Db, account_id: int) -> list[Row]:
    """Per-folder sync state of an account as `accounts show` prints it (with the number of
    unreadable rows), priority first, then by name."""
    return await db.fetch(
        """SELECT name, special_use, excluded, is_priority, parked, parked_reason, uidvalidity,
                  initial_sync_complete, message_count, server_message_count, last_synced_at,
                  exists_on_server,
                  (SELECT count(*) FROM messages m WHERE m.folder_id = folders.id AND m.size_bytes IS NULL)
                      AS unreadable
           FROM folders WHERE account_id = $1 ORDER BY is_priority DESC, name""", account_id)


# --- discovery --------------------------------------------------------------------------


async def upsert_listed(tx: Tx, account_id: int, plans: Sequence[FolderPlan]) -> int:
    """Insert or update the listed folders (a new one with its `folder_added` event);
    returns how many were new."""
    return int(await tx.fetchval(
        """WITH src AS (
               SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bool[], $7::bool[],
                                    $8::text[])
                   AS s(name, raw_name, delimiter, special_use, is_priority, excluded, gmail_view)
           ), up AS (
               INSERT INTO folders (account_id, name, raw_name, delimiter, special_use, is_priority, excluded,
                                    gmail_view)
               SELECT $1, name, raw_name, delimiter, special_use, is_priority, excluded, gmail_view FROM src
               ON CONFLICT (account_id, name) DO UPDATE SET
                   raw_name = EXCLUDED.raw_name, delimiter = EXCLUDED.delimiter,
                   special_use = EXCLUDED.special_use, is_priority = EXCLUDED.is_priority,
                   excluded = EXCLUDED.excluded, gmail_view = EXCLUDED.gmail_view, exists_on_server = true
               RETURNING (xmax = 0) AS inserted, id, name
           ), ev AS (
               INSERT INTO events (account_id, folder_id, kind, payload)
               SELECT $1, id, 'folder_added', jsonb_build_object('folder', name) FROM up WHERE inserted
           )
           SELECT count(*) FILTER (WHERE inserted) FROM up""",
        account_id, [p.name for p in plans], [p.raw_name for p in plans], [p.delimiter for p in plans],
        [p.special_use for p in plans], [p.is_priority for p in plans], [p.excluded for p in plans],
        [p.gmail_view for p in plans],
    ))


async def remove_unlisted(tx: Tx, account_id: int, names: Sequence[str]) -> int:
    """Delete the account's folders not named in `names` (their messages go with them),
    each with its `folder_removed` event; returns how many."""
    return int(await tx.fetchval(
        """WITH gone AS (
               DELETE FROM folders WHERE account_id = $1 AND NOT (name = ANY($2::text[]))
               RETURNING id, name
           ), ev AS (
               INSERT INTO events (account_id, folder_id, kind, payload)
               SELECT $1, id, 'folder_removed', jsonb_build_object('folder', name) FROM gone
           )
           SELECT count(*) FROM gone""",
        account_id, list(names),
    ))


async def clear_views(tx: Tx, account_id: int) -> int:
    """Forget the rows and sync state of the account's Gmail label views (a folder mirrored
    before it was known to be a view: its rows would show each message twice); returns how
    many rows went.  Nothing to do (one indexed look) in the usual case."""
    ids = [r["id"] for r in await tx.fetch(
        "SELECT id FROM folders WHERE account_id = $1 AND gmail_view IS NOT NULL AND uidvalidity IS NOT NULL",
        account_id)]
    if not ids:
        return 0
    removed = int(await tx.fetchval(
        "WITH d AS (DELETE FROM messages WHERE folder_id = ANY($1::bigint[]) RETURNING 1) SELECT count(*) FROM d",
        ids))
    await tx.execute(
        """UPDATE folders SET uidvalidity = NULL, uidnext = NULL, highestmodseq = NULL,
               initial_sync_complete = false, initial_top_uid = NULL, initial_low_uid = NULL,
               synced_high_uid = NULL, message_count = 0, server_message_count = NULL
           WHERE id = ANY($1::bigint[])""", ids)
    return removed


# --- cursors ----------------------------------------------------------------------------


async def start_cursors(tx: Tx, folder_id: int, info: SelectInfo, top: int) -> None:
    """A folder's first SELECT: store it and start the initial sync below `top` (every UID
    above it is the incremental sync's)."""
    await tx.execute(
        """UPDATE folders SET uidvalidity = $2, uidnext = $3, highestmodseq = $4,
               initial_top_uid = $5::bigint, initial_low_uid = $5::bigint + 1, synced_high_uid = $5::bigint,
               initial_sync_complete = false, server_message_count = $6
           WHERE id = $1""",
        folder_id, info.uidvalidity, info.uidnext, info.highestmodseq, top, info.exists)


async def restart_cursors(tx: Tx, folder_id: int, info: SelectInfo, top: int, *,
                          resets: Sequence[datetime], parked_reason: str | None) -> None:
    """After a UIDVALIDITY change (the rows already deleted): start over as after a first
    SELECT, record the resets, and park the folder when `parked_reason` is given."""
    await tx.execute(
        """UPDATE folders SET uidvalidity = $2, uidnext = $3, highestmodseq = $4,
               initial_top_uid = $5::bigint, initial_low_uid = $5::bigint + 1, synced_high_uid = $5::bigint,
               initial_sync_complete = false, message_count = 0, server_message_count = $6,
               uidvalidity_resets = $7, parked = $8,
               parked_reason = CASE WHEN $8 THEN $9 ELSE NULL END,
               last_reconcile_at = NULL, last_flag_scan_at = NULL
           WHERE id = $1""",
        folder_id, info.uidvalidity, info.uidnext, info.highestmodseq, top, info.exists,
        list(resets), parked_reason is not None, parked_reason)


async def set_synced_high_uid(db: Db, folder_id: int, uid: int) -> None:
    """Move the incremental cursor (no rows to cover: the UIDs up to it are none)."""
    await db.execute("UPDATE folders SET synced_high_uid = $2 WHERE id = $1", folder_id, uid)


async def recount_messages(db: Db, folder_id: int) -> None:
    """Set message_count to the folder's rows, counted."""
    await db.execute(
        "UPDATE folders SET message_count = (SELECT count(*) FROM messages WHERE folder_id = $1) "
        "WHERE id = $1", folder_id)


async def complete_initial(db: Db, folder_id: int) -> None:
    """Mark the initial sync done (no UID below the cursor is left to fetch)."""
    await db.execute("UPDATE folders SET initial_low_uid = 1, initial_sync_complete = true WHERE id = $1",
                     folder_id)


async def stamp_reconcile(tx: Tx, folder_id: int, *, flags_scanned: bool, uids_compared: bool) -> None:
    """Record that a visit brought the folder's flags (`last_flag_scan_at`) and its set of
    UIDs (`last_reconcile_at`) up to date; nothing when neither."""
    if not (flags_scanned or uids_compared):
        return
    await tx.execute(
        """UPDATE folders SET
               last_flag_scan_at = CASE WHEN $2 THEN now() ELSE last_flag_scan_at END,
               last_reconcile_at = CASE WHEN $3 THEN now() ELSE last_reconcile_at END
           WHERE id = $1""", folder_id, flags_scanned, uids_compared)


async def finish_visit(db: Db, folder_id: int, info: SelectInfo) -> int:
    """Store what the visit's SELECT saw and the rows counted; returns that count."""
    synced = await db.fetchval(
        """UPDATE folders SET uidnext = $2, highestmodseq = $3, server_message_count = $4,
               message_count = (SELECT count(*) FROM messages WHERE folder_id = $1),
               last_synced_at = now()
           WHERE id = $1 RETURNING message_count""",
        folder_id, info.uidnext, info.highestmodseq, info.exists)
    return int(synced or 0)


# --- manual reset -----------------------------------------------------------------------


async def reset_sync_state(db: Db, account_id: int, folder: str | None = None) -> int:
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
