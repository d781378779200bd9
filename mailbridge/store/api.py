"""SQL behind the HTTP API: account edits, folder and message listings, threads, the
event log, and dropping a message the server no longer has.

Every function takes the trio-facing `Database` (or a connection in a transaction) and
returns plain dicts/rows; errors are `mailbridge.errors` types.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailbridge.errors import AccountNotFound, InvalidInput, UniqueViolation
from mailbridge.store.accounts import PUBLIC_COLUMNS, Account
from mailbridge.store.db import Db
from mailbridge.store.search import matching_ids_sql

MESSAGE_COLUMNS = (
    "m.id, m.account_id, m.folder_id, f.name AS folder, m.uid, m.message_id, m.subject, m.from_name, "
    "m.from_email, m.to_emails, m.cc_emails, m.sent_at, m.internal_date, m.size_bytes, m.flags, "
    "m.in_reply_to, m.references_header, m.provider_thread_id, m.email_id, m.labels"
)

# columns PATCH /accounts/{id} may change (API field → column)
EDITABLE = {
    "email": "email",
    "host": "imap_host",
    "port": "imap_port",
    "tls": "imap_tls",
    "username": "imap_username",
    "verify_certificate": "verify_certificate",
    "enabled": "enabled",
    "excluded_folders": "excluded_folders",
}


async def ping(db: Db) -> bool:
    return await db.fetchval("SELECT 1") == 1


async def account_exists(db: Db, account_id: int) -> bool:
    return bool(await db.fetchval("SELECT EXISTS (SELECT 1 FROM accounts WHERE id = $1)", account_id))


async def update_account(db: Db, account_id: int, changes: dict[str, Any], *,
                         password_encrypted: bytes | None = None) -> Account:
    """Apply `changes` (API field names, see EDITABLE) and, when given, a new password.

    A new password also bumps `credentials_changed_at`, which the accounts trigger turns
    into a NOTIFY: the supervisor replaces the actor (waking a parked one).
    """
    sets: list[str] = []
    args: list[Any] = [account_id]
    for field, value in changes.items():
        column = EDITABLE[field]
        args.append(list(value) if isinstance(value, (tuple, list)) else value)
        sets.append(f"{column} = ${len(args)}")
    if password_encrypted is not None:
        args.append(password_encrypted)
        sets.append(f"password_encrypted = ${len(args)}")
        sets.append("credentials_changed_at = clock_timestamp()")
    sets.append("updated_at = now()")
    try:
        row = await db.fetchrow(
            f"UPDATE accounts SET {', '.join(sets)} WHERE id = $1 RETURNING {PUBLIC_COLUMNS}", *args)
    except UniqueViolation:
        raise InvalidInput("another account already has this email, host and username",
                           {"email": "already exists for this host and username"}) from None
    if row is None:
        raise AccountNotFound(f"no account with id {account_id}")
    return Account.from_row(row)


async def list_folders(db: Db, account_id: int) -> list[dict[str, Any]]:
    """The account's folders with their counts; a Gmail label view (``gmail_view``, see
    `mailbridge.sync.discover`) counts what it shows: All Mail's rows with its label (or,
    for Starred, the flag), all views counted in one pass over All Mail."""
    rows = await db.fetch(
        """WITH all_mail AS (
               SELECT id FROM folders
               WHERE account_id = $1 AND special_use = '\\All' AND gmail_view IS NULL
                 AND EXISTS (SELECT 1 FROM folders v WHERE v.account_id = $1 AND v.gmail_view IS NOT NULL)
           ), shown AS (
               SELECT l.label AS view, count(*) AS messages,
                      count(*) FILTER (WHERE NOT ('\\Seen' = ANY (m.flags))) AS unread
               FROM messages m CROSS JOIN LATERAL unnest(m.labels) AS l(label)
               WHERE m.folder_id IN (SELECT id FROM all_mail) GROUP BY l.label
               UNION ALL
               SELECT '\\Flagged', count(*), count(*) FILTER (WHERE NOT ('\\Seen' = ANY (m.flags)))
               FROM messages m WHERE m.folder_id IN (SELECT id FROM all_mail) AND '\\Flagged' = ANY (m.flags)
           )
           SELECT f.id, f.name, f.delimiter, f.special_use, f.uidvalidity, f.excluded, f.is_priority,
                  f.initial_sync_complete, f.last_synced_at, f.server_message_count, f.parked,
                  f.parked_reason, f.exists_on_server, f.gmail_view,
                  coalesce(v.messages, c.messages, 0) AS messages, coalesce(v.unread, c.unread, 0) AS unread
           FROM folders f
           LEFT JOIN LATERAL (
               SELECT count(*) AS messages,
                      count(*) FILTER (WHERE NOT ('\\Seen' = ANY (m.flags))) AS unread
               FROM messages m WHERE m.folder_id = f.id) c ON f.gmail_view IS NULL
           LEFT JOIN shown v ON v.view = f.gmail_view
           WHERE f.account_id = $1 ORDER BY f.name""", account_id)
    return [dict(r) for r in rows]


@dataclass(frozen=True, slots=True)
class MessageFilter:
    """Filters of GET /accounts/{id}/messages (None: not filtered)."""

    folder: str | None = None
    unread: bool | None = None
    flagged: bool | None = None
    since: datetime | None = None   # internal_date >= since
    until: datetime | None = None   # internal_date < until
    sender: str | None = None       # substring of from_email or from_name (case-insensitive)
    q: str | None = None            # full-text query (websearch syntax)
    label: str | None = None        # carries this Gmail label (X-GM-LABELS)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def list_messages(db: Db, account_id: int, filters: MessageFilter, *, limit: int,
                        after: tuple[datetime | None, int] | None = None) -> list[dict[str, Any]]:
    """Up to `limit` messages, newest first by (internal_date DESC NULLS LAST, id DESC),
    strictly after the keyset position `after` (the last row of the previous page)."""
    where = ["m.account_id = $1"]
    args: list[Any] = [account_id]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if filters.folder is not None:
        view = await db.fetchval("SELECT gmail_view FROM folders WHERE account_id = $1 AND name = $2",
                                 account_id, filters.folder)
        if view is None:
            where.append(f"f.name = {arg(filters.folder)}")
        else:
            # a Gmail label folder: what Gmail shows there, from All Mail's rows (see
            # mailbridge.sync.discover): its label, or for Starred the flag
            where.append("f.special_use = '\\All' AND f.gmail_view IS NULL")
            if view == "\\Flagged":
                where.append("'\\Flagged' = ANY (m.flags)")
            else:
                where.append(f"{arg(view)} = ANY (m.labels)")
    if filters.label is not None:
        where.append(f"{arg(filters.label)} = ANY (m.labels)")
    if filters.unread is True:
        where.append("NOT ('\\Seen' = ANY (m.flags))")
    elif filters.unread is False:
        where.append("'\\Seen' = ANY (m.flags)")
    if filters.flagged is True:
        where.append("'\\Flagged' = ANY (m.flags)")
    elif filters.flagged is False:
        where.append("NOT ('\\Flagged' = ANY (m.flags))")
    if filters.since is not None:
        where.append(f"m.internal_date >= {arg(filters.since)}")
    if filters.until is not None:
        where.append(f"m.internal_date < {arg(filters.until)}")
    if filters.sender:
        pattern = arg("%" + _like_escape(filters.sender) + "%")
        where.append(f"(m.from_email ILIKE {pattern} OR m.from_name ILIKE {pattern})")
    if filters.q:
        where.append(f"m.id IN ({matching_ids_sql('$1', arg(filters.q))})")
    if after is not None:
        date, last_id = after
        if date is None:
            where.append(f"(m.internal_date IS NULL AND m.id < {arg(last_id)})")
        else:
            d, i = arg(date), arg(last_id)
            where.append(f"(m.internal_date < {d} OR (m.internal_date = {d} AND m.id < {i}) "
                         "OR m.internal_date IS NULL)")
    rows = await db.fetch(
        f"""SELECT {MESSAGE_COLUMNS} FROM messages m JOIN folders f ON f.id = m.folder_id
            WHERE {' AND '.join(where)}
            ORDER BY m.internal_date DESC NULLS LAST, m.id DESC
            LIMIT {int(limit)}""", *args)
    return [dict(r) for r in rows]


async def get_message(db: Db, message_id: int) -> dict[str, Any] | None:
    row = await db.fetchrow(
        f"""SELECT {MESSAGE_COLUMNS}, f.raw_name AS folder_raw_name, f.uidvalidity AS folder_uidvalidity
            FROM messages m JOIN folders f ON f.id = m.folder_id WHERE m.id = $1""", message_id)
    return dict(row) if row is not None else None


def message_json(row: dict[str, Any]) -> dict[str, Any]:
    """A message row (MESSAGE_COLUMNS) as the API shows it: `GET /messages/{id}`, the
    listings, and the `data` of a webhook's message event."""
    flags = list(row.get("flags") or [])
    return {
        "id": row["id"], "account_id": row["account_id"], "folder_id": row["folder_id"], "folder": row["folder"],
        "uid": row["uid"], "message_id": row["message_id"], "subject": row["subject"],
        "from_name": row["from_name"], "from_email": row["from_email"],
        "to_emails": list(row.get("to_emails") or []), "cc_emails": list(row.get("cc_emails") or []),
        "sent_at": row["sent_at"], "internal_date": row["internal_date"], "size_bytes": row["size_bytes"],
        "flags": flags, "unread": "\\Seen" not in flags, "flagged": "\\Flagged" in flags,
        "in_reply_to": row["in_reply_to"], "references": list(row.get("references_header") or []),
        "provider_thread_id": row["provider_thread_id"],
        "email_id": row.get("email_id"),
        "labels": None if row.get("labels") is None else list(row["labels"]),
    }


