"""SQL for webhooks: the `webhooks` table (with each webhook's delivery state) and the
events it reads as its outbox.

Order and completeness.  A webhook's cursor is a position in (xid, id) order of the
events table, `xid` being the transaction that wrote the event.  `horizon` is an xid
below which every transaction of this database has ended: their events are all visible,
and no event will ever appear there again.  Delivery takes only events below it, in that
order, so it never steps over an event whose transaction was still running (an id
handed out earlier but committed later), and per account (one actor writes an account's
events, one transaction after the other) the order is the order of the ids.

The secret goes in and out only as ciphertext; nothing here returns it in a public shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

from mailbridge.errors import DatabaseError, WebhookNotFound
from mailbridge.store.api import MESSAGE_COLUMNS
from mailbridge.store.db import Db, Row, Tx

_STATE = ("id, url, event_types, enabled, created_at, cursor_xid::text AS cursor_xid, cursor_id, last_event_id, "
          "delivered, attempts, failures, failing_since, next_attempt_at, last_status, last_error, "
          "last_attempt_at, last_delivered_at, parked, parked_at, owner")
_XID_MODULO = 2**32


@dataclass(frozen=True, slots=True)
class Webhook:
    """One webhook with its delivery state (never its secret)."""

    id: int
    url: str
    event_types: tuple[str, ...] | None
    enabled: bool
    created_at: datetime
    cursor_xid: int
    cursor_id: int
    last_event_id: int | None
    delivered: int
    attempts: int
    failures: int
    failing_since: datetime | None
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    last_attempt_at: datetime | None
    last_delivered_at: datetime | None
    parked: bool
    parked_at: datetime | None
    owner: str | None

    @classmethod
    def from_row(cls, row: Row) -> "Webhook":
        data = dict(row)
        data["event_types"] = tuple(data["event_types"]) if data["event_types"] is not None else None
        data["cursor_xid"] = int(data["cursor_xid"])
        return cls(**data)

    @property
    def state(self) -> str:
        """disabled, parked, failing (retrying) or ok."""
        if not self.enabled:
            return "disabled"
        if self.parked:
            return "parked"
        return "failing" if self.attempts else "ok"

    def to_json(self, lag: int | None = None) -> dict[str, Any]:
        """The public shape (GET /webhooks/{id}, `webhooks list --json`); no secret."""
        def when(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        out: dict[str, Any] = {
            "id": self.id, "url": self.url,
            "events": list(self.event_types) if self.event_types is not None else None,
            "enabled": self.enabled, "created_at": when(self.created_at), "state": self.state,
            "last_event_id": self.last_event_id, "delivered": self.delivered,
            "attempts": self.attempts, "failures": self.failures, "failing_since": when(self.failing_since),
            "next_attempt_at": when(self.next_attempt_at), "last_status": self.last_status,
            "last_error": self.last_error, "last_attempt_at": when(self.last_attempt_at),
            "last_delivered_at": when(self.last_delivered_at), "parked": self.parked,
            "parked_at": when(self.parked_at), "owner": self.owner,
        }
        if lag is not None:
            out["lag"] = lag
        return out


# --- the table ----------------------------------------------------------------------------


async def create(db: Db, url: str, secret_encrypted: bytes, event_types: Sequence[str] | None) -> int:
    """Add a webhook; it receives the events committed from now on.  Returns its id."""
    return int(await db.fetchval(
        "INSERT INTO webhooks (url, secret_encrypted, event_types) VALUES ($1, $2, $3::text[]) RETURNING id",
        url, secret_encrypted, list(event_types) if event_types is not None else None))


async def get(db: Db, webhook_id: int) -> Webhook:
    row = await db.fetchrow(f"SELECT {_STATE} FROM webhooks WHERE id = $1", webhook_id)
    if row is None:
        raise WebhookNotFound(f"no webhook with id {webhook_id}: see `mailbridge webhooks list`")
    return Webhook.from_row(row)


async def find(db: Db, webhook_id: int) -> Webhook | None:
    row = await db.fetchrow(f"SELECT {_STATE} FROM webhooks WHERE id = $1", webhook_id)
    return Webhook.from_row(row) if row is not None else None


async def list_all(db: Db) -> list[Webhook]:
    return [Webhook.from_row(r) for r in await db.fetch(f"SELECT {_STATE} FROM webhooks ORDER BY id")]


async def secret_of(db: Db, webhook_id: int) -> bytes:
    value = await db.fetchval("SELECT secret_encrypted FROM webhooks WHERE id = $1", webhook_id)
    if value is None:
        raise WebhookNotFound(f"no webhook with id {webhook_id}: see `mailbridge webhooks list`")
    return bytes(value)


async def delete(db: Db, webhook_id: int) -> None:
    if await db.fetchval("DELETE FROM webhooks WHERE id = $1 RETURNING id", webhook_id) is None:
        raise WebhookNotFound(f"no webhook with id {webhook_id}: see `mailbridge webhooks list`")


async def deliverable_ids(db: Db) -> list[int]:
    """Ids of the enabled webhooks, parked ones included (their worker waits for a resume)."""
    return [int(r["id"]) for r in await db.fetch("SELECT id FROM webhooks WHERE enabled ORDER BY id")]


async def resume(db: Db, webhook_id: int) -> None:
    """Unpark: the event due is tried again at once, with a fresh retry window."""
    done = await db.fetchval(
        """UPDATE webhooks SET parked = false, parked_at = NULL, attempts = 0, failing_since = NULL,
                  next_attempt_at = NULL, enabled = true WHERE id = $1 RETURNING id""", webhook_id)
    if done is None:
        raise WebhookNotFound(f"no webhook with id {webhook_id}: see `mailbridge webhooks list`")


async def set_owner(db: Db, webhook_id: int, owner: str | None, *, only_if: str | None = None) -> None:
    """Record the process delivering the webhook (None: none); with `only_if`, only when
    that process is the one recorded."""
    if only_if is None:
        await db.execute("UPDATE webhooks SET owner = $2 WHERE id = $1", webhook_id, owner)
    else:
        await db.execute("UPDATE webhooks SET owner = $2 WHERE id = $1 AND owner = $3", webhook_id, owner, only_if)


async def all_ciphertexts(tx: Tx) -> list[tuple[int, bytes]]:
    """Every webhook secret (ciphertext), locked for a key rotation."""
    rows = await tx.fetch("SELECT id, secret_encrypted FROM webhooks ORDER BY id FOR UPDATE")
    return [(int(r["id"]), bytes(r["secret_encrypted"])) for r in rows]


async def set_ciphertext(tx: Tx, webhook_id: int, token: bytes) -> None:
    await tx.execute("UPDATE webhooks SET secret_encrypted = $2 WHERE id = $1", webhook_id, token)


# --- the outbox ------------------------------------------------------------------------------


def _snapshot(text: str) -> tuple[int, int, list[int]]:
    """(xmin, xmax, running xids) of a `pg_snapshot` in its text form `xmin:xmax:xip,...`."""
    xmin, xmax, xip = text.split(":")
    return int(xmin), int(xmax), [int(x) for x in xip.split(",") if x]


async def horizon(db: Db) -> int:
    """An xid (xid8, as an int) below which every transaction that could write events in
    this database has ended.  Two statements, in this order: a transaction running at the
    snapshot shows in the second statement's list unless it has ended; one that got its
    xid later is at or above the snapshot's xmax.  Transactions of other databases on the
    same server do not hold it back (unless pg_stat_activity cannot be read: then the
    server-wide xmin)."""
    xmin, xmax, running = _snapshot(str(await db.fetchval("SELECT pg_current_snapshot()::text")))
    if not running:
        return xmax
    try:
        rows = await db.fetch(
            """SELECT backend_xid::text AS xid FROM pg_stat_activity
               WHERE datname = current_database() AND backend_xid IS NOT NULL
               UNION ALL
               SELECT transaction::text FROM pg_prepared_xacts WHERE database = current_database()""")
    except DatabaseError:
        return xmin
    mine = {int(r["xid"]) for r in rows}
    return min([x for x in running if x % _XID_MODULO in mine] + [xmax])


_DUE = """SELECT id, xid::text AS xid, account_id, folder_id, kind, payload, created_at FROM events
          WHERE (xid, id) > ($1::text::xid8, $2::bigint) AND xid < $3::text::xid8
            AND ($4::text[] IS NULL OR kind = ANY ($4::text[]))
          ORDER BY xid, id LIMIT {limit}"""


async def due_events(db: Db, hook: Webhook, below: int, limit: int) -> list[dict[str, Any]]:
    """The next events for `hook` after its cursor and below the horizon `below`, in
    delivery order ((xid, id)); each a dict with `xid` as an int."""
    rows = await db.fetch(_DUE.format(limit=int(limit)), str(hook.cursor_xid), hook.cursor_id, str(below),
                          list(hook.event_types) if hook.event_types is not None else None)
    out = []
    for r in rows:
        data = dict(r)
        data["xid"] = int(data["xid"])
        out.append(data)
    return out


async def lag(db: Db, hook: Webhook) -> int:
    """Events committed (or still being written) that `hook` has not delivered yet."""
    return int(await db.fetchval(
        """SELECT count(*) FROM events WHERE (xid, id) > ($1::text::xid8, $2::bigint)
               AND ($3::text[] IS NULL OR kind = ANY ($3::text[]))""",
        str(hook.cursor_xid), hook.cursor_id, list(hook.event_types) if hook.event_types is not None else None))


async def messages_by_id(db: Db, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The API's message rows (`mailbridge.store.api.MESSAGE_COLUMNS`) of `ids` still mirrored."""
    if not ids:
        return {}
    rows = await db.fetch(f"SELECT {MESSAGE_COLUMNS} FROM messages m JOIN folders f ON f.id = m.folder_id "
                          "WHERE m.id = ANY ($1::bigint[])", sorted(set(ids)))
    return {int(r["id"]): dict(r) for r in rows}


