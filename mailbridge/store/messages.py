"""SQL for the messages table: bulk upserts, flag updates, removals, with their events.

The writers take a connection inside the caller's transaction, so the rows and the
sync cursor that covers them commit together; `upsert` can also move the cursor itself,
in the same statement (a `FolderUpdate`; then it may be given the pool: one round trip
per batch).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any

from mailbridge.errors import DatabaseDataError, FolderRemoved
from mailbridge.imap.models import FlagUpdate, MessageMeta
from mailbridge.store.db import Db, Tx
from mailbridge.store.moves import MOVED_PAYLOAD
from mailbridge.sync.identity import derive_email_id
from mailbridge.store.search import document_of
from mailbridge.store.search_document import document_literal

log = logging.getLogger(__name__)

COLUMNS = (
    "uid", "message_id", "subject", "from_name", "from_email", "to_emails", "cc_emails",
    "sent_at", "internal_date", "size_bytes", "flags", "in_reply_to", "references_header",
    "modseq", "defects", "email_id", "provider_thread_id", "labels",
)

_TYPES = (
    "bigint", "text", "text", "text", "text", "text[]", "text[]",
    "timestamptz", "timestamptz", "bigint", "text[]", "text", "text[]",
    "bigint", "text[]", "text", "text", "text[]",
)
_ARRAY_COLUMNS = frozenset(c for c, t in zip(COLUMNS, _TYPES) if t == "text[]")
_TEXT_COLUMNS = tuple(i for i, t in enumerate(_TYPES) if t.startswith("text"))
_TEXT_PARAMS = (*_TEXT_COLUMNS, len(COLUMNS))  # and the documents after the columns
_PARAMS = 5  # $1 account, $2 folder, $3 emit events, $4 separator, $5 NULL marker; then one per column
_DOCUMENTS = _PARAMS + len(COLUMNS) + 1  # then the rows' search documents (see `_columns`)
_FOLDER_PARAMS = _DOCUMENTS


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
        modseq = EXCLUDED.modseq, defects = EXCLUDED.defects,
        -- Gmail's / RFC 8474's ids and Gmail's labels: NULL in a fetch means not sent, kept
        email_id = coalesce(EXCLUDED.email_id, messages.email_id),
        provider_thread_id = coalesce(EXCLUDED.provider_thread_id, messages.provider_thread_id),
        labels = coalesce(EXCLUDED.labels, messages.labels), updated_at = now()
    WHERE (messages.flags, messages.message_id, messages.subject, messages.size_bytes, messages.internal_date,
           messages.labels, messages.email_id, messages.provider_thread_id)
          IS DISTINCT FROM
          (EXCLUDED.flags, EXCLUDED.message_id, EXCLUDED.subject, EXCLUDED.size_bytes, EXCLUDED.internal_date,
           coalesce(EXCLUDED.labels, messages.labels), coalesce(EXCLUDED.email_id, messages.email_id),
           coalesce(EXCLUDED.provider_thread_id, messages.provider_thread_id))
    RETURNING id, uid, email_id, (xmax = 0) AS inserted, subject, from_name, from_email, to_emails, cc_emails
), arrived AS (
    -- new rows that may be a move's arrival (only where events are written; see
    -- mailbridge.store.moves): ranked within their email_id, to pair one to one
    SELECT id, uid, email_id, row_number() OVER (PARTITION BY email_id ORDER BY uid) AS n
    FROM up WHERE $3 AND inserted AND email_id IS NOT NULL
), waiting AS (
    SELECT p.id AS pending, p.email_id, p.folder_id, p.uid, p.message,
           row_number() OVER (PARTITION BY p.email_id ORDER BY p.id) AS n
    FROM move_pending p
    WHERE p.account_id = $1 AND p.side = 'removed' AND p.folder_id <> $2
      AND p.email_id IN (SELECT email_id FROM arrived)
), claimed AS (
    DELETE FROM move_pending WHERE id IN (
        SELECT w.pending FROM arrived a JOIN waiting w USING (email_id, n))
    RETURNING id
), moved AS (
    SELECT a.id, a.uid, a.email_id, w.folder_id AS from_folder, w.uid AS from_uid, w.message AS from_message,
           $2::bigint AS to_folder
    FROM arrived a JOIN waiting w USING (email_id, n) WHERE w.pending IN (SELECT id FROM claimed)
), held AS (
    -- another folder still holds this email_id (a copy, or a move not seen at its
    -- source yet): the add waits for that copy's removal
    INSERT INTO move_pending (account_id, email_id, side, folder_id, uid, message, payload)
    SELECT $1, a.email_id, 'added', $2, a.uid, a.id, jsonb_build_object('message', a.id, 'uid', a.uid)
    FROM arrived a
    WHERE NOT EXISTS (SELECT 1 FROM moved m WHERE m.id = a.id)
      AND EXISTS (SELECT 1 FROM messages o WHERE o.account_id = $1 AND o.email_id = a.email_id
                                            AND o.folder_id <> $2)
    RETURNING message
), ev AS (
    INSERT INTO events (account_id, folder_id, kind, payload)
    SELECT $1, $2, CASE WHEN inserted THEN 'message_added' ELSE 'message_changed' END,
           jsonb_build_object('message', id, 'uid', uid)
    FROM up WHERE $3 AND NOT EXISTS (SELECT 1 FROM moved m WHERE m.id = up.id)
                     AND NOT EXISTS (SELECT 1 FROM held h WHERE h.message = up.id)
    UNION ALL
    SELECT $1, $2, 'message_moved', {moved_payload} FROM moved m
), documents AS (
    -- the documents built by mailbridge (NULL: left to the server's function; see
    -- mailbridge.store.search_document)
    SELECT * FROM unnest(${uid_param}::bigint[], {documents}) AS d(uid, document)
), agreed AS (
    -- two of them (the longest) against the server's function: where they differ, the
    -- function builds every document of the batch
    SELECT coalesce(bool_and(d.document::tsvector = {checked_document}), true) AS same
    FROM (SELECT * FROM documents WHERE document IS NOT NULL ORDER BY length(document) DESC LIMIT 2) d
    JOIN up c USING (uid)
), indexed AS (
    -- a new row's search document, written with it (see mailbridge.store.search)
    INSERT INTO message_search (message_id, account_id, document)
    SELECT up.id, $1, CASE WHEN d.document IS NOT NULL AND (SELECT same FROM agreed) THEN d.document::tsvector
                           ELSE {document} END
    FROM up LEFT JOIN documents d USING (uid) WHERE up.inserted
    ON CONFLICT (message_id) DO UPDATE SET document = EXCLUDED.document
), queued AS (
    -- a changed row's document is rebuilt by the indexer (see mailbridge.store.search)
    INSERT INTO search_pending (message_id) SELECT id FROM up WHERE NOT inserted ON CONFLICT DO NOTHING
){folder_cte}
SELECT count(*) FILTER (WHERE inserted) AS added, count(*) FILTER (WHERE NOT inserted) AS changed,
       {folder_value} AS folder_value, (SELECT count(*) FROM target) AS folder_found,
       (SELECT same FROM agreed) AS documents_agreed
FROM up
""".format(
    arrays=", ".join(_source(i, t) for i, t in enumerate(_TYPES)),
    names=", ".join(COLUMNS),
    columns=", ".join(COLUMNS),
    values=", ".join(f"{c}::text[]" if c in _ARRAY_COLUMNS else c for c in COLUMNS),
    document=document_of("up"),
    checked_document=document_of("c"),
    uid_param=_PARAMS + 1,
    documents=_source(len(COLUMNS), "text"),
    folder_cte="{folder_cte}",
    folder_value="{folder_value}",
    moved_payload=MOVED_PAYLOAD,
)
_ADDED = "(SELECT count(*) FROM up WHERE inserted)"