MAX_THREAD = 2000


async def thread_of(db: Db, account_id: int, message_id: int, *, max_rounds: int = 50) -> list[dict[str, Any]]:
    """Every message of the account linked to `message_id` through Message-ID,
    In-Reply-To and References (the transitive closure: the thread's connected
    component), oldest first.  Empty when the message is not in the account."""
    start = await db.fetchrow(
        f"SELECT {MESSAGE_COLUMNS} FROM messages m JOIN folders f ON f.id = m.folder_id "
        "WHERE m.id = $1 AND m.account_id = $2", message_id, account_id)
    if start is None:
        return []
    found: dict[int, dict[str, Any]] = {start["id"]: dict(start)}
    ids: set[str] = set()
    frontier = _links(found[start["id"]])
    for _ in range(max_rounds):
        frontier -= ids
        if not frontier or len(found) >= MAX_THREAD:
            break
        ids |= frontier
        rows = await db.fetch(
            f"""SELECT {MESSAGE_COLUMNS} FROM messages m JOIN folders f ON f.id = m.folder_id
                WHERE m.account_id = $1 AND NOT (m.id = ANY ($3::bigint[]))
                  AND (m.message_id = ANY ($2::text[]) OR m.in_reply_to = ANY ($2::text[])
                       OR m.references_header && $2::text[])
                LIMIT {MAX_THREAD}""", account_id, sorted(frontier), list(found))
        frontier = set()
        for r in rows:
            found[r["id"]] = dict(r)
            frontier |= _links(found[r["id"]])
    return sorted(found.values(), key=_order_key)