async def folder_names(db: Db, ids: Sequence[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = await db.fetch("SELECT id, name FROM folders WHERE id = ANY ($1::bigint[])", sorted(set(ids)))
    return {int(r["id"]): str(r["name"]) for r in rows}


# --- delivery state (each a single statement: it commits with the progress it records) ---------


async def delivered(db: Db, webhook_id: int, xid: int, event_id: int, status: int, *, count: int = 1) -> bool:
    """Record that the receiver answered `status` (2xx) to event (`xid`, `event_id`), the
    last of `count` delivered in a row: the cursor moves past it, the failure streak ends.  Never moves the cursor back (a
    process that lost the webhook's lock mid-delivery writes nothing).  False when the
    webhook is gone or was already past it."""
    done = await db.fetchval(
        """UPDATE webhooks SET cursor_xid = $2::text::xid8, cursor_id = $3, last_event_id = $3,
                  delivered = delivered + $5, attempts = 0, failing_since = NULL, next_attempt_at = NULL,
                  last_status = $4, last_error = NULL, last_attempt_at = now(), last_delivered_at = now()
           WHERE id = $1 AND (cursor_xid, cursor_id) < ($2::text::xid8, $3::bigint) RETURNING id""",
        webhook_id, str(xid), event_id, status, count)
    return done is not None


async def skip_to(db: Db, webhook_id: int, below: int) -> None:
    """Nothing for the webhook below the horizon `below`: move its cursor there (so the
    next look starts at the horizon, and its lag counts from there)."""
    await db.execute(
        """UPDATE webhooks SET cursor_xid = $2::text::xid8, cursor_id = 0
           WHERE id = $1 AND (cursor_xid, cursor_id) < ($2::text::xid8, 0::bigint)""", webhook_id, str(below))


async def failed(db: Db, webhook_id: int, status: int | None, error: str, *,
                 retry_in: float | None) -> Webhook | None:
    """Record a failed attempt; `retry_in` seconds until the next, or None: park it."""
    row = await db.fetchrow(
        f"""UPDATE webhooks SET attempts = attempts + 1, failures = failures + 1,
                   failing_since = coalesce(failing_since, now()),
                   next_attempt_at = CASE WHEN $4::float8 IS NULL THEN NULL
                                          ELSE now() + make_interval(secs => $4::float8) END,
                   parked = $4::float8 IS NULL, parked_at = CASE WHEN $4::float8 IS NULL THEN now() END,
                   last_status = $2, last_error = $3, last_attempt_at = now()
            WHERE id = $1 RETURNING {_STATE}""", webhook_id, status, error, retry_in)
    return Webhook.from_row(row) if row is not None else None


async def now(db: Db) -> datetime:
    """The database's clock (retry times are stored by it)."""
    value: datetime = await db.fetchval("SELECT now()")
    return value


__all__ = ["Webhook", "all_ciphertexts", "create", "delete", "deliverable_ids", "delivered", "due_events",
           "failed", "find", "folder_names", "get", "horizon", "lag", "list_all", "messages_by_id", "now",
           "resume", "secret_of", "set_ciphertext", "set_owner", "skip_to"]
