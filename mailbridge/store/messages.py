"""SQL for the messages table: bulk upserts, flag updates, removals, with their events.

Every function takes a connection inside the caller's transaction, so the rows and the
sync cursor that covers them commit together; `upsert` can also move the cursor itself,
in the same statement (then it may be given the pool: one round trip per batch).
"""

from __future__ import annotations

from itertools import islice
from typing import Any, Iterable, Sequence

from mailbridge.errors import FolderRemoved
from mailbridge.imap.models import FlagUpdate, MessageMeta

COLUMNS = (
    "uid", "message_id", "subject", "from_name", "from_email", "to_emails", "cc_emails",
    "sent_at", "internal_date", "size_bytes", "flags", "in_reply_to", "references_header",
    "modseq", "defects",
)

_TYPES = (
    "bigint", "text", "text", "text", "text", "text[]", "text[]",
    "timestamptz", "timestamptz", "bigint", "text[]", "text", "text[]",
    "bigint", "text[]",
)
_ARRAY_COLUMNS = frozenset(c for c, t in zip(COLUMNS, _TYPES) if t == "text[]")
_TEXT_COLUMNS = tuple(i for i, t in enumerate(_TYPES) if t.startswith("text"))
_PARAMS = 5  # $1 account, $2 folder, $3 emit events, $4 separator, $5 NULL marker; then one per column
_FOLDER_PARAMS = _PARAMS + len(COLUMNS)


def _source(i: int, sql_type: str) -> str:
    """Column i's values in SQL: a text column arrives as one string (see `_columns`)."""
    param = f"${_PARAMS + 1 + i}"
    if sql_type.startswith("text"):
        return f"(string_to_array({param}, $4, $5))[1:cardinality(${_PARAMS + 1}::bigint[])]"
    return f"{param}::{sql_type}[]"


# One statement: the batch arrives one parameter per column (see `_columns`), is upserted,
# and (optionally) the folder row carrying the sync cursor is updated; a single statement
# is a single transaction, so rows and cursor commit together, in one round trip.
_UPSERT = """
WITH target AS (
    -- the folder row, locked against deletion until commit (once per batch: messages has
    -- no per-row foreign keys, see sql/0004); gone, the batch inserts nothing
    SELECT id FROM folders WHERE id = $2 AND account_id = $1 FOR KEY SHARE
), src AS (
    SELECT * FROM unnest({arrays}) AS s({names})
), up AS (
    INSERT INTO messages (account_id, folder_id, {columns})
    SELECT $1, $2, {values} FROM src, target
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
), queued AS (
    -- the search indexer builds these rows' documents (see mailbridge.store.search)
    INSERT INTO search_pending (message_id) SELECT id FROM up ON CONFLICT DO NOTHING
){folder_cte}
SELECT count(*) FILTER (WHERE inserted) AS added, count(*) FILTER (WHERE NOT inserted) AS changed,
       {folder_value} AS folder_value, (SELECT count(*) FROM target) AS folder_found
FROM up
""".format(
    arrays=", ".join(_source(i, t) for i, t in enumerate(_TYPES)),
    names=", ".join(COLUMNS),
    columns=", ".join(COLUMNS),
    values=", ".join(f"{c}::text[]" if c in _ARRAY_COLUMNS else c for c in COLUMNS),
    folder_cte="{folder_cte}",
    folder_value="{folder_value}",
)
_ADDED = "(SELECT count(*) FROM up WHERE inserted)"
_STATEMENTS: dict[tuple[str, str], str] = {}


def _statement(folder_set: str, returning: str) -> str:
    key = (folder_set, returning)
    sql = _STATEMENTS.get(key)
    if sql is None:
        if folder_set:
            params = [f"${_FOLDER_PARAMS + 1 + i}" for i in range(folder_set.count("{") - folder_set.count("{added}"))]
            set_clause = folder_set.format(*params, added=_ADDED)
            sql = _UPSERT.format(
                folder_cte=f", folder AS (\n    UPDATE folders SET {set_clause} WHERE id = $2 RETURNING {returning or 'id'}\n)",
                folder_value="(SELECT * FROM folder)" if returning else "NULL")
        else:
            sql = _UPSERT.format(folder_cte="", folder_value="NULL")
        _STATEMENTS[key] = sql
    return sql


def _array(items: Sequence[str] | None) -> str | None:
    """A Postgres array literal of text elements (each quoted); None stays NULL.  NUL
    characters are left for `_columns` to drop from the whole column."""
    if items is None:
        return None
    if not items:
        return "{}"
    parts = []
    for x in items:
        if "\\" in x or '"' in x:
            x = x.replace("\\", "\\\\").replace('"', '\\"')
        parts.append(x)
    return '{"' + '","'.join(parts) + '"}'