@dataclass(frozen=True, slots=True)
class FolderUpdate:
    """What a batch's statement also sets on its folder row, so a sync cursor commits with
    the rows it covers (None: left as it is)."""

    synced_high_uid: int | None = None
    initial_low_uid: int | None = None
    initial_sync_complete: bool | None = None
    last_repair_at: datetime | None = None
    count_added: bool = False  # add the rows the batch inserts to message_count

    def assignments(self) -> tuple[tuple[str, object], ...]:
        """(column, value) of each column set to a value."""
        return tuple((column, value) for column, value in (
            ("synced_high_uid", self.synced_high_uid), ("initial_low_uid", self.initial_low_uid),
            ("initial_sync_complete", self.initial_sync_complete), ("last_repair_at", self.last_repair_at),
        ) if value is not None)


@dataclass(frozen=True, slots=True)
class Written:
    """What one batch's statement did."""

    added: int
    changed: int
    message_count: int | None = None  # the folder's, after a FolderUpdate


_STATEMENTS: dict[tuple[tuple[str, ...], bool], str] = {}


def _statement(columns: tuple[str, ...], count_added: bool) -> str:
    """The upsert statement that also sets `columns` of the folder row (each from one
    parameter after the batch's), and adds the inserted rows to its message_count when
    `count_added`; no folder update when neither."""
    key = (columns, count_added)
    sql = _STATEMENTS.get(key)
    if sql is None:
        sets = [f"{column} = ${_FOLDER_PARAMS + 1 + i}" for i, column in enumerate(columns)]
        if count_added:
            sets.append(f"message_count = message_count + {_ADDED}")
        if sets:
            sql = _UPSERT.format(
                # the target row, so `target` (and its lock) comes first: a row this
                # statement had updated already would be skipped by FOR KEY SHARE
                folder_cte=(f", folder AS (\n    UPDATE folders SET {', '.join(sets)} "
                            "WHERE id = (SELECT id FROM target) RETURNING message_count\n)"),
                folder_value="(SELECT message_count FROM folder)")
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
# the first two; `_long_markers` when a batch holds every one of them)
_SEPARATORS = "\x1f\x1e\x1d\x1c" + "".join(chr(c) for c in range(0xE000, 0xF900))