def _order_key(m: dict[str, Any]) -> tuple:
    when = m["sent_at"] or m["internal_date"]
    return (when is None, when.timestamp() if when is not None else 0.0, m["id"])


def _links(m: dict[str, Any]) -> set[str]:
    out = set(m.get("references_header") or ())
    for key in ("message_id", "in_reply_to"):
        if m.get(key):
            out.add(m[key])
    return out


async def remove_gone_message(db: Db, message_id: int, reason: str) -> bool:
    """Drop a message the server no longer has, with its `message_removed` event (held
    as a possible move's side when it has an email_id, see `mailbridge.store.moves`), in
    one transaction.  False when the row was already gone."""
    async with db.transaction() as tx:
        found = await tx.fetchrow("SELECT account_id, folder_id, uid, email_id FROM messages WHERE id = $1",
                                  message_id)
        if found is not None and found["email_id"] is not None:
            # perhaps moved away: its event is held like a visit's (mailbridge.store.moves)
            from mailbridge.store.messages import remove_uids
            return await remove_uids(tx, found["account_id"], found["folder_id"], [found["uid"]]) > 0
        row = await tx.fetchrow(
            "DELETE FROM messages WHERE id = $1 RETURNING id, account_id, folder_id, uid, message_id", message_id)
        if row is None:
            return False
        await tx.execute(
            """INSERT INTO events (account_id, folder_id, kind, payload)
               VALUES ($1, $2, 'message_removed',
                       jsonb_build_object('message', $3::bigint, 'uid', $4::bigint, 'message_id', $5::text,
                                          'reason', $6::text))""",
            row["account_id"], row["folder_id"], row["id"], row["uid"], row["message_id"], reason)
        return True


async def last_event_id(db: Db) -> int:
    return int(await db.fetchval("SELECT coalesce(max(id), 0) FROM events"))


async def events_after(db: Db, after_id: int, *, limit: int = 500,
                       account_id: int | None = None) -> list[dict[str, Any]]:
    """Events with id > after_id, oldest first."""
    if account_id is None:
        rows = await db.fetch(
            "SELECT id, account_id, folder_id, kind, payload, created_at FROM events WHERE id > $1 "
            f"ORDER BY id LIMIT {int(limit)}", after_id)
    else:
        rows = await db.fetch(
            "SELECT id, account_id, folder_id, kind, payload, created_at FROM events "
            f"WHERE id > $1 AND account_id = $2 ORDER BY id LIMIT {int(limit)}", after_id, account_id)
    return [dict(r) for r in rows]


__all__ = ["EDITABLE", "MessageFilter", "account_exists", "events_after", "get_message", "last_event_id",
           "list_folders", "list_messages", "message_json", "ping", "remove_gone_message", "thread_of", "update_account"]