_FLAG_LITERALS: dict[tuple[str, ...], str] = {}


def _flags_literal(flags: tuple[str, ...]) -> str:
    """`_array(flags)`, remembered: a mailbox has few distinct flag sets."""
    literal = _FLAG_LITERALS.get(flags)
    if literal is None:
        literal = _array(flags) or "{}"
        if len(_FLAG_LITERALS) >= 1024:
            _FLAG_LITERALS.clear()
        _FLAG_LITERALS[flags] = literal
    return literal


# characters that may separate values and stand for NULL: the first two that occur in
# none of a batch's values are used (control and private-use characters, so nearly always
# the first two)
_SEPARATORS = "\x1f\x1e\x1d\x1c" + "".join(chr(c) for c in range(0xE000, 0xF900))


def _columns(metas: Sequence[MessageMeta]) -> list:
    """The batch's parameters after the first three: separator, NULL marker, then one per
    column in COLUMNS order.  Numbers and dates go as arrays; each text column (and each
    array column, as one array literal per row) goes as a single string, its values each
    followed by the separator and NULL as the marker, which `string_to_array` splits in
    the statement: asyncpg's per-element array encoding cost more than the parsing."""
    columns: list[list] = [
        [m.uid for m in metas],
        [m.message_id for m in metas],
        [m.subject for m in metas],
        [m.from_name for m in metas],
        [m.from_email for m in metas],
        [_array(m.to_emails) for m in metas],
        [_array(m.cc_emails) for m in metas],
        [m.sent_at for m in metas],
        [m.internal_date for m in metas],
        [m.size_bytes for m in metas],
        [_flags_literal(m.flags) for m in metas],
        [m.in_reply_to for m in metas],
        [_array(m.references) for m in metas],
        [m.modseq for m in metas],
        [_array(m.defects) if m.defects else None for m in metas],
    ]
    texts = [columns[i] for i in _TEXT_COLUMNS]
    blob = "".join(["".join(filter(None, values)) for values in texts])
    sep, null = islice((c for c in _SEPARATORS if c not in blob), 2)
    for i in _TEXT_COLUMNS:
        values = columns[i]
        if None in values:
            values = [null if v is None else v for v in values]
        joined = sep.join(values) + sep if values else ""
        columns[i] = joined.replace("\x00", "") if "\x00" in joined else joined  # Postgres text holds no NUL
    return [sep, null, *columns]


async def upsert(tx: Any, account_id: int, folder_id: int, metas: Sequence[MessageMeta], *,
                 emit_events: bool, folder_set: str = "", folder_args: Sequence[Any] = (),
                 returning: str = "") -> tuple[int, int]:
    """Insert or update `metas` (by folder and UID); returns (added, changed).

    Raises `FolderRemoved` (writing nothing) when the folder row is gone.

    With `folder_set`, the same statement also runs ``UPDATE folders SET <folder_set>
    WHERE id = folder_id`` (its ``{}`` placeholders take `folder_args`; ``{added}`` is the
    number of rows inserted), so a sync cursor commits with the rows it covers even
    outside a transaction (`tx` may then be the pool: one round trip); with `returning`
    (a folders column), (added, changed, that column's new value) is returned.
    """
    if not metas and not folder_set:
        return 0, 0
    row = await tx.fetchrow(_statement(folder_set, returning), account_id, folder_id, emit_events,
                            *_columns(metas), *folder_args)
    if not row["folder_found"]:
        raise FolderRemoved(f"folder {folder_id} of account {account_id} was removed (with its account?); "
                            "nothing written")
    if returning:
        return int(row["added"]), int(row["changed"]), row["folder_value"]  # type: ignore[return-value]
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


async def flags_between(db: Any, folder_id: int, low: int, high: int) -> dict[int, tuple[str, ...]]:
    """Mirrored flags of a folder's UIDs in [low, high]."""
    rows = await db.fetch("SELECT uid, flags FROM messages WHERE folder_id = $1 AND uid BETWEEN $2 AND $3",
                          folder_id, low, high)
    return {r["uid"]: tuple(r["flags"]) for r in rows}


async def flags_by_uid(tx: Any, folder_id: int) -> dict[int, tuple[str, ...]]:
    rows = await tx.fetch("SELECT uid, flags FROM messages WHERE folder_id = $1", folder_id)
    return {r["uid"]: tuple(r["flags"]) for r in rows}