def _long_markers(blob: str) -> tuple[str, str]:
    """A separator and a NULL marker of several characters, neither in `blob`.

    Each is one character then another repeated: its first character occurs nowhere else
    in it, so `string_to_array` cannot find it straddling a value's end and the real
    separator after it.  Some length is always free (longer than `blob` if need be)."""
    for length in range(2, len(blob) + 3):
        found = []
        for first, rest in zip(_SEPARATORS, _SEPARATORS[1:]):
            marker = first + rest * (length - 1)
            if marker not in blob:
                found.append(marker)
                if len(found) == 2:
                    return found[0], found[1]
    raise AssertionError("a marker longer than the blob is never in it")  # pragma: no cover


def search_documents(metas: Sequence[MessageMeta]) -> list[str | None]:
    """The search documents `upsert` sends for `metas`: each one's
    `search_document.document_literal` (None: the statement has the server build it)."""
    return [document_literal(m.subject, m.from_name, m.from_email, m.to_emails, m.cc_emails) for m in metas]


def _columns(metas: Sequence[MessageMeta], documents: list[str | None] | None = None) -> list[Any]:
    """The batch's parameters after the first three: separator, NULL marker, then one per
    column in COLUMNS order, then the rows' search documents where
    `search_document.document_literal` builds them (the statement has the server build the
    others).  Numbers and dates go as arrays; each text column (and each
    array column, as one array literal per row) goes as a single string, its values each
    followed by the separator and NULL as the marker, which `string_to_array` splits in
    the statement: asyncpg's per-element array encoding cost more than the parsing."""
    columns: list[Any] = [
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
        # the server's id, else the derived one (mailbridge.sync.identity)
        [m.email_id or derive_email_id(m.message_id, m.internal_date, m.size_bytes) for m in metas],
        [m.thread_id for m in metas],
        [None if m.labels is None else _flags_literal(m.labels) for m in metas],
        search_documents(metas) if documents is None else documents,
    ]
    texts = [columns[i] for i in _TEXT_PARAMS]
    blob = "".join(["".join(filter(None, values)) for values in texts])
    free = list(islice((c for c in _SEPARATORS if c not in blob), 2))
    if len(free) == 2:
        sep, null = free
    else:  # the values hold nearly every candidate (one hostile header can)
        sep, null = _long_markers(blob.replace("\x00", "") if "\x00" in blob else blob)
    for i in _TEXT_PARAMS:
        values = columns[i]
        if None in values:
            values = [null if v is None else v for v in values]
        joined = sep.join(values) + sep if values else ""
        columns[i] = joined.replace("\x00", "") if "\x00" in joined else joined  # Postgres text holds no NUL
    return [sep, null, *columns]


