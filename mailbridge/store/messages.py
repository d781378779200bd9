"""SQL for the messages table: bulk upserts, flag updates, removals, with their events.

Every function takes a connection inside the caller's transaction, so the rows and the
sync cursor that covers them commit together.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from mailbridge.imap.models import FlagUpdate, MessageMeta

COLUMNS = (
    "uid", "message_id", "subject", "from_name", "from_email", "to_emails", "cc_emails",
    "sent_at", "internal_date", "size_bytes", "flags", "in_reply_to", "references_header",
    "modseq", "defects",
)

_STAGE = f"""
CREATE TEMP TABLE IF NOT EXISTS incoming_messages (
    uid bigint, message_id text, subject text, from_name text, from_email text,
    to_emails text[], cc_emails text[], sent_at timestamptz, internal_date timestamptz,
    size_bytes bigint, flags text[], in_reply_to text, references_header text[],
    modseq bigint, defects text[]
) ON COMMIT DELETE ROWS
"""

_UPSERT = f"""
WITH up AS (
    INSERT INTO messages (account_id, folder_id, {", ".join(COLUMNS)})
    SELECT $1, $2, {", ".join(COLUMNS)} FROM incoming_messages
    ON CONFLICT (folder_id, uid) DO UPDATE SET
        message_id = EXCLUDED.message_id, subject = EXCLUDED.subject,
        from_name = EXCLUDED.from_name, from_email = EXCLUDED.from_email,
        to_emails = EXCLUDED.to_emails, cc_emails = EXCLUDED.cc_emails,
        sent_at = EXCLUDED.sent_at, internal_date = EXCLUDED.internal_date,
        size_bytes = EXCLUDED.size_bytes, flags = EXCLUDED.flags,
        in_reply_to = EXCLUDED.in_reply_to, references_header = EXCLUDED.references_header,
        modseq = EXCLUDED.modseq, defects = EXCLUDED.defects, updated_at = now()
    WHERE (messages.flags, messages.message_id, messages.subject, messages.size_bytes, messages.internal_date)
          IS DISTINCT FROM
          (EXCLUDED.flags, EXCLUDED.message_id, EXCLUDED.subject, EXCLUDED.size_bytes, EXCLUDED.internal_date)
    RETURNING id, uid, (xmax = 0) AS inserted
), ev AS (
    INSERT INTO events (account_id, folder_id, kind, payload)
    SELECT $1, $2, CASE WHEN inserted THEN 'message_added' ELSE 'message_changed' END,
           jsonb_build_object('message', id, 'uid', uid)
    FROM up WHERE $3
)
SELECT count(*) FILTER (WHERE inserted) AS added, count(*) FILTER (WHERE NOT inserted) AS changed FROM up
"""


def _clean(text: str | None) -> str | None:
    return text.replace("\x00", "") if text and "\x00" in text else text


def _record(m: MessageMeta) -> tuple:
    return (
        m.uid, _clean(m.message_id), _clean(m.subject), _clean(m.from_name), _clean(m.from_email),
        [_clean(x) for x in m.to_emails], [_clean(x) for x in m.cc_emails], m.sent_at,
        m.internal_date, m.size_bytes, list(m.flags), _clean(m.in_reply_to),
        [_clean(x) for x in m.references], m.modseq, list(m.defects) or None,
    )


async def upsert(tx: Any, account_id: int, folder_id: int, metas: Sequence[MessageMeta], *,
                 emit_events: bool) -> tuple[int, int]:
    """Insert or update `metas` (by folder and UID); returns (added, changed)."""
    if not metas:
        return 0, 0
    await tx.execute(_STAGE)
    await tx.copy_records("incoming_messages", [_record(m) for m in metas], COLUMNS)
    row = await tx.fetchrow(_UPSERT, account_id, folder_id, emit_events)
    await tx.execute("DELETE FROM incoming_messages")
    return int(row["added"]), int(row["changed"])


async def update_flags(tx: Any, account_id: int, folder_id: int, updates: Iterable[FlagUpdate], *,
                       emit_events: bool = True) -> int:
    """Set the flags of known UIDs where they differ; returns how many changed."""
    updates = list(updates)
    if not updates:
        return 0
    uids = [u.uid for u in updates]
    flags = ["\x1f".join(u.flags) for u in updates]
    modseqs = [u.modseq for u in updates]
    return int(await tx.fetchval(
        """WITH src AS (
               SELECT * FROM unnest($3::bigint[], $4::text[], $5::bigint[]) AS s(uid, flags, modseq)
           ), up AS (
               UPDATE messages m
               SET flags = coalesce(string_to_array(nullif(src.flags, ''), E'\\x1f'), '{}'),
                   modseq = coalesce(src.modseq, m.modseq), updated_at = now()
               FROM src
               WHERE m.folder_id = $2 AND m.uid = src.uid
                 AND m.flags IS DISTINCT FROM coalesce(string_to_array(nullif(src.flags, ''), E'\\x1f'), '{}')
               RETURNING m.id, m.uid, m.flags
           ), ev AS (
               INSERT INTO events (account_id, folder_id, kind, payload)
               SELECT $1, $2, 'message_changed', jsonb_build_object('message', id, 'uid', uid, 'flags', flags)
               FROM up WHERE $6
           )
           SELECT count(*) FROM up""",
        account_id, folder_id, uids, flags, modseqs, emit_events,
    ))


async def remove_uids(tx: Any, account_id: int, folder_id: int, uids: Sequence[int], *,
                      emit_events: bool = True) -> int:
    """Delete the rows of `uids` (expunged on the server); returns how many."""
    if not uids:
        return 0
    return int(await tx.fetchval(
        """WITH gone AS (
               DELETE FROM messages WHERE folder_id = $2 AND uid = ANY($3::bigint[])
               RETURNING id, uid, message_id
           ), ev AS (
               INSERT INTO events (account_id, folder_id, kind, payload)
               SELECT $1, $2, 'message_removed',
                      jsonb_build_object('message', id, 'uid', uid, 'message_id', message_id)
               FROM gone WHERE $4
           )
           SELECT count(*) FROM gone""",
        account_id, folder_id, list(uids), emit_events,
    ))


async def uids_between(tx: Any, folder_id: int, low: int, high: int) -> list[int]:
    """Mirrored UIDs of a folder in [low, high], ascending."""
    rows = await tx.fetch("SELECT uid FROM messages WHERE folder_id = $1 AND uid BETWEEN $2 AND $3 ORDER BY uid",
                          folder_id, low, high)
    return [r["uid"] for r in rows]


async def flags_by_uid(tx: Any, folder_id: int) -> dict[int, tuple[str, ...]]:
    rows = await tx.fetch("SELECT uid, flags FROM messages WHERE folder_id = $1", folder_id)
    return {r["uid"]: tuple(r["flags"]) for r in rows}