@dataclass(frozen=True, slots=True)
class EncodedRows:
    """A batch's messages with the parameters `upsert` sends for them (`encode_rows`):
    built ahead of the write, so a pipeline encodes the next batch while the database
    writes this one."""

    metas: Sequence[MessageMeta]
    params: list[Any]


def encode_rows(metas: Sequence[MessageMeta], documents: list[str | None] | None = None) -> EncodedRows:
    """`metas` with their statement parameters, for `upsert`; `documents` are their
    `search_documents` when already built (a caller that spreads that work out)."""
    if documents is not None and len(documents) != len(metas):
        raise ValueError(f"{len(documents)} search documents for {len(metas)} messages")
    return EncodedRows(metas, _columns(metas, documents))


def rejected_data(exc: BaseException) -> bool:
    """Whether `exc` says Postgres (or the driver encoding the parameters) refused a batch
    for its values, not for the connection or the schema: writing fewer rows may succeed."""
    return isinstance(exc, DatabaseDataError)


async def upsert(tx: Db, account_id: int, folder_id: int, rows: Sequence[MessageMeta] | EncodedRows, *,
                 emit_events: bool, folder: FolderUpdate | None = None) -> Written:
    """Insert or update `rows` (by folder and UID), write the search documents of the
    rows it inserts and queue those of the rows it changes for the indexer (see
    `mailbridge.store.search`) and, with `emit_events`, append their events.

    Raises `FolderRemoved` (writing nothing) when the folder row is gone.

    With `folder`, the same statement also updates the folder row as it says, so a sync
    cursor commits with the rows it covers even outside a transaction (`tx` may then be
    the pool: one round trip); `Written.message_count` is then the folder's new count.
    `rows` are the messages, or the messages with their parameters (`encode_rows`, so
    the encoding can be done ahead of the write).
    """
    metas, params = (rows.metas, rows.params) if isinstance(rows, EncodedRows) else (rows, None)
    assignments = folder.assignments() if folder is not None else ()
    count_added = folder is not None and folder.count_added
    if not metas and not assignments and not count_added:
        return Written(0, 0)
    row = await tx.fetchrow(_statement(tuple(c for c, _ in assignments), count_added),
                            account_id, folder_id, emit_events, *(_columns(metas) if params is None else params),
                            *(v for _, v in assignments))
    assert row is not None  # an aggregate: always one row
    if not row["folder_found"]:
        raise FolderRemoved(f"folder {folder_id} of account {account_id} was removed (with its account?); "
                            "nothing written")
    if row["documents_agreed"] is False:
        _documents_disagree()
    count = row["folder_value"]
    return Written(int(row["added"]), int(row["changed"]), None if count is None else int(count))


@functools.cache
def _documents_disagree() -> None:
    """Say once per process that the server's search documents differ from ours."""
    log.warning("the search documents mailbridge builds differ from this Postgres server's "
                "(is its 'simple' text search configuration altered?); the server builds them instead, "
                "at some cost to the speed of initial syncs")


async def remove_all(tx: Tx, folder_id: int) -> int:
    """Delete every row of a folder (its UIDs are void); returns how many."""
    return int(await tx.fetchval(
        "WITH d AS (DELETE FROM messages WHERE folder_id = $1 RETURNING 1) SELECT count(*) FROM d", folder_id))


async def update_flags(tx: Db, account_id: int, folder_id: int, updates: Iterable[FlagUpdate], *,
                       emit_events: bool = True) -> int:
    """Set the flags (and, where an update carries them, Gmail's labels) of known UIDs
    where they differ; returns how many changed.  An update without labels (None: the
    FETCH did not carry them) keeps the stored ones.  Each change's `message_changed`
    event holds the flags and the labels."""
    updates = list(updates)
    if not updates:
        return 0
    uids = [u.uid for u in updates]
    flags = ["\x1f".join(u.flags) for u in updates]
    modseqs = [u.modseq for u in updates]
    labels = [None if u.labels is None else _flags_literal(u.labels) for u in updates]
    return int(await tx.fetchval(
        """WITH src AS (
               SELECT uid, coalesce(string_to_array(nullif(flags, ''), E'\\x1f'), '{}') AS flags, modseq,
                      labels::text[] AS labels
               FROM unnest($3::bigint[], $4::text[], $5::bigint[], $7::text[]) AS s(uid, flags, modseq, labels)
           ), up AS (
               UPDATE messages m
               SET flags = src.flags, labels = coalesce(src.labels, m.labels),
                   modseq = coalesce(src.modseq, m.modseq), updated_at = now()
               FROM src
               WHERE m.folder_id = $2 AND m.uid = src.uid
                 AND (m.flags, m.labels) IS DISTINCT FROM (src.flags, coalesce(src.labels, m.labels))
               RETURNING m.id, m.uid, m.flags, m.labels
           ), ev AS (
               INSERT INTO events (account_id, folder_id, kind, payload)
               SELECT $1, $2, 'message_changed',
                      jsonb_strip_nulls(jsonb_build_object('message', id, 'uid', uid, 'flags', flags,
                                                           'labels', labels))
               FROM up WHERE $6
           )
           SELECT count(*) FROM up""",
        account_id, folder_id, uids, flags, modseqs, emit_events, labels,
    ))


async def remove_uids(tx: Db, account_id: int, folder_id: int, uids: Sequence[int], *,
                      emit_events: bool = True) -> int:
    """Delete the rows of `uids` (expunged on the server); returns how many.

    With `emit_events`, a row without an email_id gets its `message_removed` event now;
    one with an email_id is a move's source when a held arrival of it in another folder
    waits (one `message_moved`), else its removal is held for the move window (see
    `mailbridge.store.moves`)."""
    if not uids:
        return 0
    return int(await tx.fetchval(
        _REMOVE, account_id, folder_id, list(uids), emit_events))


_REMOVE = """
    WITH gone AS (
        DELETE FROM messages WHERE folder_id = $2 AND uid = ANY($3::bigint[])
        RETURNING id, uid, message_id, email_id
    ), left_ AS (
        SELECT id, uid, message_id, email_id, row_number() OVER (PARTITION BY email_id ORDER BY uid) AS n
        FROM gone WHERE $4 AND email_id IS NOT NULL
    ), waiting AS (
        SELECT p.id AS pending, p.email_id, p.folder_id, p.uid, p.message,
               row_number() OVER (PARTITION BY p.email_id ORDER BY p.id) AS n
        FROM move_pending p
        WHERE p.account_id = $1 AND p.side = 'added' AND p.folder_id <> $2
          AND p.email_id IN (SELECT email_id FROM left_)
    ), claimed AS (
        DELETE FROM move_pending WHERE id IN (SELECT w.pending FROM left_ l JOIN waiting w USING (email_id, n))
        RETURNING id
    ), moved AS (
        SELECT w.message AS id, w.uid, l.email_id, $2::bigint AS from_folder, l.uid AS from_uid,
               l.id AS from_message, w.folder_id AS to_folder
        FROM left_ l JOIN waiting w USING (email_id, n) WHERE w.pending IN (SELECT id FROM claimed)
    ), held AS (
        INSERT INTO move_pending (account_id, email_id, side, folder_id, uid, message, payload)
        SELECT $1, l.email_id, 'removed', $2, l.uid, l.id,
               jsonb_build_object('message', l.id, 'uid', l.uid, 'message_id', l.message_id)
        FROM left_ l WHERE NOT EXISTS (SELECT 1 FROM moved m WHERE m.from_message = l.id)
    ), ev AS (
        INSERT INTO events (account_id, folder_id, kind, payload)
        SELECT $1, $2, 'message_removed', jsonb_build_object('message', id, 'uid', uid, 'message_id', message_id)
        FROM gone WHERE $4 AND email_id IS NULL
        UNION ALL
        SELECT $1, m.to_folder, 'message_moved', {moved_payload} FROM moved m
    )
    SELECT count(*) FROM gone""".format(moved_payload=MOVED_PAYLOAD)


# --- reads ------------------------------------------------------------------------------


async def uids_between(tx: Db, folder_id: int, low: int, high: int) -> list[int]:
    """Mirrored UIDs of a folder in [low, high], ascending."""
    rows = await tx.fetch("SELECT uid FROM messages WHERE folder_id = $1 AND uid BETWEEN $2 AND $3 ORDER BY uid",
                          folder_id, low, high)
    return [r["uid"] for r in rows]


async def count_between(db: Db, folder_id: int, low: int, high: int) -> int:
    """How many of a folder's UIDs in [low, high] are mirrored."""
    return int(await db.fetchval(
        "SELECT count(*) FROM messages WHERE folder_id = $1 AND uid BETWEEN $2 AND $3", folder_id, low, high))


async def count_in_folder(db: Db, folder_id: int) -> int:
    """How many rows a folder has."""
    return int(await db.fetchval("SELECT count(*) FROM messages WHERE folder_id = $1", folder_id))


async def max_uid(db: Db, folder_id: int) -> int | None:
    """The highest mirrored UID of a folder; None when it has no rows."""
    return await db.fetchval("SELECT max(uid) FROM messages WHERE folder_id = $1", folder_id)


async def unreadable_uids(db: Db, folder_id: int, limit: int) -> list[int]:
    """Up to `limit` UIDs, ascending, of rows stored as placeholders (their FETCH response
    could not be read: no size)."""
    rows = await db.fetch(
        "SELECT uid FROM messages WHERE folder_id = $1 AND size_bytes IS NULL ORDER BY uid LIMIT $2",
        folder_id, limit)
    return [r["uid"] for r in rows]


async def flags_between(db: Db, folder_id: int, low: int, high: int) -> dict[int, tuple[str, ...]]:
    """Mirrored flags of a folder's UIDs in [low, high]."""
    rows = await db.fetch("SELECT uid, flags FROM messages WHERE folder_id = $1 AND uid BETWEEN $2 AND $3",
                          folder_id, low, high)
    return {r["uid"]: tuple(r["flags"]) for r in rows}


async def labels_between(db: Db, folder_id: int, low: int, high: int) -> dict[int, tuple[str, ...] | None]:
    """Mirrored Gmail labels of a folder's UIDs in [low, high] (None: not known)."""
    rows = await db.fetch("SELECT uid, labels FROM messages WHERE folder_id = $1 AND uid BETWEEN $2 AND $3",
                          folder_id, low, high)
    return {r["uid"]: None if r["labels"] is None else tuple(r["labels"]) for r in rows}


async def flags_of(db: Db, folder_id: int, uids: Sequence[int]) -> dict[int, tuple[str, ...]]:
    """Mirrored flags of those of `uids` a folder has."""
    rows = await db.fetch("SELECT uid, flags FROM messages WHERE folder_id = $1 AND uid = ANY($2::bigint[])",
                          folder_id, list(uids))
    return {r["uid"]: tuple(r["flags"]) for r in rows}
